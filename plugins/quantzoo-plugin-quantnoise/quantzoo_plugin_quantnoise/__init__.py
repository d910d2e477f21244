"""quantzoo plugin: Quant-Noise (Fan, Stock et al. 2021, arXiv:2004.07320), scalar intN and iPQ."""

from quantzoo import hookimpl

from .ipq import BlockDropWeight, IPQConfig, IPQQuantizer
from .scalar import ScalarNoiseConfig, ScalarNoiseQuantizer, ScalarNoiseWeight

__all__ = ["BlockDropWeight", "IPQConfig", "IPQQuantizer", "ScalarNoiseConfig", "ScalarNoiseQuantizer",
           "ScalarNoiseWeight"]


@hookimpl
def register_quantizers(register):
    register(ScalarNoiseQuantizer)
    register(IPQQuantizer)
