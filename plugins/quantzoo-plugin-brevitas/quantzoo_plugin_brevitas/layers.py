"""Brevitas-style quant layers (``brevitas.nn``): compute layers with weight/input/output quantizers, and
activation layers with an activation quantizer.

Defaults follow Brevitas (methods.md §3): ``QuantConv*``/``QuantLinear`` quantize the weight with
``Int8WeightPerTensorFloat`` and nothing else; ``QuantReLU`` uses ``Uint8ActPerTensorFloat``; ``QuantIdentity``
``Int8ActPerTensorFloat``; ``QuantEltwiseAdd`` quantizes both inputs (one shared quantizer) and the sum with
``Int8ActPerTensorFloat``. Keyword overrides are injected by prefix: ``weight_bit_width=4``,
``input_restrict_scaling_type='power_of_two'``; on activation layers unprefixed (``bit_width=4``) or ``act_``.
The compute layers are :mod:`quantzoo.nn` layers, so ``bake()`` and the conformance kit work unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quantzoo import nn as qnn
from quantzoo.errors import UnsupportedError
from quantzoo.state_dict import AdoptSavedShapes

from .inject import Int8ActPerTensorFloat, Int8WeightPerTensorFloat, Uint8ActPerTensorFloat, split_prefixed
from .qcdq import qcdq
from .quant_tensor import QuantTensor, value_of
from .tensor_quant import ActQuant, build_quant


class _BrevitasComputeMixin:
    """Brevitas constructor arguments and forward (QuantTensor in/out) on top of quantzoo's quant layers."""

    def _init_brevitas(self, weight_quant, input_quant, output_quant, bias_quant, return_quant_tensor, injected):
        if bias_quant is not None:
            raise UnsupportedError(f"{type(self).__name__}: bias_quant is not implemented (biases stay float); "
                                   "pass bias_quant=None")
        self._init_quant(build_quant(weight_quant, "weight", injected["weight"]),
                         build_quant(input_quant, "act", injected["input"]),
                         build_quant(output_quant, "act", injected["output"]))
        self.return_quant_tensor = return_quant_tensor
        if return_quant_tensor and self.output_quantizer is None:
            raise UnsupportedError(f"{type(self).__name__}: return_quant_tensor=True needs an output quantizer "
                                   "(output_quant=Int8ActPerTensorFloat); int32 accumulator tensors are not modelled")
        self.export_mode = False

    def quantized_weight(self) -> torch.Tensor:
        if self.weight_quantizer is not None:
            return self.weight_quantizer(self.weight)
        if self.export_mode and getattr(self, "weight_scale", None) is not None:
            # A baked weight lies on the grid; exporting it through Q→Clip→DQ keeps the QCDQ form and is exact.
            return qcdq(self.weight, self.weight_scale, self.weight_export_spec)
        return self.weight

    @torch.no_grad()
    def bake(self) -> None:
        """quantzoo's convert step, also keeping the weight's scale and format for ONNX QCDQ export."""
        wq = self.weight_quantizer
        if wq is not None:
            scale, _ = wq.qparams(self.weight)
            self.register_buffer("weight_scale", scale.detach().clone())
            self.weight_export_spec = wq.spec
        super().bake()

    def forward(self, x):
        x = value_of(x)
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        out = self._compute(x, self.quantized_weight())
        if self.output_quantizer is None:
            return out
        if self.return_quant_tensor:
            return self.output_quantizer.quant_tensor(out)
        return self.output_quantizer(out)


def _compute_kwargs(kwargs):
    return split_prefixed(kwargs, ("weight", "input", "output", "bias"))


class QuantLinear(_BrevitasComputeMixin, AdoptSavedShapes, qnn.QuantLinear):
    """``nn.Linear`` with Brevitas-style quantizers (``weight_quant=Int8WeightPerTensorFloat`` by default)."""

    def __init__(self, in_features, out_features, bias=True, *, weight_quant=Int8WeightPerTensorFloat,
                 input_quant=None, output_quant=None, bias_quant=None, return_quant_tensor=False, **kwargs):
        injected, rest = _compute_kwargs(kwargs)
        nn.Linear.__init__(self, in_features, out_features, bias=bias, **rest)
        self._init_brevitas(weight_quant, input_quant, output_quant, bias_quant, return_quant_tensor, injected)


class QuantConv1d(_BrevitasComputeMixin, AdoptSavedShapes, qnn.QuantConv1d):
    """``nn.Conv1d`` with Brevitas-style quantizers."""

    def __init__(self, in_channels, out_channels, kernel_size, *args, weight_quant=Int8WeightPerTensorFloat,
                 input_quant=None, output_quant=None, bias_quant=None, return_quant_tensor=False, **kwargs):
        injected, rest = _compute_kwargs(kwargs)
        nn.Conv1d.__init__(self, in_channels, out_channels, kernel_size, *args, **rest)
        self._init_brevitas(weight_quant, input_quant, output_quant, bias_quant, return_quant_tensor, injected)


