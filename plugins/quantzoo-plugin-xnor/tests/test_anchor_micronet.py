"""The paper's BWN/XNOR weights (this plugin) against micronet's (c31cdd2;
fixtures by ``plugins/quantzoo-plugin-dorefa/tests/anchors/make_micronet_refs.py``).

Rastegari et al. 2016 (arXiv:1603.05279) eq. 6: ``W ≈ α·sign(W)`` with ``α = mean|W|`` per output filter. micronet
first centres the weight on its mean over the *input-channel* axis and clamps it to [−1, 1] — in place, on the
parameter itself, in every forward pass — and binarizes that (``w_c``) with ``α = mean|w_c|``; its sign has an
identity STE (the plugin cancels it where |W| > 1). Both differentiate through α. Asserted below; micronet's
binary activations carry no K scaling map (eq. 11) either.
"""

from pathlib import Path

import torch

from torch import nn

from quantzoo.nn import BinaryWeight
from quantzoo_plugin_xnor import XnorInput

torch.set_num_threads(1)
R = torch.load(Path(__file__).parent / "anchors" / "micronet_refs.pt", weights_only=True)


def _sign(x):
    return torch.where(x >= 0, 1.0, -1.0)


def _per_filter_mean(x):
    return x.abs().mean(dim=(1, 2, 3), keepdim=True)


def test_micronet_centres_and_clamps_the_parameter():
    w = R["w"]
    w_c = torch.clamp(w - w.mean(dim=1, keepdim=True), -1.0, 1.0)
    torch.testing.assert_close(R["w_after"], w_c, rtol=0, atol=1e-7)  # the parameter itself was changed
    torch.testing.assert_close(R["out"], _sign(R["w_after"]) * _per_filter_mean(R["w_after"]), rtol=1e-6, atol=0)


def test_paper_weights_and_gradients_differ_as_documented():
    w, g = R["w"], R["upstream"]
    x = w.clone().requires_grad_()
    out = BinaryWeight("channel", clip=1.0, scale_grad=True)(x)
    out.backward(g)
    alpha = _per_filter_mean(w)
    torch.testing.assert_close(out, _sign(w) * alpha, rtol=1e-6, atol=0)  # eq. 6 on the uncentred weight
    assert not torch.allclose(out, R["out"])
    n = w[0].numel()
    through_alpha = (g * _sign(w)).sum(dim=(1, 2, 3), keepdim=True) * _sign(w) / n
    torch.testing.assert_close(x.grad, alpha * g * (w.abs() <= 1) + through_alpha, rtol=1e-5, atol=1e-6)
    w_c = R["w_after"]
    micronet_through_alpha = (g * _sign(w_c)).sum(dim=(1, 2, 3), keepdim=True) * _sign(w_c) / n
    torch.testing.assert_close(R["grad"], _per_filter_mean(w_c) * g + micronet_through_alpha, rtol=1e-5, atol=1e-6)


def test_micronet_activations_have_no_scaling_map():
    a = R["a"]
    assert torch.equal(R["act"], _sign(a))  # micronet: ±1 only
    xb, k = XnorInput(nn.Conv2d(3, 1, 3, padding=1)).scaled_forward(a)
    assert torch.equal(xb, R["act"]) and k.shape == (2, 1, 5, 5) and not torch.allclose(k, torch.ones_like(k))
