"""Backends: where converted models run."""

from .base import Backend, state_dict_bytes
from .fakequant import FakeQuantBackend
from .packed import PackedBackend

CORE_BACKENDS: list[type[Backend]] = [FakeQuantBackend, PackedBackend]

__all__ = ["CORE_BACKENDS", "Backend", "FakeQuantBackend", "PackedBackend", "state_dict_bytes"]