class QuantConv2d(_BrevitasComputeMixin, AdoptSavedShapes, qnn.QuantConv2d):
    """``nn.Conv2d`` with Brevitas-style quantizers."""

    def __init__(self, in_channels, out_channels, kernel_size, *args, weight_quant=Int8WeightPerTensorFloat,
                 input_quant=None, output_quant=None, bias_quant=None, return_quant_tensor=False, **kwargs):
        injected, rest = _compute_kwargs(kwargs)
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, *args, **rest)
        self._init_brevitas(weight_quant, input_quant, output_quant, bias_quant, return_quant_tensor, injected)


COMPUTE_LAYERS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: QuantLinear, nn.Conv1d: QuantConv1d, nn.Conv2d: QuantConv2d,
}


def quant_layer_from_float(mod: nn.Module, **quant_kwargs) -> nn.Module:
    """The Brevitas-style twin of a float Linear/Conv1d/Conv2d, sharing its parameters."""
    cls = COMPUTE_LAYERS.get(type(mod))
    if cls is None:
        raise UnsupportedError(f"no Brevitas-style layer for {type(mod).__name__}; supported: "
                               + ", ".join(t.__name__ for t in COMPUTE_LAYERS))
    if isinstance(mod, nn.Linear):
        new = cls(mod.in_features, mod.out_features, mod.bias is not None, **quant_kwargs)
    else:
        new = cls(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                  dilation=mod.dilation, groups=mod.groups, bias=mod.bias is not None,
                  padding_mode=mod.padding_mode, **quant_kwargs)
    new.weight = mod.weight
    new.bias = mod.bias
    new.train(mod.training)
    return new


class _QuantAct(nn.Module):
    """An activation function followed by an activation quantizer (Brevitas ``QuantNLAL``)."""

    default_quant = Int8ActPerTensorFloat

    def __init__(self, act_quant="default", return_quant_tensor=False, **kwargs):
        super().__init__()
        injected, rest = split_prefixed(kwargs, ("act",))
        overrides = {**injected["act"], **rest}  # unprefixed keywords go to the activation quantizer
        preset = self.default_quant if act_quant == "default" else act_quant
        self.act_quant = build_quant(preset, "act", overrides)
        self.return_quant_tensor = return_quant_tensor
        if return_quant_tensor and self.act_quant is None:
            raise UnsupportedError(f"{type(self).__name__}: return_quant_tensor=True needs act_quant")

    @property
    def bits(self) -> int | None:
        return self.act_quant.bits if self.act_quant is not None else None

    def act(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x):
        y = self.act(value_of(x))
        if self.act_quant is None:
            return y
        return self.act_quant.quant_tensor(y) if self.return_quant_tensor else self.act_quant(y)


class QuantReLU(_QuantAct):
    """ReLU then ``Uint8ActPerTensorFloat`` (unsigned: the output is non-negative)."""

    default_quant = Uint8ActPerTensorFloat

    def act(self, x):
        return F.relu(x)


class QuantIdentity(_QuantAct):
    """Quantize the input as is with ``Int8ActPerTensorFloat`` (e.g. at the network input)."""

    default_quant = Int8ActPerTensorFloat

    def act(self, x):
        return x


class QuantEltwiseAdd(nn.Module):
    """``q_out(q_in(a) + q_in(b))`` with one shared input quantizer (Brevitas ``QuantEltwiseAdd``)."""

    def __init__(self, input_quant=Int8ActPerTensorFloat, output_quant=Int8ActPerTensorFloat,
                 return_quant_tensor=False, **kwargs):
        super().__init__()
        injected, rest = split_prefixed(kwargs, ("input", "output"))
        if rest:
            raise UnsupportedError(f"QuantEltwiseAdd: unknown arguments {sorted(rest)}; prefix quantizer "
                                   "settings with input_ or output_")
        self.input_quant = build_quant(input_quant, "act", injected["input"])
        self.output_quant = build_quant(output_quant, "act", injected["output"])
        self.return_quant_tensor = return_quant_tensor
        if return_quant_tensor and self.output_quant is None:
            raise UnsupportedError("QuantEltwiseAdd: return_quant_tensor=True needs output_quant")

    def forward(self, a, b):
        a, b = value_of(a), value_of(b)
        if self.input_quant is not None:
            a, b = self.input_quant(a), self.input_quant(b)
        out = a + b
        if self.output_quant is None:
            return out
        return self.output_quant.quant_tensor(out) if self.return_quant_tensor else self.output_quant(out)


def act_quantizers(model: nn.Module) -> list[ActQuant]:
    """Every activation quantizer in ``model``."""
    return [m for m in model.modules() if isinstance(m, ActQuant)]


__all__ = ["QuantConv1d", "QuantConv2d", "QuantEltwiseAdd", "QuantIdentity", "QuantLinear", "QuantReLU",
           "QuantTensor", "act_quantizers", "quant_layer_from_float"]
