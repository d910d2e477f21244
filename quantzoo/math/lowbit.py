"""Primitives of the low-bit (binary/ternary/k-bit) methods: unit-interval quantization, gradient
transforms and the dequantization of stored unsigned codes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

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


#: How :func:`dorefa_weight` rounds ``n·u``; the two differ only where ``n·u`` is within a float32 step of a
#: tie, most visibly at ``w = 0`` (``u = ½``, ``n·u = n/2`` is always a tie because ``n = 2^k − 1`` is odd).
DorefaRounding = Literal["half_even", "step_fp32"]


def dorefa_codes(w: torch.Tensor, bits: int, rounding: DorefaRounding = "half_even",
                 levels: int | None = None) -> torch.Tensor:
    """Integer codes ``c = round(n·u)``, ``u = tanh_unit(w)``, of DoReFa's k-bit weights (Zhou et al. 2016,
    arXiv:1606.06160 eq. 9, ``quantize_k`` of eq. 5), as floats in ``[0, n]`` without gradient.

    ``n = levels`` (default ``2^bits − 1``; NNI's narrow signed targets have ``2^bits − 2``). ``rounding``:

    * ``"half_even"``: ``n·u`` is an exact product and ties go to the even code: the paper's
      ``tf.round(x·n)/n`` and Distiller's ``round(s·x)`` with ``s = n``. ``w = 0`` → ``c = 2^(k−1)``.
    * ``"step_fp32"``: the affine fake-quantizer with the step kept in float32, ``S = fl(1/n)``, i.e.
      ``nearbyint(u·fl(1/S))`` (``torch.fake_quantize_per_tensor_affine``, the NNI plugin). ``fl(1/S)`` is just
      below ``n``, so ``w = 0`` lands one code lower, ``c = 2^(k−1) − 1``.
    """
    if bits < 2:
        raise ValueError(f"dorefa_codes: eq. 9 is for bits >= 2 (1 bit is E|w|·sign(w), eq. 7), got {bits}")
    n = 2**bits - 1 if levels is None else levels
    u = tanh_unit(w.detach())
    if rounding == "half_even":
        return torch.round(u * n)
    if rounding == "step_fp32":
        step = torch.tensor(1.0, dtype=u.dtype, device=u.device) / n  # fl(1/n): the stored scale
        return torch.round(u * (1.0 / step))
    raise ValueError(f"dorefa_codes: rounding must be 'half_even' or 'step_fp32', not {rounding!r}")


def dorefa_weight(w: torch.Tensor, bits: int, rounding: DorefaRounding = "half_even",
                  levels: int | None = None) -> torch.Tensor:
    """DoReFa weights (Zhou et al. 2016, arXiv:1606.06160): the one implementation every DoReFa in quantzoo uses.

    * ``bits = 1`` (eq. 7-8): ``E(|w|)·sign(w)`` with ``sign(0) = +1``, E over the whole tensor; the gradient
      passes straight through to ``w`` (E is a constant, as in the authors' code and Distiller).
    * ``bits > 1`` (eq. 9): ``2·c/n − 1`` with ``c`` from :func:`dorefa_codes`; ``"half_even"`` computes
      ``c/n`` (Distiller's dequantization ``q/s``), ``"step_fp32"`` computes ``c·fl(1/n)`` (the affine
      fake-quantizer's ``(q − Z)·S``). The gradient is exactly that of ``2·u − 1``: through the straight-through
      rounding into ``tanh_unit`` (tanh and the max).

    The value is bit-for-bit the tensor computed by the source each rounding mode names.
    """
    if bits == 1:
        e = w.detach().abs().mean()
        value = torch.where(w.detach() >= 0, e, -e)
        return value + (w - w.detach())  # exact value, identity gradient
    n = 2**bits - 1 if levels is None else levels
    c = dorefa_codes(w, bits, rounding, levels)
    if rounding == "half_even":
        unit = c / n
    else:
        unit = c * (torch.tensor(1.0, dtype=c.dtype, device=c.device) / n)
    u = tanh_unit(w)
    return 2 * (unit + (u - u.detach())) - 1


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
