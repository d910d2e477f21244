"""Every method of the plugin passes quantzoo's conformance kit."""

from quantzoo.testing import parametrize_with_checks

from quantzoo_plugin_torch import QUANTIZERS


@parametrize_with_checks(QUANTIZERS)
def test_conformance(quantizer, check):
    check(quantizer)
