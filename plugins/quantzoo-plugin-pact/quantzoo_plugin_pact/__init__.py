"""quantzoo plugin: PACT as the paper defines it (Choi et al. 2018, arXiv:1805.06085)."""

from quantzoo import hookimpl

from .quantizer import PACTClip, PACTConfig, PACTQuantizer

__all__ = ["PACTClip", "PACTConfig", "PACTQuantizer"]


@hookimpl
def register_quantizers(register):
    register(PACTQuantizer)
