"""The conformance kit on the bnn plugin (default config and the other settings it offers)."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_bnn import BNNQuantizer


@parametrize_with_checks([BNNQuantizer, BNNQuantizer(input_batchnorm=True, first_layer="fp")])
def test_conformance(quantizer, check):
    check(quantizer)
