"""Quantized layers: Linear/Conv whose weight, input and output pass through pluggable quantizer modules.

A *tensor quantizer* is any ``nn.Module`` mapping a tensor to its (fake-)quantized value with a gradient
(e.g. :class:`~quantzoo.nn.FakeQuant`, a DoReFa or ternary weight quantizer from a plugin). It exposes an
integer attribute ``bits``. Methods differ in their tensor quantizers, not in these layers.

An input quantizer may also define ``scaled_forward(x) -> (x_q, s)``: the layer's output is then multiplied
by ``s`` (broadcast), which is how XNOR-Net's ``sign(I) ⊛ sign(W) ⊙ K·α`` is computed (Rastegari et al. 2016,
eq. 11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..math import quantize
from .fake_quant import FakeQuant
from .weight_codes import CodedWeightQuantizer, WeightCodes


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
        return run_layer(self, x, self.quantized_weight())

    @torch.no_grad()
    def bake(self) -> None:
        """The convert step: write the quantized weight into ``weight``, drop the weight quantizer, set
        ``weight_bits`` and freeze the activation quantizers (they keep their qparams).

        Where the weight quantizer can say its integer codes (a :class:`CodedWeightQuantizer`, or an integer
        per-tensor/per-channel :class:`FakeQuant`), the weight becomes ``(c − offset)·scale`` exactly and the
        ``weight_scale``/``weight_offset`` buffers record the grid, so that the ``packed`` backend recovers
        the codes and computes bit-for-bit the same weights.
        """
        wq = self.weight_quantizer
        if wq is not None:
            spec = getattr(wq, "spec", None)
            #: what the weight was quantized as, kept for reports once the quantizer is gone
            self.weight_format = spec.describe() if hasattr(spec, "describe") else type(wq).__name__
            codes = weight_codes(wq, self.weight)
            if codes is None:
                self.weight.data = wq(self.weight).detach().clone()
                self.weight_bits = getattr(wq, "bits", None)
            else:
                self.weight.data = codes.dequantize().detach().to(self.weight.dtype).clone()
                scale = codes.scale.detach().float().clone()
                self.register_buffer("weight_scale", scale.reshape(-1) if scale.numel() > 1 else scale.reshape(()))
                self.register_buffer("weight_offset", torch.as_tensor(codes.offset, dtype=torch.float32).clone())
                self.weight_bits = codes.bits
            self.weight_quantizer = None
        for q in (self.input_quantizer, self.output_quantizer):
            if q is not None and hasattr(q, "freeze"):
                q.freeze()


def weight_codes(wq: nn.Module, w: torch.Tensor) -> WeightCodes | None:
    """The codes of ``wq(w)`` where the quantizer can say them, else None (the grid is then not recorded)."""
    if isinstance(wq, CodedWeightQuantizer):
        return wq.encode(w)
    spec = getattr(wq, "spec", None)
    if isinstance(wq, FakeQuant) and spec.granularity != "per_group" and (
            spec.granularity == "per_tensor" or spec.axis == 0):
        wq(w)  # the observer sees the current weight (a no-op for frozen or learned qparams)
        scale, zp = wq.qparams()
        q = quantize(w, scale, zp, spec.model_copy(update={"rounding": "nearest_even"}))  # inference rounding
        return WeightCodes(q.float() - spec.qmin, scale.float(), zp.float() - spec.qmin, spec.bits)
    return None


def run_layer(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Input quantizer → compute → (× output scale map) → output quantizer, for any layer that has the
    three quantizer attributes and a ``_compute(x, w)`` (quantized and packed layers alike)."""
    out_scale = None
    iq = layer.input_quantizer
    if iq is not None:
        if hasattr(iq, "scaled_forward"):
            x, out_scale = iq.scaled_forward(x)
        else:
            x = iq(x)
    out = layer._compute(x, weight)
    if out_scale is not None:
        out = out * out_scale
    if layer.output_quantizer is not None:
        out = layer.output_quantizer(out)
    return out


def is_packable(mod: nn.Module) -> bool:
    """True for a converted layer whose weight grid is recorded (see :meth:`QuantLayerMixin.bake`)."""
    return (isinstance(mod, QuantLayerMixin) and getattr(mod, "weight_bits", None) is not None
            and hasattr(mod, "weight_scale") and hasattr(mod, "weight_offset"))


def bake_model(model: nn.Module) -> nn.Module:
    """:meth:`QuantLayerMixin.bake` on every quantized layer of ``model`` (the default convert step)."""
    for mod in model.modules():
        if isinstance(mod, QuantLayerMixin):
            mod.bake()
    return model


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


#: float layer type -> quantized layer type (the one table of it)
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
