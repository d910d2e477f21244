"""Distiller's saturation ranges: the clip modes that turn a statistics record into ``(sat_min, sat_max)``.

The scale and zero point of a range, and the quantization itself, are in :mod:`.linear` (Distiller's arithmetic).

Clip modes (``range_linear.py``, ``_get_quant_params_from_stats_dict``) turn a statistics record into the
saturation range; GAUSS/LAPLACE are ACIQ (Banner et al. 2019, arXiv:1810.05723, Table 1 constants).
"""

from __future__ import annotations

from typing import Literal

import torch

from quantzoo import UnsupportedError
from quantzoo.errors import DataError

Mode = Literal["SYMMETRIC", "SYMMETRIC_RESTRICTED", "ASYMMETRIC_UNSIGNED", "ASYMMETRIC_SIGNED"]
ClipMode = Literal["NONE", "AVG", "N_STD", "GAUSS", "LAPLACE"]
CLIP_MODES: tuple[str, ...] = ("NONE", "AVG", "N_STD", "GAUSS", "LAPLACE")

# ACIQ multipliers α/b (Laplace) and α/σ (Gauss) per bit width, as in Distiller's AciqClipper; the
# "positive" tables are for half-range (post-ReLU) tensors.
ALPHA_LAPLACE = {0: 1.05, 1: 1.86, 2: 2.83, 3: 3.89, 4: 5.03, 5: 6.2, 6: 7.41, 7: 8.64, 8: 9.89}
ALPHA_LAPLACE_POSITIVE = {0: 1.86, 1: 2.83, 2: 3.89, 3: 5.02, 4: 6.2, 5: 7.41, 6: 8.64, 7: 9.89, 8: 11.16}
ALPHA_GAUSS = {1: 1.24, 2: 1.71, 3: 2.15, 4: 2.55, 5: 2.93, 6: 3.28, 7: 3.61, 8: 3.92}
ALPHA_GAUSS_POSITIVE = {1: 1.71, 2: 2.15, 3: 2.55, 4: 2.93, 5: 3.28, 6: 3.61, 7: 3.92, 8: 4.2}

STAT_KEYS = ("min", "max", "avg_min", "avg_max", "mean", "std", "b")


def is_symmetric(mode: str) -> bool:
    return mode in ("SYMMETRIC", "SYMMETRIC_RESTRICTED")


def _aciq_alpha(stats: dict, bits: int, laplace: bool, half_range: bool) -> torch.Tensor:
    table = (ALPHA_LAPLACE_POSITIVE if half_range else ALPHA_LAPLACE) if laplace else (
        ALPHA_GAUSS_POSITIVE if half_range else ALPHA_GAUSS)
    if bits not in table:
        raise UnsupportedError(f"ACIQ {'LAPLACE' if laplace else 'GAUSS'} clipping has constants for "
                               f"{min(table)}..8 bits, not {bits}; use clip_acts NONE/AVG/N_STD for this layer")
    spread = stats["b"] if laplace else stats["std"]
    return torch.as_tensor(float(spread) * table[bits])


def saturation_from_stats(stats: dict, bits: int, mode: str, clip: str, n_stds: float | None = None,
                          half_range: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The range ``(sat_min, sat_max)`` a clip mode takes from a Distiller stats record.

    NONE: ``(min, max)``; AVG: ``(avg_min, avg_max)``; N_STD: ``[max(min, μ−nσ), min(max, μ+nσ)]``;
    LAPLACE/GAUSS (ACIQ): ``α = k·b`` or ``k·σ``; symmetric modes clip at ``±(|μ|+α)``, asymmetric ones at
    ``lo = max(avg_min, μ−α)``, ``hi = lo + 2α`` (``lo + α`` for a half range, with the "positive" tables).
    """
    needed = {"NONE": ("min", "max"), "AVG": ("avg_min", "avg_max"), "N_STD": ("min", "max", "mean", "std"),
              "GAUSS": ("mean", "std", "avg_min"), "LAPLACE": ("mean", "b", "avg_min")}.get(clip)
    if needed is None:
        raise UnsupportedError(f"unknown clip mode {clip!r}; use one of {', '.join(CLIP_MODES)}")
    missing = [k for k in needed if k not in stats]
    if missing:
        raise DataError(f"activation stats lack {missing} needed by clip mode {clip}; collect them with "
                        "calibrate() (Distiller's QuantCalibrationStatsCollector format)")
    t = {k: torch.as_tensor(float(stats[k])) for k in needed}
    if clip == "NONE":
        return t["min"], t["max"]
    if clip == "AVG":
        return t["avg_min"], t["avg_max"]
    if clip == "N_STD":
        if n_stds is None or n_stds <= 0:
            raise UnsupportedError(f"clip_acts N_STD needs clip_n_stds > 0, got {n_stds}")
        return (torch.maximum(t["min"], t["mean"] - n_stds * t["std"]),
                torch.minimum(t["max"], t["mean"] + n_stds * t["std"]))
    laplace = clip == "LAPLACE"
    if is_symmetric(mode):
        alpha = _aciq_alpha(stats, bits, laplace, half_range=False)  # AciqSymmetricClipper ignores half range
        clip_val = t["mean"].abs() + alpha
        return -clip_val, clip_val
    alpha = _aciq_alpha(stats, bits, laplace, half_range)
    lo = torch.maximum(t["avg_min"], t["mean"] - alpha)
    return lo, lo + (alpha if half_range else 2 * alpha)


def tensor_stats(t: torch.Tensor) -> dict:
    """The stats record of one tensor, for dynamic (per-batch) quantization (Distiller's ``get_tensor_*``).

    ``avg_min``/``avg_max`` average the per-sample (dim 0) extremes; ``std`` is unbiased (``torch.std``);
    ``b = mean|x − μ|``.
    """
    t = t.detach().float()
    flat = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(1, -1)
    mean = t.mean()
    return {"min": t.min(), "max": t.max(), "avg_min": flat.min(dim=1).values.mean(),
            "avg_max": flat.max(dim=1).values.mean(), "mean": mean,
            "std": t.std() if t.numel() > 1 else torch.zeros(()), "b": (t - mean).abs().mean()}


def clip_stats(stats: dict, min_val: float, max_val: float) -> dict:
    """Distiller's ``_clip_stats`` for a layer followed by ReLU (``[0, max]``), ReLU6, Tanh (±4), Sigmoid (±6)."""
    out = dict(stats)
    if out["max"] < min_val:
        for k in ("min", "avg_min", "max", "avg_max"):
            out[k] = min_val
    elif out["min"] > max_val:
        for k in ("min", "avg_min", "max", "avg_max"):
            out[k] = max_val
    else:
        out["min"] = max(min_val, out["min"])
        out["avg_min"] = max(min_val, out["avg_min"])
        out["max"] = min(max_val, out["max"])
        out["avg_max"] = min(max_val, out["avg_max"])
    return out
