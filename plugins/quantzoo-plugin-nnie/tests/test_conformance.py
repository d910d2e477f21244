"""The conformance kit on the NNIE method (8-bit default and the 16-bit mode)."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_nnie import NNIEQuantizer


@parametrize_with_checks([NNIEQuantizer, NNIEQuantizer(NNIEQuantizer.config_for_bits(16, 16))])
def test_conformance(quantizer, check):
    check(quantizer)
