"""quantzoo plugin: data-free quantization (Nagel et al. 2019) — cross-layer equalization, high-bias
absorption and bias correction (analytic from BatchNorm statistics, or empirical)."""

from quantzoo import hookimpl

from .equalize import absorb_high_bias, cross_layer_equalize, equalization_scale, equalize_pair
from .links import Link, find_links
from .quantizer import BiasCorrectionConfig, BiasCorrectionQuantizer, DataFreeConfig, DFQQuantizer

__all__ = ["BiasCorrectionConfig", "BiasCorrectionQuantizer", "DFQQuantizer", "DataFreeConfig", "Link",
           "absorb_high_bias", "cross_layer_equalize", "equalization_scale", "equalize_pair", "find_links"]


@hookimpl
def register_quantizers(register):
    register(DFQQuantizer)
    register(BiasCorrectionQuantizer)
