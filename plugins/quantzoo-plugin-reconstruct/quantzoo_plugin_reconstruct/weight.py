"""`AdaRoundWeight`: the weight quantizer whose rounding (down or up, per weight) is learned."""

from __future__ import annotations

import torch
from torch import nn

from quantzoo import QuantSpec
from quantzoo.math import adaround_fake_quantize, init_rounding, rectified_sigmoid
from quantzoo.observers import Observer


class AdaRoundWeight(nn.Module):
    """A tensor quantizer for one layer's weight: grid ``(s, Z)`` fixed at construction by ``observer`` on
    the weight (the same min-max start as ``uniform``), rounding parameters ``V`` initialised so that
    ``h(V)`` is the fractional part of ``W/s`` (Nagel et al. 2020, arXiv:2004.10568 eqs. 22-23).

    ``soft=True`` (only while a reconstruction optimises ``V``) uses ``h(V)``; otherwise the hard rounding
    ``1[V ≥ 0]``, which for a fresh ``V`` is round-to-nearest. ``quantizing=False`` passes the weight through
    (the float reference, :func:`quantzoo.nn.reference.quantizers_off`). ``V``, ``s`` and ``Z`` are in the
    state dict.
    """

    def __init__(self, weight: torch.Tensor, spec: QuantSpec, observer: Observer):
        super().__init__()
        self.spec = spec
        observer(weight.detach())
        scale, zero_point = observer.calculate_qparams()
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.rounding = nn.Parameter(init_rounding(weight, scale, spec))
        self.soft = False
        self.quantizing = True

    @property
    def bits(self) -> int:
        return self.spec.bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.quantizing:
            return w
        return adaround_fake_quantize(w, self.rounding, self.scale, self.zero_point, self.spec, soft=self.soft)

    @torch.no_grad()
    def softness(self) -> float:
        """Mean of ``1 − |2h(V) − 1|`` over the weights: 0 when every rounding is decided (AdaRound §5,
        the check that the hard weights equal the optimised soft ones)."""
        h = rectified_sigmoid(self.rounding)
        return float((1.0 - (2.0 * h - 1.0).abs()).mean())

    def extra_repr(self) -> str:
        return f"{self.spec.describe()}, {'soft' if self.soft else 'hard'}" + ("" if self.quantizing else ", off")
