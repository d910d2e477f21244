"""quantzoo plugin: LSQ as the paper defines it (Esser et al. 2020, arXiv:1902.08153)."""

from quantzoo import hookimpl

from .quantizer import LSQConfig, LSQQuantizer, LSQStep

__all__ = ["LSQConfig", "LSQQuantizer", "LSQStep"]


@hookimpl
def register_quantizers(register):
    register(LSQQuantizer)
