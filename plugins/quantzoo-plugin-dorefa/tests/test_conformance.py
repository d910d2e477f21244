"""The conformance kit on the dorefa plugin (default config and the other settings it offers)."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_dorefa import DorefaQuantizer


@parametrize_with_checks([DorefaQuantizer, DorefaQuantizer(w_bits=1, a_bits=2, g_bits=4),
                          DorefaQuantizer(w_bits=2, a_bits=None, first_layer="int8")])
def test_conformance(quantizer, check):
    check(quantizer)
