"""The conformance kit on quantnoise (scalar int8 and int4 per channel) and quantnoise-ipq."""

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_quantnoise import IPQQuantizer, ScalarNoiseQuantizer


@parametrize_with_checks([ScalarNoiseQuantizer, ScalarNoiseQuantizer(weight_bits=4, method="channel", update_step=1,
                                                                     first_layer="int8", last_layer="fp"),
                          IPQQuantizer, IPQQuantizer(p=0.3, n_centroids=4, first_layer="int8")])
def test_conformance(quantizer, check):
    check(quantizer)
