"""KL/entropy observer: TensorRT's entropy calibration on a 2048-bin histogram of |x|."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, UnsupportedError
from ..spec import QuantSpec
from .base import Observer


def kl_threshold_bins(hist: np.ndarray, num_levels: int) -> int:
    """Number of histogram bins ``i`` to keep (threshold at the upper edge of bin ``i-1``) minimising
    ``KL(P‖Q)`` (Migacz 2017, "8-bit Inference with TensorRT", GTC, the entropy-calibration pseudo-code).

    For each ``i`` from ``num_levels`` to ``len(hist)``:

    * ``P`` = ``hist[:i]`` with the outliers ``sum(hist[i:])`` added to its last bin;
    * ``Q`` = ``hist[:i]`` merged into ``num_levels`` chunks of ``i // num_levels`` bins (the remainder goes
      to the last chunk, as MXNet's ``_get_optimal_threshold``), each chunk's count spread evenly over
      the bins where ``P`` is non-zero (bins where ``P`` is zero stay zero);
    * both normalised; ``KL = Σ_{P>0} P·log(P/Q)``, infinite where ``P>0`` and ``Q=0``.

    ``i = len(hist)`` (no clipping) is a candidate, so a histogram without outliers keeps its full range.
    No smoothing is applied (infinite candidates simply lose). The first minimum wins.
    """
    hist = np.asarray(hist, dtype=np.float64)
    n = hist.size
    if num_levels >= n:
        return n
    tail = np.cumsum(hist[::-1])[::-1]  # tail[i] = sum(hist[i:])
    best_i, best_kl = n, np.inf
    for i in range(num_levels, n + 1):
        sliced = hist[:i]
        p = sliced.copy()
        if i < n:
            p[-1] += tail[i]
        total = p.sum()
        if total == 0:
            continue
        merged = i // num_levels
        starts = np.arange(num_levels) * merged
        chunk_sum = np.add.reduceat(sliced, starts)
        nonzero = p != 0
        chunk_nz = np.add.reduceat(nonzero.astype(np.float64), starts)
        per_bin = np.divide(chunk_sum, chunk_nz, out=np.zeros_like(chunk_sum), where=chunk_nz > 0)
        chunk_of_bin = np.minimum(np.arange(i) // merged, num_levels - 1)
        q = np.where(nonzero, per_bin[chunk_of_bin], 0.0)
        if np.any(nonzero & (q == 0)):
            continue  # KL is infinite
        pn, qn = p[nonzero] / total, q[nonzero] / q.sum()
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i


class KLObserver(Observer):
    """Entropy calibration (TensorRT): the symmetric threshold ``T`` whose clipped, quantized distribution of
    ``|x|`` is closest to the original in KL divergence (Migacz 2017; Wu et al. 2020, arXiv:2004.09602).

    Statistics: a histogram of ``|x|`` with ``bins`` (default 2048) equal bins on ``[0, R]``, plus the
    running min/max. ``R`` is the first batch's ``max|x|``; when a later batch exceeds it, ``R`` doubles
    as often as needed and every ``2^k`` old bins merge exactly into one new bin, so the histogram is the
    exact histogram of all batches on the final bin grid (up to bin-edge rounding of earlier batches).

    The number of quantized levels that cover ``[0, T]`` is the spec's: ``qmax+1`` for symmetric specs
    (128 for int8, as TensorRT), all ``qmax-qmin+1`` levels for an asymmetric spec on non-negative data,
    half of them otherwise. The range is the observed one clipped at ``±T``. Per-tensor only: a per-channel
    or per-group spec raises :class:`~quantzoo.errors.UnsupportedError` at construction (one histogram per
    channel would cost ``C·bins`` memory and ``C`` searches; use ``mse`` or ``percentile`` instead).
    """

    name = "kl"
    aliases = ("entropy", "kl_entropy")
    description = "TensorRT entropy calibration: KL-optimal threshold on a 2048-bin |x| histogram (per-tensor)."

    def __init__(self, spec: QuantSpec, bins: int = 2048):
        super().__init__(spec)
        if spec.dtype != "int":
            raise ConfigError(f"KLObserver needs dtype 'int', not {spec.dtype!r}: use an integer QuantSpec")
        if spec.granularity != "per_tensor":
            raise UnsupportedError(
                f"KLObserver is per-tensor only, not granularity={spec.granularity!r}: use "
                "granularity='per_tensor', or the 'mse'/'percentile' observer for per-channel ranges"
            )
        if bins < 2 or bins & (bins - 1):
            raise ConfigError(f"bins={bins} must be a power of two (exact re-binning): e.g. bins=2048")
        self.bins = int(bins)
        self.register_buffer("histogram", torch.zeros(self.bins, dtype=torch.int64))
        self.register_buffer("hist_max", torch.tensor(0.0))
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self._cache: tuple[int, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _widen(self, new_max: float) -> None:
        """Grow ``R`` by ``2^k`` to cover ``new_max``, merging every ``2^k`` bins (exact)."""
        r = float(self.hist_max)
        k = 0
        while r * 2**k < new_max:
            k += 1
        f = 2**k
        if f >= self.bins:
            merged = torch.zeros_like(self.histogram)
            merged[0] = self.histogram.sum()
        else:
            merged = torch.zeros_like(self.histogram)
            merged[: self.bins // f] = self.histogram.reshape(-1, f).sum(dim=1)
        self.histogram = merged
        self.hist_max = torch.tensor(r * f)

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = torch.aminmax(x)
        amax = float(torch.maximum(-lo, hi))
        if not self.has_stats:
            self.min_val, self.max_val = lo, hi
            self.hist_max = torch.tensor(amax)
        else:
            self.min_val, self.max_val = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)
            if amax > float(self.hist_max):
                if float(self.hist_max) == 0.0:  # only zeros so far: they stay in bin 0 of any grid
                    self.hist_max = torch.tensor(amax)
                else:
                    self._widen(amax)
        r = float(self.hist_max)
        a = x.abs().reshape(-1)
        if r > 0:
            idx = torch.clamp((a * (self.bins / r)).long(), max=self.bins - 1)
        else:  # all zeros so far: everything in bin 0
            idx = torch.zeros_like(a, dtype=torch.int64)
        self.histogram = self.histogram + torch.bincount(idx, minlength=self.bins)

    def num_levels(self) -> int:
        """Quantized levels covering ``[0, T]`` (see the class docstring)."""
        s = self.spec
        if s.symmetric:
            return s.qmax + 1
        if float(self.min_val) >= 0:
            return s.qmax - s.qmin + 1
        return (s.qmax - s.qmin + 1) // 2

    def threshold(self) -> float:
        """The KL-optimal clipping threshold ``T`` on ``|x|``."""
        i = kl_threshold_bins(self.histogram.numpy(), self.num_levels())
        return float(self.hist_max) * i / self.bins

    def min_max(self):
        key = int(self.num_batches)
        if self._cache is None or self._cache[0] != key:
            t = torch.tensor(self.threshold())
            self._cache = (key, (torch.maximum(self.min_val, -t), torch.minimum(self.max_val, t)))
        return self._cache[1]

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache = None  # the loaded statistics replace the ones the cached threshold came from
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.spec.describe()}, bins={self.bins}"
