"""Registry-parametrized conformance: the kit runs over EVERY registered quantizer, so each installed
plugin is exercised without anyone writing a test for it (as timm tests every registered model)."""

from __future__ import annotations

from quantzoo import get_registry
from quantzoo.testing import parametrize_with_checks

_REGISTRY = get_registry()
QUANTIZERS = [_REGISTRY.get("quantizer", name) for name in _REGISTRY.names("quantizer")]


def test_registry_has_quantizers():
    assert "uniform" in _REGISTRY.names("quantizer")


@parametrize_with_checks(QUANTIZERS)
def test_conformance(quantizer, check):
    check(quantizer)
