"""Observers: statistics → scale/zero-point. The core's are registered through ``register_observers``."""

from .base import BatchMeanRangeObserver, Observer
from .histogram import KLObserver, kl_threshold_bins
from .minmax import MinMaxObserver, MovingAverageMinMaxObserver
from .mse import MSEObserver, mse_clip_search
from .percentile import PercentileObserver, row_percentile

CORE_OBSERVERS: list[type[Observer]] = [
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PercentileObserver,
    MSEObserver,
    KLObserver,
]

__all__ = [
    "BatchMeanRangeObserver",
    "CORE_OBSERVERS",
    "KLObserver",
    "MSEObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "Observer",
    "PercentileObserver",
    "kl_threshold_bins",
    "mse_clip_search",
    "row_percentile",
]
