"""The conformance kit on adaround, brecq and qdrop. The core's kit run covers the default configs; these
instances add short budgets (so each check takes well under a second) with the other layer policies."""

import torch

from quantzoo.testing import parametrize_with_checks
from quantzoo_plugin_reconstruct import AdaRoundQuantizer, BRECQQuantizer, QDropQuantizer

torch.set_num_threads(1)


@parametrize_with_checks([
    AdaRoundQuantizer(iterations=16, first_layer="fp", last_layer="int8"),
    BRECQQuantizer(iterations=16, first_layer="int8", last_layer="fp", activation=None),
    QDropQuantizer(iterations=16, block_layers=1, act_scale_lr=1e-3),
])
def test_conformance(quantizer, check):
    check(quantizer)
