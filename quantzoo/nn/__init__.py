"""Modules that prepared and converted models are made of, and the tools that swap them in."""

from .fake_quant import FakeQuant
from .fold import find_bn_pairs, fold_batch_norms
from .layers import QUANT_LAYERS, QuantConv1d, QuantConv2d, QuantLayerMixin, QuantLinear, to_quant_layer
from .swap import LayerPolicy, compute_layers, first_last, matches, replace_layers, set_submodule

__all__ = [
    "QUANT_LAYERS",
    "FakeQuant",
    "LayerPolicy",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLayerMixin",
    "QuantLinear",
    "compute_layers",
    "find_bn_pairs",
    "first_last",
    "fold_batch_norms",
    "matches",
    "replace_layers",
    "set_submodule",
    "to_quant_layer",
]
