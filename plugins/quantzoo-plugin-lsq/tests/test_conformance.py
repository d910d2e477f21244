"""The conformance kit on lsq: the default (W4A4, 8-bit first/last) and W2A2 without the gradient scale."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_lsq import LSQQuantizer


@parametrize_with_checks([LSQQuantizer, LSQQuantizer(weight_bits=2, activation_bits=2, grad_scale=False,
                                                     first_layer="fp", last_layer="same")])
def test_conformance(quantizer, check):
    check(quantizer)
