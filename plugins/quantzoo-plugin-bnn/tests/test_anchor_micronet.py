"""The paper's BNN (this plugin) against micronet's binary functions (c31cdd2;
fixtures by ``plugins/quantzoo-plugin-dorefa/tests/anchors/make_micronet_refs.py``).

Both binarize with ``sign(0) = +1`` (Hubara et al. 2016, arXiv:1602.02830 eq. 1). The straight-through gradients
differ, as asserted below: eq. 4 keeps the gradient where ``|r| ≤ 1``, micronet's activation zeroes it from
``|x| ≥ 1`` on (so also at exactly ±1), and micronet's weight gradient is never cancelled (the plugin's is beyond
|w| > 1; micronet clamps its binarized weights to [−1, 1] before, so that never occurs there).
"""

from pathlib import Path

import torch

from quantzoo.nn import BinaryActivation, BinaryWeight

torch.set_num_threads(1)
R = torch.load(Path(__file__).parent / "anchors" / "micronet_refs.pt", weights_only=True)


def _run(module):
    x = R["x"].clone().requires_grad_()
    out = module(x)
    out.backward(R["upstream"])
    return out.detach(), x.grad


def test_activation_values_equal_gradient_differs_at_one():
    out, grad = _run(BinaryActivation(None, clip=1.0))
    assert torch.equal(out, R["activation"]["out"])  # sign(0) = +1 in both
    x, g = R["x"], R["upstream"]
    assert torch.equal(grad, g * (x.abs() <= 1))  # eq. 4
    assert torch.equal(R["activation"]["grad"], g * (x.abs() < 1))  # micronet: zero at |x| >= 1
    assert torch.equal(grad != R["activation"]["grad"], x.abs() == 1)  # they part exactly at ±1


def test_weight_values_equal_gradient_differs_beyond_one():
    out, grad = _run(BinaryWeight("none", clip=1.0))
    assert torch.equal(out, R["weight"]["out"])
    x, g = R["x"], R["upstream"]
    assert torch.equal(R["weight"]["grad"], g)  # micronet: identity
    assert torch.equal(grad, g * (x.abs() <= 1))
