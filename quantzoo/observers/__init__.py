"""Observers: statistics → scale/zero-point. The core's are registered through ``register_observers``."""

from .base import Observer
from .minmax import MinMaxObserver, MovingAverageMinMaxObserver

CORE_OBSERVERS: list[type[Observer]] = [MinMaxObserver, MovingAverageMinMaxObserver]

__all__ = ["CORE_OBSERVERS", "MinMaxObserver", "MovingAverageMinMaxObserver", "Observer"]
