"""Binary and ternary primitives with their straight-through gradients."""

from __future__ import annotations

import torch


def sign(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` with ``sign(0) = +1`` (Courbariaux et al. 2016, arXiv:1602.02830 eq. 1), no gradient."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SignSTE(torch.autograd.Function):
    """sign(x) forward; backward ``g·1_{|x|≤clip}`` (BNN's "straight-through estimator that cancels the
    gradient when r is too large", Hubara et al. 2016, arXiv:1602.02830 eq. 4) or the plain identity."""

    @staticmethod
    def forward(ctx, x, clip):
        ctx.save_for_backward(x)
        ctx.clip = clip
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if ctx.clip is None:
            return grad, None
        return grad * (x.abs() <= ctx.clip).to(grad.dtype), None


def binarize(x: torch.Tensor, clip: float | None = 1.0) -> torch.Tensor:
    """Binarize to ±1 (sign(0)=+1) with a straight-through gradient, cancelled where ``|x| > clip``
    (``clip=None``: identity gradient)."""
    return _SignSTE.apply(x, clip)


def ternary_codes(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Ternary codes ``t ∈ {-1, 0, +1}``: ``+1`` if ``x > Δ``, ``-1`` if ``x < -Δ``, else 0
    (Li & Liu 2016, arXiv:1605.04711 eq. 3). ``delta`` broadcasts against ``x``."""
    return (x > delta).to(x.dtype) - (x < -delta).to(x.dtype)
