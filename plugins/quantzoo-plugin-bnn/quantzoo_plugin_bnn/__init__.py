"""quantzoo plugin: Binarized Neural Networks (Hubara, Courbariaux et al. 2016, arXiv:1602.02830)."""

from quantzoo import hookimpl

from .quantizer import BNNConfig, BNNQuantizer

__all__ = ["BNNConfig", "BNNQuantizer"]


@hookimpl
def register_quantizers(register):
    register(BNNQuantizer)
