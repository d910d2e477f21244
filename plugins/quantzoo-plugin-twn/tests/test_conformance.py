"""The conformance kit on the twn plugin (default config and the other settings it offers)."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_twn import TWNQuantizer


@parametrize_with_checks([TWNQuantizer, TWNQuantizer(per_channel=True, activation_bits=8, last_layer="same")])
def test_conformance(quantizer, check):
    check(quantizer)
