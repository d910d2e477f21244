"""The conformance kit on both Brevitas-style methods."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_brevitas import BrevitasPTQ, BrevitasQAT


# Defaults, plus the binary (W1A4) and ternary weight-only (W2) settings the harness runs.
@parametrize_with_checks([BrevitasPTQ, BrevitasQAT, BrevitasQAT(BrevitasQAT.config_for_bits(1, 4)),
                          BrevitasQAT(BrevitasQAT.config_for_bits(2, None))])
def test_conformance(quantizer, check):
    check(quantizer)
