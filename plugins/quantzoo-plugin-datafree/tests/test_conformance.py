"""The conformance kit on dfq and bias-correction (defaults, plus the analytic and layer-policy variants)."""

import torch

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_datafree import BiasCorrectionQuantizer, DFQQuantizer

torch.set_num_threads(1)


@parametrize_with_checks([DFQQuantizer, BiasCorrectionQuantizer,
                          BiasCorrectionQuantizer(bias_correction="analytic", first_layer="fp", last_layer="int8")])
def test_conformance(quantizer, check):
    check(quantizer)
