"""Primitives of the low-bit (binary/ternary/k-bit) methods: unit-interval quantization, gradient
transforms and the dequantization of stored unsigned codes."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .straight_through import round_ste


def quantize_unit(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa's ``quantize_k`` (Zhou et al. 2016, arXiv:1606.06160 eq. 5) for ``x`` in [0, 1]:
    ``round((2^k − 1)·x) / (2^k − 1)`` (half to even, as ``tf.round``), identity gradient (STE).

    The caller bounds ``x`` to [0, 1] first (clamp or the tanh normalisation); nothing is clipped here.
    """
    if bits < 1:
        raise ValueError(f"quantize_unit: bits must be >= 1, got {bits}")
    n = float(2**bits - 1)
    return round_ste(x * n) / n


def tanh_unit(w: torch.Tensor) -> torch.Tensor:
    """DoReFa's weight normalisation (Zhou et al. 2016, arXiv:1606.06160 eq. 9, the argument of
    ``quantize_k``): ``tanh(w) / (2·max|tanh w|) + 1/2``, in [0, 1].

    The gradient flows through ``tanh`` and through ``max`` (to the largest-magnitude weight), as in the
    paper's TensorFlow code, Distiller's ``dorefa_quantize_param`` and NNI's ``dorefa_clamp_round_weight``;
    an all-zero ``w`` maps to ½ instead of 0/0.
    """
    t = torch.tanh(w)
    return t / (2 * t.abs().max().clamp_min(torch.finfo(t.dtype).tiny)) + 0.5


class _GradTransform(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn):
        ctx.fn = fn
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.fn(grad), None


def grad_transform(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``x`` unchanged in the forward pass; the incoming gradient ``g`` becomes ``fn(g)`` in the backward pass
    (e.g. DoReFa's k-bit gradient quantization, arXiv:1606.06160 eq. 12)."""
    return _GradTransform.apply(x, fn)


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor | float, offset: torch.Tensor | float,
                     axis: int = 0) -> torch.Tensor:
    """Real values ``(c − offset)·scale`` of unsigned stored codes ``c`` (the inverse of bit packing).

    ``scale`` is a scalar or one value per slice of ``codes`` along ``axis`` (per output channel);
    ``offset`` likewise (a scalar, or per slice for asymmetric per-channel codes). Binary ±α is
    ``c∈{0,1}, offset=½, scale=2α``; ternary ``{−α,0,α}`` is ``c∈{0,1,2}, offset=1, scale=α``; a signed b-bit
    code q is ``c=q−qmin, offset=Z−qmin``.
    Keeps the gradient of ``codes`` and ``scale``.
    """
    return (codes.float() - _along(offset, codes, axis)) * _along(scale, codes, axis)


def _along(p: torch.Tensor | float, x: torch.Tensor, axis: int) -> torch.Tensor:
    """``p`` as a float32 tensor broadcasting against ``x`` (a vector lies along ``axis``)."""
    p = torch.as_tensor(p, dtype=torch.float32, device=x.device)
    if p.dim() and p.numel() > 1:
        shape = [1] * x.dim()
        shape[axis] = -1
        p = p.reshape(shape)
    return p
