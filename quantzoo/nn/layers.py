"""Quantized layers: Linear/Conv whose weight and input pass through pluggable quantizer modules.

A *tensor quantizer* is any ``nn.Module`` mapping a tensor to its (fake-)quantized value with a gradient
(e.g. :class:`~quantzoo.nn.FakeQuant`, a DoReFa or ternary weight quantizer from a plugin). It exposes an
integer attribute ``bits``. Methods differ in their tensor quantizers, not in these layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QuantLayerMixin:
    """Shared logic of the quantized layers: quantize input, quantize weight, compute, quantize output."""

    weight_quantizer: nn.Module | None
    input_quantizer: nn.Module | None
    output_quantizer: nn.Module | None

    def _init_quant(self, weight_quantizer, input_quantizer, output_quantizer) -> None:
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer
        self.output_quantizer = output_quantizer
        #: set by :meth:`bake`: the bit width the stored weight lies on (read by the conformance kit).
        self.weight_bits: int | None = None

    def quantized_weight(self) -> torch.Tensor:
        w = self.weight
        return self.weight_quantizer(w) if self.weight_quantizer is not None else w

    def _quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        out = self._compute(x, self.quantized_weight())
        if self.output_quantizer is not None:
            out = self.output_quantizer(out)
        return out

    @torch.no_grad()
    def bake(self) -> None:
        """Write the quantized weight into ``weight`` and drop the weight quantizer (the convert step).

        Activation quantizers stop observing and keep their qparams.
        """
        if self.weight_quantizer is not None:
            bits = getattr(self.weight_quantizer, "bits", None)
            self.weight.data = self.weight_quantizer(self.weight).detach().clone()
            self.weight_quantizer = None
            self.weight_bits = bits
        for q in (self.input_quantizer, self.output_quantizer):
            if q is not None and hasattr(q, "freeze"):
                q.freeze()


class QuantLinear(QuantLayerMixin, nn.Linear):
    """``nn.Linear`` with quantized weight/input/output."""

    def __init__(self, in_features, out_features, bias=True, *, weight_quantizer=None, input_quantizer=None,
                 output_quantizer=None, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_quant(weight_quantizer, input_quantizer, output_quantizer)

    @classmethod
    def from_float(cls, mod: nn.Linear, **quantizers) -> "QuantLinear":
        new = cls(mod.in_features, mod.out_features, mod.bias is not None,
                  device=mod.weight.device, dtype=mod.weight.dtype, **quantizers)
        new.weight = mod.weight
        new.bias = mod.bias
        new.train(mod.training)
        return new

    def _compute(self, x, w):
        return F.linear(x, w, self.bias)

    def forward(self, x):
        return self._quant_forward(x)


class _QuantConvNd(QuantLayerMixin):
    @classmethod
    def from_float(cls, mod, **quantizers):
        new = cls(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                  dilation=mod.dilation, groups=mod.groups, bias=mod.bias is not None,
                  padding_mode=mod.padding_mode, device=mod.weight.device, dtype=mod.weight.dtype, **quantizers)
        new.weight = mod.weight
        new.bias = mod.bias
        new.train(mod.training)
        return new

    def _compute(self, x, w):
        return self._conv_forward(x, w, self.bias)

    def forward(self, x):
        return self._quant_forward(x)


class QuantConv1d(_QuantConvNd, nn.Conv1d):
    """``nn.Conv1d`` with quantized weight/input/output."""

    def __init__(self, *args, weight_quantizer=None, input_quantizer=None, output_quantizer=None, **kwargs):
        nn.Conv1d.__init__(self, *args, **kwargs)
        self._init_quant(weight_quantizer, input_quantizer, output_quantizer)


class QuantConv2d(_QuantConvNd, nn.Conv2d):
    """``nn.Conv2d`` with quantized weight/input/output."""

    def __init__(self, *args, weight_quantizer=None, input_quantizer=None, output_quantizer=None, **kwargs):
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_quant(weight_quantizer, input_quantizer, output_quantizer)


#: float layer type -> quantized layer type
QUANT_LAYERS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: QuantLinear,
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
}


def to_quant_layer(mod: nn.Module, **quantizers) -> nn.Module:
    """The quantized twin of a Linear/Conv1d/Conv2d sharing its parameters."""
    cls = QUANT_LAYERS.get(type(mod))
    if cls is None:
        raise TypeError(f"no quantized layer for {type(mod).__name__}; supported: "
                        + ", ".join(t.__name__ for t in QUANT_LAYERS))
    return cls.from_float(mod, **quantizers)
