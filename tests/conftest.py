"""Shared test set-up: one CPU thread (the machine is shared) and a registry that tests can rebuild."""

from __future__ import annotations

import pytest
import torch

from quantzoo.registry import reset_registry

torch.set_num_threads(1)


@pytest.fixture
def fresh_registry():
    """Drop the cached registry before and after the test (e.g. after it changed QUANTZOO_* variables or
    sys.path); ``quantzoo.get_registry()`` inside the test builds a new one."""
    reset_registry()
    yield
    reset_registry()
