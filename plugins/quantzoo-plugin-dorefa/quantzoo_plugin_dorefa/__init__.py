"""quantzoo plugin: DoReFa-Net (Zhou et al. 2016, arXiv:1606.06160)."""

from quantzoo import hookimpl

from .quantizer import DorefaActivation, DorefaConfig, DorefaGradient, DorefaQuantizer, DorefaWeight

__all__ = ["DorefaActivation", "DorefaConfig", "DorefaGradient", "DorefaQuantizer", "DorefaWeight"]


@hookimpl
def register_quantizers(register):
    register(DorefaQuantizer)
