"""The conformance kit on awq and smoothquant (defaults and variants with groups, int8 edges, other α)."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_outlier import AWQQuantizer, SmoothQuantQuantizer


@parametrize_with_checks([AWQQuantizer, AWQQuantizer(weight_bits=3, group_size=4, zero_point=False, first_layer="int8",
                                                     last_layer="same"),
                          SmoothQuantQuantizer, SmoothQuantQuantizer(alpha=0.8, first_layer="int8",
                                                                     last_layer="int8")])
def test_conformance(quantizer, check):
    check(quantizer)
