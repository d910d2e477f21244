"""The statistics of the leaderboard: means over seeds with their 95% intervals, and paired comparisons.

Seeds pair rows: seed ``s`` of every method starts from the same FP checkpoint and sees the same
calibration samples, so two methods are compared on their per-seed differences, which cancels the noise of
the checkpoint. The intervals use Student's t (few seeds).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def t_quantile(dof: int, q: float = 0.975) -> float:
    """Student's t quantile (two-sided 95% by default) for ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(q, dof))


@dataclass(frozen=True)
class Summary:
    """Mean, sample sd and the half-width of the 95% interval of the mean (None with one value)."""

    mean: float
    sd: float
    ci95: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Summary":
        n = len(values)
        mean = statistics.fmean(values)
        if n < 2:
            return cls(mean, 0.0, None, n)
        sd = statistics.stdev(values)
        return cls(mean, sd, t_quantile(n - 1) * sd / math.sqrt(n), n)


def paired_better(a: dict, b: dict) -> bool | None:
    """Whether ``a`` is significantly better than ``b`` on their common keys (``(target, seed)`` → Δ): the 95%
    interval of the mean paired difference lies above 0. None with fewer than two common pairs."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return None
    s = Summary.of([a[k] - b[k] for k in common])
    return s.mean - s.ci95 > 0
