"""The conformance kit on pact: the default (W4A4) and W3 weights with float activations, int8 edges."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_pact import PACTQuantizer


@parametrize_with_checks([PACTQuantizer, PACTQuantizer(weight_bits=3, activation_bits=None, first_layer="int8",
                                                       last_layer="int8")])
def test_conformance(quantizer, check):
    check(quantizer)
