"""Percentile observer: clip the range at a high percentile of the data instead of its extremes."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..math.uniform import reduction_rows
from ..spec import QuantSpec
from .base import BatchMeanRangeObserver


def row_percentile(rows: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-th percentile (0..100) of each row, linearly interpolated between order statistics.

    Same definition as ``numpy.percentile``/``torch.quantile`` (method "linear"): position
    ``h = (n-1)·q/100`` in the sorted row, value ``v[⌊h⌋] + (h-⌊h⌋)·(v[⌊h⌋+1] - v[⌊h⌋])``. Uses
    ``kthvalue`` (no sort, no 16M-element limit as ``torch.quantile`` has).
    """
    n = rows.shape[1]
    h = (n - 1) * q / 100.0
    k = int(h)
    frac = h - k
    lo = rows.kthvalue(k + 1, dim=1).values  # kthvalue is 1-based
    if frac == 0.0 or k + 1 >= n:
        return lo
    hi = rows.kthvalue(k + 2, dim=1).values
    return lo + frac * (hi - lo)


class PercentileObserver(BatchMeanRangeObserver):
    """Range ``[P_{100-p}(x), P_p(x)]``: the ``p``-th and ``(100-p)``-th percentiles instead of max and min.

    Clipping at a percentile trades a little clipping error on rare outliers for a finer step on the bulk
    of the values (percentile calibration of activations, 99.9 to 99.9999, in Wu et al. 2020,
    arXiv:2004.09602; Brevitas' ``ParamFromRuntimePercentileScaling`` uses 99.999).

    Aggregation across batches: the percentiles of each batch are averaged with equal weight (a cumulative
    mean, as Brevitas averages its per-step runtime statistics) rather than taken over the union of all
    batches: memory stays constant and one odd batch cannot dominate, but the result is the mean of batch
    percentiles, not the percentile of the whole calibration set. Per-tensor, per-channel and per-group.
    """

    name = "percentile"
    description = "Range clipped at the p-th / (100-p)-th percentile (default 99.99), averaged over batches."

    def __init__(self, spec: QuantSpec, percentile: float = 99.99):
        super().__init__(spec)
        if not 50.0 < percentile <= 100.0:
            raise ConfigError(f"percentile={percentile} must lie in (50, 100]: e.g. percentile=99.99")
        self.percentile = float(percentile)

    def batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, shape = reduction_rows(x, self.spec)
        lo = row_percentile(rows, 100.0 - self.percentile).reshape(shape)
        hi = row_percentile(rows, self.percentile).reshape(shape)
        return lo, hi

    def extra_repr(self) -> str:
        return f"{self.spec.describe()}, percentile={self.percentile}"
