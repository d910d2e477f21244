"""Min-max observers: the running extremes, and their exponential moving average."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..math import reduce_min_max
from ..spec import QuantSpec
from .base import Observer


class MinMaxObserver(Observer):
    """Running minimum and maximum over every observed batch (torch.ao ``MinMaxObserver`` /
    ``PerChannelMinMaxObserver``; Jacob et al. 2018, §3.1 for weights)."""

    name = "minmax"
    description = "Running min/max over all observed batches."

    def __init__(self, spec: QuantSpec):
        super().__init__(spec)
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = reduce_min_max(x, self.spec)
        if not self.has_stats:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = torch.minimum(self.min_val, lo)
            self.max_val = torch.maximum(self.max_val, hi)

    def min_max(self):
        return self.min_val, self.max_val


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of each batch's min and max, seeded with the first batch:
    ``m ← m + c·(batch_min − m)`` (torch.ao ``MovingAverageMinMaxObserver``, ``averaging_constant=c``;
    Jacob et al. 2018, §3.1 "exponential moving averages ... smoothing parameter close to 1" with ``1−c``)."""

    name = "moving_average_minmax"
    aliases = ("ema_minmax", "moving-average-minmax")
    description = "Exponential moving average of per-batch min/max (momentum = averaging constant)."

    def __init__(self, spec: QuantSpec, averaging_constant: float = 0.01):
        super().__init__(spec)
        if not 0.0 < averaging_constant <= 1.0:
            raise ConfigError(
                f"averaging_constant={averaging_constant} must lie in (0, 1]: e.g. averaging_constant=0.01"
            )
        self.averaging_constant = averaging_constant

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = reduce_min_max(x, self.spec)
        if not self.has_stats:
            self.min_val, self.max_val = lo, hi
        else:
            c = self.averaging_constant
            self.min_val = self.min_val + c * (lo - self.min_val)
            self.max_val = self.max_val + c * (hi - self.max_val)
