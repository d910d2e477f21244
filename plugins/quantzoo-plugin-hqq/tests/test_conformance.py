"""The conformance kit on hqq: the default (4 bits, groups of 64) and per-row 3-bit with the v2 early stop."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_hqq import HQQQuantizer


@parametrize_with_checks([HQQQuantizer, HQQQuantizer(weight_bits=3, group_size=None, early_stop="best",
                                                     first_layer="int8", last_layer="int8")])
def test_conformance(quantizer, check):
    check(quantizer)
