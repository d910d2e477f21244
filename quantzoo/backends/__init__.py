"""Backends: where converted models run."""

from .base import Backend, state_dict_bytes
from .fakequant import FakeQuantBackend

CORE_BACKENDS: list[type[Backend]] = [FakeQuantBackend]

__all__ = ["CORE_BACKENDS", "Backend", "FakeQuantBackend", "state_dict_bytes"]
