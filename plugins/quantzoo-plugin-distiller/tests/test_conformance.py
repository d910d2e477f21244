"""The quantzoo conformance kit on every Distiller-style method."""

from quantzoo.testing import parametrize_with_checks

from quantzoo_plugin_distiller import QUANTIZERS


@parametrize_with_checks(QUANTIZERS)
def test_conformance(quantizer, check):
    check(quantizer)
