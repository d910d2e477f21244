"""The conformance kit on the dorefa plugin (default config and the other settings it offers)."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_dorefa import DorefaQuantizer


@parametrize_with_checks([DorefaQuantizer, DorefaQuantizer(weight_bits=1, activation_bits=2, gradient_bits=4),
                          DorefaQuantizer(weight_bits=2, activation_bits=None, first_layer="int8")])
def test_conformance(quantizer, check):
    check(quantizer)
