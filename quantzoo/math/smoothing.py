"""SmoothQuant's migration scale: move activation outliers into the weights with an exact channel rescaling.

Xiao, Lin, Seznec, Wu, Demouth & Han 2023, "SmoothQuant", arXiv:2211.10438, eq. 3-4:
``Y = (X·diag(s)⁻¹)·(diag(s)·W)`` and, per input channel ``j``,

    s_j = max|X_j|^α / max|W_j|^(1−α)

with the migration strength ``α`` (0.5 by default). As the official ``smooth.py::smooth_ln_fcs``: the weight
statistic is clamped to ``≥ 1e-5`` before the power and ``s`` to ``≥ 1e-5`` after it.
"""

from __future__ import annotations

import torch


def smooth_scales(act_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """``s_j = max|X_j|^α / max|W_j|^(1−α)`` (eq. 4), one value per input channel."""
    w = weight_absmax.float().clamp(min=1e-5)
    return (act_absmax.float().pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)
