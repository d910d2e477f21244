"""`Observer`: collects statistics of a tensor and turns them into scale and zero-point for a `QuantSpec`."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..errors import DataError, NotCalibratedError
from ..math import compute_qparams
from ..spec import QuantSpec
from ..state_dict import AdoptSavedShapes


class Observer(AdoptSavedShapes, nn.Module):
    """Base class of every observer (core and third-party, all registered through ``register_observers``).

    Subclasses set ``name`` (a slug) and implement :meth:`observe` and :meth:`min_max`. Statistics live in
    buffers, so an observer survives ``state_dict`` save/load. Calling the module records ``x`` and returns
    it unchanged.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: QuantSpec):
        super().__init__()
        self.spec = spec
        self.register_buffer("num_batches", torch.zeros((), dtype=torch.int64))

    @property
    def has_stats(self) -> bool:
        """Whether at least one batch was observed."""
        return bool(self.num_batches.item() > 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            raise DataError(f"{type(self).__name__}: cannot observe an empty tensor")
        xd = x.detach().float()
        if not torch.isfinite(xd).all():
            raise DataError(
                f"{type(self).__name__}: the observed tensor contains NaN or Inf "
                f"(shape {tuple(x.shape)}); clean the calibration data"
            )
        self.observe(xd)
        self.num_batches += 1
        return x

    def observe(self, x: torch.Tensor) -> None:  # pragma: no cover - abstract
        """Update statistics with a finite float32 tensor."""
        raise NotImplementedError

    def min_max(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """The range ``(min, max)`` to quantize, at the spec's granularity."""
        raise NotImplementedError

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero-point for ``self.spec`` (raises :class:`NotCalibratedError` before any data)."""
        if not self.has_stats:
            raise NotCalibratedError(
                f"{type(self).__name__} has seen no data: run calibration batches through the prepared model "
                "before convert()"
            )
        lo, hi = self.min_max()
        return compute_qparams(lo, hi, self.spec)

    def extra_repr(self) -> str:
        return f"{self.spec.describe()}"


class BatchMeanRangeObserver(Observer):
    """An observer whose range is the equal-weight mean of one range per batch (the percentile and MSE
    observers): subclasses implement :meth:`batch_range`.

    The mean is cumulative, ``m_n = m_{n-1} + (r_n − m_{n-1})/n``: memory stays constant and one odd batch
    cannot dominate, but the result is the mean of the batch ranges, not the range of the union of batches.
    """

    def __init__(self, spec: QuantSpec):
        super().__init__(spec)
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    def batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """``(lo, hi)`` of one batch, at the spec's granularity."""
        raise NotImplementedError

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = self.batch_range(x)
        if not self.has_stats:
            self.min_val, self.max_val = lo, hi
        else:
            n = float(self.num_batches.item() + 1)  # batches including this one
            self.min_val = self.min_val + (lo - self.min_val) / n
            self.max_val = self.max_val + (hi - self.max_val) / n

    def min_max(self):
        return self.min_val, self.max_val
