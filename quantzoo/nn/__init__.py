"""Modules that prepared and converted models are made of, and the tools that swap them in."""

from .binary import BinaryActivation, InputBatchNorm, input_batchnorm, replace_relus
from .fake_quant import FakeQuant
from .fold import find_bn_pairs, fold_batch_norms, fuse_bn
from .graph import ModuleGraph, trace_modules
from .layers import (QUANT_LAYERS, QuantConv1d, QuantConv2d, QuantLayerMixin, QuantLinear, bake_model, is_packable,
                     run_layer, to_quant_layer, weight_codes)
from .swap import set_submodule, swap_layers
from .weight_codes import BinaryWeight, CodedWeightQuantizer, WeightCodes

__all__ = [
    "QUANT_LAYERS",
    "BinaryActivation",
    "BinaryWeight",
    "CodedWeightQuantizer",
    "FakeQuant",
    "InputBatchNorm",
    "ModuleGraph",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLayerMixin",
    "QuantLinear",
    "WeightCodes",
    "bake_model",
    "find_bn_pairs",
    "fold_batch_norms",
    "fuse_bn",
    "input_batchnorm",
    "is_packable",
    "replace_relus",
    "run_layer",
    "set_submodule",
    "swap_layers",
    "to_quant_layer",
    "trace_modules",
    "weight_codes",
]
