"""The conformance kit on the xnor plugin (default config and the other settings it offers)."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_xnor import XnorQuantizer


@parametrize_with_checks([XnorQuantizer, XnorQuantizer(binary_activations=False),
                          XnorQuantizer(input_batchnorm=True, last_layer="int8")])
def test_conformance(quantizer, check):
    check(quantizer)
