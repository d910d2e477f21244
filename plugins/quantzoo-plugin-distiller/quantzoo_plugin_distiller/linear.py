"""Distiller's linear quantization arithmetic (``distiller/quantization/q_utils.py``), reproduced to the bit.

Distiller *multiplies* by its scale ``s`` and subtracts its zero point: ``q = round(s·x − zp)`` and
``x̂ = (q + zp)/s``, with, for ``b`` bits (Krishnamoorthi 2018, arXiv:1806.08342 §2):

* symmetric: ``s = n/max|x|``, ``zp = 0``, ``n = (2^b − 1)/2`` (codes ``[−2^(b−1), 2^(b−1) − 1]``) or, restricted,
  ``n = 2^(b−1) − 1``;
* asymmetric: ``s = (2^b − 1)/(max' − min')`` over the range widened to include 0, ``zp = round(s·min')``, plus
  ``2^(b−1)`` when signed (codes ``[−2^(b−1), 2^(b−1) − 1]``, else ``[0, 2^b − 1]``);
* a zero range gets ``s = 1``.

These are the same maps as quantzoo's ``S = 1/s``, ``Z = −zp``, but not the same float32 numbers: the core's
:func:`quantzoo.math.fake_quantize` multiplies by ``fl(1/S)``, which is not ``s`` when ``s`` is not a power of
two. Where ``s·x`` is a tie — WRPN's saturated weights ``±1·(2^b − 1)/2``, a DoReFa weight or activation of ½ —
``fl(1/fl(1/s))·x`` lands just below it and rounds one code lower (a third of WRPN's codes at 3/4/8 bits on
unit-Gaussian weights, ``tests/anchors``). So the Distiller plugin computes in Distiller's convention, here.
"""

from __future__ import annotations

import torch



def _f32(v) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float32).detach()


def symmetric_params(bits: int, sat: torch.Tensor, restrict: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``symmetric_linear_quantization_params``: ``s = n/sat`` (``n`` as in the module doc), ``zp = 0``."""
    n = 2 ** (bits - 1) - 1 if restrict else (2**bits - 1) / 2
    sat = _f32(sat).clone()
    sat[sat == 0] = n  # "if float values are all 0 ... the scale becomes 1"
    scale = n / sat
    return scale, torch.zeros_like(scale)


def asymmetric_params(bits: int, sat_min: torch.Tensor, sat_max: torch.Tensor, signed: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``asymmetric_linear_quantization_params``: ``s = (2^b − 1)/(max' − min')``, ``zp = round(s·min')``
    (``+ 2^(b−1)`` signed)."""
    n = 2**bits - 1
    lo = torch.minimum(_f32(sat_min), torch.zeros(()))
    hi = torch.maximum(_f32(sat_max), torch.zeros(()))
    diff = hi - lo
    diff = torch.where(diff == 0, torch.full_like(diff, n), diff)
    scale = n / diff
    zp = torch.round(scale * lo)
    if signed:
        zp = zp + 2 ** (bits - 1)
    return scale, zp


def mode_params(bits: int, sat_min: torch.Tensor, sat_max: torch.Tensor, mode: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, zp)`` of a saturation range in one of Distiller's four modes (symmetric ones use ``max(|min|, |max|)``)."""
    if mode in ("SYMMETRIC", "SYMMETRIC_RESTRICTED"):
        sat = torch.maximum(_f32(sat_min).abs(), _f32(sat_max).abs())
        return symmetric_params(bits, sat, restrict=mode == "SYMMETRIC_RESTRICTED")
    return asymmetric_params(bits, sat_min, sat_max, signed=mode == "ASYMMETRIC_SIGNED")


def quantized_range(bits: int, mode: str) -> tuple[int, int]:
    """``get_quantized_range``: the integer codes a mode clamps to."""
    if mode == "ASYMMETRIC_UNSIGNED":
        return 0, 2**bits - 1
    qmax = 2 ** (bits - 1) - 1
    return (-qmax if mode == "SYMMETRIC_RESTRICTED" else -qmax - 1), qmax


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                  qrange: tuple[int, int] | None = None) -> torch.Tensor:
    """``(round(s·x − zp) + zp)/s`` (``linear_quantize`` [``_clamp``] then ``linear_dequantize``) with Distiller's
    ``LinearQuantizeSTE`` gradient: exactly the identity, also outside ``qrange`` (clamped only when given).

    ``scale``/``zero_point`` broadcast against ``x`` (a per-channel vector shaped ``[C, 1, ...]``).
    """
    xd = x.detach()
    q = torch.round(scale * xd - zero_point)
    if qrange is not None:
        q = torch.clamp(q, *qrange)
    value = (q + zero_point) / scale
    return value + (x - xd)  # the value to the bit, gradient exactly 1
