"""quantzoo plugin: HiSilicon NNIE logarithmic quantization-aware training in the manner of nnieqat, on CPU."""

from quantzoo import hookimpl

from .hooks import merge_freeze_bn, quant_dequant_weight, register_quantization_hook, unquant_weight
from .quantizer import NNIEConfig, NNIEQuantizer

__all__ = ["NNIEConfig", "NNIEQuantizer", "merge_freeze_bn", "quant_dequant_weight", "register_quantization_hook",
           "unquant_weight"]


@hookimpl
def register_quantizers(register):
    register(NNIEQuantizer)
