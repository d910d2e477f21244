"""quantzoo plugin: GPTQ (Frantar, Ashkboos, Hoefler & Alistarh 2023, arXiv:2210.17323)."""

from quantzoo import hookimpl

from .quantizer import GPTQConfig, GPTQQuantizer

__all__ = ["GPTQConfig", "GPTQQuantizer"]


@hookimpl
def register_quantizers(register):
    register(GPTQQuantizer)
