"""Every method of the plugin passes quantzoo's conformance kit (methods whose torch/torchao API is missing
in this environment are unavailable by design and are checked by test_unavailable_methods_say_why)."""

import pytest

from quantzoo.errors import UnsupportedError
from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_torch import QUANTIZERS

AVAILABLE = [q for q in QUANTIZERS if q.is_available()[0]]
UNAVAILABLE = [q for q in QUANTIZERS if not q.is_available()[0]]


@parametrize_with_checks(AVAILABLE)
def test_conformance(quantizer, check):
    check(quantizer)


@pytest.mark.parametrize("quantizer", UNAVAILABLE or [pytest.param(None, marks=pytest.mark.skip("all available"))])
def test_unavailable_methods_say_why(quantizer):
    from quantzoo import get_registry

    get_registry()  # registration marks the description
    _, why = quantizer.is_available()
    assert quantizer.description.startswith(f"[unavailable: {why}]")
    with pytest.raises(UnsupportedError, match="unavailable"):
        quantizer.config_for_bits(8, 8)
