"""The conformance kit on gptq: the default config and the grouped, act-order, symmetric variants."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_gptq import GPTQQuantizer


@parametrize_with_checks([GPTQQuantizer, GPTQQuantizer(weight_bits=3, group_size=4, act_order=True, static_groups=True,
                                                       sym=True, first_layer="int8", last_layer="same")])
def test_conformance(quantizer, check):
    check(quantizer)
