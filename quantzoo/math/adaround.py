"""Adaptive rounding (AdaRound, Nagel et al. 2020, arXiv:2004.10568): the rectified sigmoid, the rounding
regulariser with its annealed exponent, and the weight fake-quantizer that rounds down or up as learned.

AdaRound replaces round-to-nearest by ``⌊W/s⌋ + h(V)`` with a continuous ``h`` that is optimised, then
hardened to ``1[V ≥ 0]`` (§4, eqs. 21-24). BRECQ (Li et al. 2021) and QDrop (Wei et al. 2022) use the same
parametrisation on blocks of layers; MQBench runs all three on this math.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..spec import QuantSpec
from .uniform import expand_qparam

#: Stretch of the rectified sigmoid (eq. 23; the hard-concrete stretch of Louizos et al. 2018).
ZETA = 1.1
GAMMA = -0.1
#: |V| of a weight exactly halfway between two grid points at initialisation (see :func:`init_rounding`):
#: its soft value is off by s·(ζ − γ)·σ'(0)·1e-3 = 3e-4·s.
TIE_OFFSET = 1e-3


def rectified_sigmoid(v: torch.Tensor, zeta: float = ZETA, gamma: float = GAMMA) -> torch.Tensor:
    """``h(V) = clip(σ(V)·(ζ − γ) + γ, 0, 1)`` (eq. 23). The stretch beyond [0, 1] lets ``h`` reach 0 and 1
    exactly at finite ``V`` (``|V| ≥ log 11`` for the defaults), where its gradient vanishes."""
    return torch.clamp(torch.sigmoid(v) * (zeta - gamma) + gamma, 0.0, 1.0)


def inverse_rectified_sigmoid(h: torch.Tensor, zeta: float = ZETA, gamma: float = GAMMA) -> torch.Tensor:
    """``V`` with ``h(V) = h`` for ``h`` in [0, 1): ``V = −log((ζ − γ)/(h − γ) − 1)``.

    Applied to the fractional part ``W/s − ⌊W/s⌋`` this is the initialisation of the official code (BRECQ
    ``AdaRoundQuantizer.init_alpha``, AIMET, MQBench): the soft-rounded weight starts equal to ``W``.
    """
    return -torch.log((zeta - gamma) / (h - gamma) - 1.0)


def rounding_regularizer(v: torch.Tensor, beta: float, zeta: float = ZETA, gamma: float = GAMMA) -> torch.Tensor:
    """``f_reg(V) = Σ_ij 1 − |2h(V_ij) − 1|^β`` (eq. 24): zero when every ``h`` is 0 or 1, largest at 1/2.

    A high ``β`` leaves the middle flat (``h`` moves freely), ``β = 2`` is the parabola ``4h(1 − h)`` that
    pushes every ``h`` to the nearer end; hence ``β`` is annealed from high to low (:func:`beta_schedule`).
    """
    h = rectified_sigmoid(v, zeta, gamma)
    return (1.0 - (2.0 * h - 1.0).abs().pow(beta)).sum()


def beta_schedule(step: int, total: int, *, start: float = 20.0, end: float = 2.0, warmup: float = 0.2,
                  kind: str = "linear") -> float:
    """The regulariser's exponent at ``step`` (1-based) of ``total``: ``start`` during the warm-up
    ``t < warmup·total``, then decayed to ``end`` at ``t = total``.

    * ``linear`` (BRECQ/QDrop/MQBench ``LinearTempDecay``): ``β = end + (start − end)·max(0, 1 − (t − t_w)/(T − t_w))``;
    * ``cosine`` (AIMET ``AdaroundLoss._compute_beta``): ``β = end + ½(start − end)(1 + cos(π·(t − t_w)/(T − t_w)))``.
    """
    if total < 1:
        raise ConfigError(f"beta_schedule: total={total} must be >= 1")
    if kind not in ("linear", "cosine"):
        raise ConfigError(f"beta_schedule: kind={kind!r} is not 'linear' or 'cosine'")
    t_warm = warmup * total
    if step < t_warm:
        return float(start)
    rel = min(1.0, (step - t_warm) / max(total - t_warm, 1e-12))
    if kind == "linear":
        return end + (start - end) * max(0.0, 1.0 - rel)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * rel))


def floor_and_rest(w: torch.Tensor, scale: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``⌊W/s⌋`` and the fractional part ``W/s − ⌊W/s⌋`` in [0, 1), with ``W/s`` computed as ``W·(1/s)`` like
    :func:`quantzoo.math.fake_quantize` (so that hard rounding of a fresh ``V`` is round-to-nearest)."""
    y = w.detach().float() * (1.0 / expand_qparam(scale.float(), w, spec))
    base = torch.floor(y)
    return base, y - base


def init_rounding(w: torch.Tensor, scale: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """The initial ``V`` of weight ``w``: ``h(V)`` equals the fractional part of ``W/s``, so the soft weight
    equals ``W`` and the hard rounding ``1[V ≥ 0]`` is round-to-nearest.

    A fractional part of exactly 0 maps to the finite ``V = −log 11`` (``h = 0``). A tie (exactly 1/2, which
    a symmetric grid produces at ``±max|W|``) starts at ``V = ∓TIE_OFFSET``, on the side round-half-to-even
    takes, so that hard rounding of a fresh ``V`` equals :func:`~quantzoo.math.fake_quantize` bit for bit
    (the official code rounds ties up), and off ``h = 1/2`` exactly, where the regulariser's gradient is zero
    and a clipped weight (no reconstruction gradient either) would never be decided."""
    base, rest = floor_and_rest(w, scale, spec)
    v = inverse_rectified_sigmoid(rest)
    tie_v = torch.where(torch.remainder(base, 2) == 0, -TIE_OFFSET, TIE_OFFSET).to(v.dtype)
    return torch.where(rest == 0.5, tie_v, v)


def adaround_fake_quantize(w: torch.Tensor, v: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                           spec: QuantSpec, *, soft: bool) -> torch.Tensor:
    """``W̃ = s·(clamp(⌊W/s⌋ + h + Z, qmin, qmax) − Z)`` (eq. 22 with a zero-point), ``h = h(V)`` when
    ``soft`` (gradient to ``V``), else the hard choice ``h = 1[V ≥ 0]`` (no gradient). ``⌊W/s⌋`` carries no
    gradient: only the rounding is learned, the grid ``(s, Z)`` is fixed."""
    if spec.dtype != "int":
        raise ConfigError(f"adaround_fake_quantize is for dtype 'int', not {spec.dtype!r}")
    if v.shape != w.shape:
        raise ConfigError(f"adaround_fake_quantize: V has shape {tuple(v.shape)}, the weight {tuple(w.shape)}; "
                          "initialise V with init_rounding(weight, scale, spec)")
    base, _ = floor_and_rest(w, scale, spec)
    h = rectified_sigmoid(v) if soft else (v >= 0).to(base.dtype)
    s = expand_qparam(scale.float(), w, spec)
    z = expand_qparam(zero_point.float(), w, spec)
    return (torch.clamp(base + h + z, spec.qmin, spec.qmax) - z) * s
