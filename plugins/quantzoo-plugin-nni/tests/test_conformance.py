"""The quantzoo conformance kit on every NNI-style method."""

from quantzoo.testing import parametrize_with_checks

from quantzoo_plugin_nni import QUANTIZERS


@parametrize_with_checks(QUANTIZERS)
def test_conformance(quantizer, check):
    check(quantizer)
