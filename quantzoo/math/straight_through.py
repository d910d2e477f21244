"""Straight-through estimators (value forward, chosen gradient backward) and the LSQ learnable-scale fake-quantizer."""

from __future__ import annotations

import math

import torch

from ..spec import QuantSpec
from .uniform import expand_qparam


def ste(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, the identity gradient with respect to ``x`` in the backward pass."""
    return x + (value - x).detach()


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` (half to even) in the forward pass, identity gradient (Bengio et al. 2013, arXiv:1308.3432)."""
    return x + (torch.round(x) - x).detach()


def stochastic_round_ste(x: torch.Tensor) -> torch.Tensor:
    """Stochastic rounding ``floor(x + u)``, ``u ~ U[0, 1)`` (Gupta et al. 2015, arXiv:1502.02551 eq. 3:
    round up with probability ``x - floor(x)``) in the forward pass, identity gradient."""
    return x + (torch.floor(x + torch.rand_like(x)) - x).detach()


def _round_ste_for(spec: QuantSpec):
    return stochastic_round_ste if spec.rounding == "stochastic" else round_ste


def grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Value of ``x`` with its gradient multiplied by ``factor`` (LSQ, Esser et al. 2020, Fig. 2 ``gradscale``)."""
    scaled = x * factor
    return (x - scaled).detach() + scaled


def lsq_grad_factor(numel: int, qmax: int) -> float:
    """LSQ's step-size gradient scale ``g = 1/sqrt(N_W * Q_P)`` (Esser et al. 2020, arXiv:1902.08153, §2.2)."""
    return 1.0 / math.sqrt(max(numel, 1) * max(qmax, 1))


def lsq_fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    spec: QuantSpec,
    zero_point: torch.Tensor | None = None,
    grad_factor: float | None = None,
) -> torch.Tensor:
    """Fake-quantize with a learnable step size (LSQ) and optionally a learnable offset (LSQ+).

    Esser et al. 2020 (arXiv:1902.08153) eq. 1-3: ``v̄ = round(clip(v/s, -Q_N, Q_P))``, ``v̂ = v̄·s``, with
    the STE through ``round`` so that ``∂v̂/∂s = -v/s + round(v/s)`` inside the range and ``-Q_N`` or ``Q_P``
    outside; ``s`` gets its gradient multiplied by ``grad_factor`` (default ``1/sqrt(numel·Q_P)``).
    With ``zero_point`` (a float tensor, possibly learnable) it is LSQ+ (Bhalgat et al. 2020,
    arXiv:2004.09576 eq. 4): ``v̂ = (round(clip(v/s + β', qmin, qmax)) - β')·s`` with ``β'`` rounded by STE.
    ``round`` is the spec's rounding (nearest even, or stochastic).
    """
    if grad_factor is None:
        grad_factor = lsq_grad_factor(x.numel() // max(scale.numel(), 1), spec.qmax)
    s = expand_qparam(grad_scale(scale, grad_factor), x, spec)
    rnd = _round_ste_for(spec)
    if zero_point is None:
        v = torch.clamp(x / s, spec.qmin, spec.qmax)
        return rnd(v) * s
    z = expand_qparam(round_ste(grad_scale(zero_point, grad_factor)), x, spec)
    v = torch.clamp(x / s + z, spec.qmin, spec.qmax)
    return (rnd(v) - z) * s


def round_clamp_fake_quantize(x: torch.Tensor, scale: torch.Tensor, spec: QuantSpec,
                              clamp_ste: bool = False) -> torch.Tensor:
    """Fake-quantize rounding *before* clamping: ``x̂ = clamp(round(x/s), qmin, qmax)·s``, the STE through
    ``round`` and a true division ``x/s`` (Brevitas' ``IntQuant.to_int``, brevitas.readthedocs.io
    ``brevitas.core.quant``; the scaled-integer form of Jacob et al. 2018, arXiv:1712.05877 eq. 1).

    Values equal :func:`lsq_fake_quantize`'s (clamp then round, for integer bounds), gradients do not: here
    ``∂x̂/∂x = 1`` wherever ``round(x/s)`` lies in ``[qmin, qmax]``, so also up to half a step outside the range,
    and ``∂x̂/∂s = round(x/s) − x/s`` there; beyond, ``0`` and ``qmin``/``qmax``. ``clamp_ste=True`` passes the
    gradient through the clamp as well (Brevitas' weight quantizers, ``TensorClampSte``): ``∂x̂/∂x = 1`` and
    ``∂x̂/∂s = clamp(round(x/s)) − x/s`` everywhere. No gradient scale; ``scale`` broadcasts by the spec.
    """
    s = expand_qparam(scale, x, spec)
    y = round_ste(x / s)
    clamped = torch.clamp(y, spec.qmin, spec.qmax)
    return (ste(y, clamped) if clamp_ste else clamped) * s
