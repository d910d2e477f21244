"""quantzoo plugin: HQQ, half-quadratic quantization (Badri & Shaji 2023, Mobius Labs blog)."""

from quantzoo import hookimpl

from .quantizer import HQQConfig, HQQQuantizer, HQQWeight

__all__ = ["HQQConfig", "HQQQuantizer", "HQQWeight"]


@hookimpl
def register_quantizers(register):
    register(HQQQuantizer)
