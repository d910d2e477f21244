"""Weight quantizers that can say which integer codes their output is made of.

``w_q = (c − offset)·scale`` with unsigned integer codes ``c`` (:func:`quantzoo.math.dequantize_codes`):
binary weights are 1-bit codes, ternary 2-bit, DoReFa k-bit. Converting a layer with such a quantizer
records the grid (:meth:`~quantzoo.nn.QuantLayerMixin.bake`), which is what lets the ``packed`` backend store
the codes bit-packed and recover them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..math import binarize, dequantize_codes, ste


@dataclass
class WeightCodes:
    """``w_q = (codes − offset)·scale``: ``codes`` integral floats in ``[0, 2^bits − 1]`` (they may carry a
    straight-through gradient), ``scale``/``offset`` scalars or per-output-channel vectors (axis 0)."""

    codes: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor
    bits: int

    def dequantize(self) -> torch.Tensor:
        return dequantize_codes(self.codes, self.scale, self.offset, axis=0)


class CodedWeightQuantizer(nn.Module):
    """A weight quantizer whose output is ``WeightCodes.dequantize()``; subclasses implement :meth:`encode`
    and may override :meth:`forward` to route the gradient differently (the value must stay the same)."""

    bits: int = 0

    def encode(self, w: torch.Tensor) -> WeightCodes:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.encode(w).dequantize()


class BinaryWeight(CodedWeightQuantizer):
    """``w_b = α·sign(w)`` (sign(0)=+1) stored as 1-bit codes ``c = (sign(w)+1)/2``, ``scale = 2α``, ``offset = ½``.

    ``scale``: ``"none"`` (α = 1, BNN: Courbariaux/Hubara et al. 2016, arXiv:1602.02830 eq. 1),
    ``"layer"`` (α = E|w| over the tensor, DoReFa eq. 7; Zhou et al. 2016, arXiv:1606.06160) or
    ``"channel"`` (α_o = mean|W_o| per output channel, XNOR-Net's BWN, Rastegari et al. 2016 eq. 6).
    ``clip``: the sign's straight-through gradient is cancelled where ``|w| > clip`` (None: identity).
    ``scale_grad``: α keeps its gradient (XNOR-Net §3.1 differentiates through α); otherwise α is a constant
    and the whole gradient is straight-through (DoReFa eq. 8).
    """

    bits = 1

    def __init__(self, scale: str = "none", clip: float | None = 1.0, scale_grad: bool = False):
        super().__init__()
        if scale not in ("none", "layer", "channel"):
            raise ValueError(f"BinaryWeight scale must be none, layer or channel, not {scale!r}")
        self.scale, self.clip, self.scale_grad = scale, clip, scale_grad

    def alpha(self, w: torch.Tensor) -> torch.Tensor:
        w = w if self.scale_grad else w.detach()
        if self.scale == "none":
            return torch.ones((), dtype=w.dtype, device=w.device)
        if self.scale == "layer":
            return w.abs().mean()
        return w.abs().reshape(w.shape[0], -1).mean(dim=1)

    def encode(self, w: torch.Tensor) -> WeightCodes:
        b = binarize(w, self.clip)
        return WeightCodes((b + 1) / 2, 2 * self.alpha(w), torch.tensor(0.5), 1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.clip is None and not self.scale_grad:
            return ste(w, self.encode(w.detach()).dequantize())  # eq. 8: ∂c/∂r_i = ∂c/∂r_o
        return self.encode(w).dequantize()

    def extra_repr(self) -> str:
        return f"scale={self.scale}, clip={self.clip}, scale_grad={self.scale_grad}"
