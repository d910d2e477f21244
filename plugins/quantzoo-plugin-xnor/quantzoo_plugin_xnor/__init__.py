"""quantzoo plugin: XNOR-Net and Binary-Weight-Networks (Rastegari et al. 2016, arXiv:1603.05279)."""

from quantzoo import hookimpl

from .quantizer import XnorConfig, XnorInput, XnorQuantizer

__all__ = ["XnorConfig", "XnorInput", "XnorQuantizer"]


@hookimpl
def register_quantizers(register):
    register(XnorQuantizer)
