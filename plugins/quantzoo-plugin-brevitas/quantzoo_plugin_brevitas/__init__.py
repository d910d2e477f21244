"""quantzoo plugin in the style of Brevitas (Xilinx/AMD): quant layers, injectable quantizer presets,
automatic PTQ/QAT and ONNX QCDQ export. See README.md for what is reproduced and how it differs."""

from quantzoo import hookimpl

from .backend import OnnxRuntimeBackend, OrtModule
from .export import export_onnx_qcdq, qcdq
from .graph import bias_correction_mode, calibration_mode, preprocess_for_quantize, quantize_model
from .inject import (
    PRESETS,
    Injector,
    Int8ActPerTensorFixedPoint,
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int8WeightPerTensorFixedPoint,
    Int8WeightPerTensorFloat,
    SignedBinaryWeightPerTensorConst,
    SignedTernaryWeightPerTensorConst,
    Uint8ActPerTensorFixedPoint,
    Uint8ActPerTensorFloat,
)
from .layers import QuantConv1d, QuantConv2d, QuantEltwiseAdd, QuantIdentity, QuantLinear, QuantReLU
from .quant_tensor import QuantTensor
from .quantizers import BrevitasPTQ, BrevitasQAT

__all__ = [
    "PRESETS", "BrevitasPTQ", "BrevitasQAT", "Injector", "Int8ActPerTensorFixedPoint", "Int8ActPerTensorFloat",
    "Int8WeightPerChannelFloat", "Int8WeightPerTensorFixedPoint", "Int8WeightPerTensorFloat",
    "OnnxRuntimeBackend", "OrtModule", "QuantConv1d", "QuantConv2d", "QuantEltwiseAdd", "QuantIdentity",
    "QuantLinear", "QuantReLU", "QuantTensor", "SignedBinaryWeightPerTensorConst",
    "SignedTernaryWeightPerTensorConst", "Uint8ActPerTensorFixedPoint", "Uint8ActPerTensorFloat",
    "bias_correction_mode", "calibration_mode", "export_onnx_qcdq", "preprocess_for_quantize", "qcdq",
    "quantize_model",
]


@hookimpl
def register_quantizers(register):
    register(BrevitasPTQ)
    register(BrevitasQAT)


@hookimpl
def register_backends(register):
    register(OnnxRuntimeBackend)
