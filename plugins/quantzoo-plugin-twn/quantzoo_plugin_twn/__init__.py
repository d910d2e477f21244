"""quantzoo plugin: Ternary Weight Networks (Li & Liu 2016, arXiv:1605.04711)."""

from quantzoo import hookimpl

from .quantizer import TernaryWeight, TWNConfig, TWNQuantizer

__all__ = ["TWNConfig", "TWNQuantizer", "TernaryWeight"]


@hookimpl
def register_quantizers(register):
    register(TWNQuantizer)
