"""MSE observer: the clipping range that minimises the quantization error, found by a grid search."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..math.uniform import compute_qparams, fake_quantize, reduction_rows
from ..spec import QuantSpec
from .base import BatchMeanRangeObserver


def mse_clip_search(rows: torch.Tensor, spec: QuantSpec, ratios: torch.Tensor, p: float = 2.0):
    """Per row, the clip ratio ``α`` that minimises ``mean |x - Q(x; α·min, α·max)|^p``.

    ``Q`` is the spec's own fake-quantizer (same bits, sign, narrow range, symmetry and scale restriction,
    rounding to nearest even so the search is deterministic) with qparams from
    :func:`~quantzoo.math.compute_qparams` on the shrunk range ``[α·min_row, α·max_row]``. Ties go to the
    largest ``α`` (least clipping). Returns ``(lo, hi, err)``: the chosen range per row and its error.
    """
    row_spec = spec.model_copy(
        update={"granularity": "per_channel", "axis": 0, "group_size": None, "rounding": "nearest_even"}
    )
    lo0, hi0 = torch.aminmax(rows, dim=1)
    best_err = torch.full_like(lo0, float("inf"))
    best_lo, best_hi = lo0.clone(), hi0.clone()
    for a in sorted(ratios.tolist(), reverse=True):  # largest first: strict '<' keeps the widest on ties
        lo, hi = lo0 * a, hi0 * a
        scale, zp = compute_qparams(lo, hi, row_spec)
        err = (fake_quantize(rows, scale, zp, row_spec) - rows).abs().pow(p).mean(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo = torch.where(better, lo, best_lo)
        best_hi = torch.where(better, hi, best_hi)
    return best_lo, best_hi, best_err


class MSEObserver(BatchMeanRangeObserver):
    """Clip the min/max range by the ratio ``α`` that minimises the quantization MSE of the observed tensor.

    The candidates are ``α ∈ {1/n, 2/n, ..., 1}`` (``n=num_candidates``, default 100) applied to both ends
    of the range; each is scored with the spec's fake-quantizer, so narrow ranges, symmetric/asymmetric
    and power-of-two scales are searched as they will be used (the ``‖x - Q(x)‖²`` objective of Choukroun
    et al. 2019, arXiv:1902.06822; "MSE" range setting in Nagel et al. 2021, arXiv:2106.08295; MQBench's
    ``MSEObserver``). ``p`` generalises the error to ``|·|^p``.

    Per-tensor, per-channel and per-group (one search per row). Across batches the chosen ranges are
    averaged with equal weight (a cumulative mean of each batch's optimum, as the percentile observer
    does); for weights, which are observed as one tensor, this is the exact optimum.
    """

    name = "mse"
    aliases = ("mse_clip",)
    description = "Clip ratio of the min/max range minimising the quantization MSE (grid search)."

    def __init__(self, spec: QuantSpec, num_candidates: int = 100, p: float = 2.0):
        super().__init__(spec)
        if spec.dtype != "int":
            raise ConfigError(f"MSEObserver needs dtype 'int', not {spec.dtype!r}: use an integer QuantSpec")
        if num_candidates < 1:
            raise ConfigError(f"num_candidates={num_candidates} must be at least 1: e.g. num_candidates=100")
        if p <= 0:
            raise ConfigError(f"p={p} must be positive: p=2.0 is the mean squared error")
        self.num_candidates = int(num_candidates)
        self.p = float(p)

    def ratios(self) -> torch.Tensor:
        n = self.num_candidates
        return torch.arange(1, n + 1, dtype=torch.float64) / n

    def batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, shape = reduction_rows(x, self.spec)
        lo, hi, _ = mse_clip_search(rows, self.spec, self.ratios(), self.p)
        return lo.reshape(shape), hi.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.spec.describe()}, num_candidates={self.num_candidates}, p={self.p}"
