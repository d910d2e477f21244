"""The paper's TWN (this plugin) against micronet's ternary weights (c31cdd2;
fixtures by ``plugins/quantzoo-plugin-dorefa/tests/anchors/make_micronet_refs.py``).

micronet computes Δ = 0.7·E|W| and α = mean |W| over |W| > Δ per output channel like ``per_channel=True`` here,
and differs from Li & Liu 2016 (arXiv:1605.04711) in two documented places, asserted below:

* at ``|w| = Δ`` its code ``sign(sign(w + Δ) + sign(w − Δ))`` is ``±1`` (eq. 3: ``t = +1`` only if ``w > Δ``: 0);
  α still leaves that weight out, so it becomes ``±α``;
* its gradient is not the paper's straight-through ``∂L/∂W = ∂L/∂W_t``: it scales by α and differentiates through
  α, ``∂L/∂w_i = α·g_i + (Σ_j g_j·t_j)·sign(w_i)·1{|w_i| > Δ}/|I_Δ|`` per channel.
"""

from pathlib import Path

import torch

from quantzoo_plugin_twn import TernaryWeight

torch.set_num_threads(1)
R = torch.load(Path(__file__).parent / "anchors" / "micronet_refs.pt", weights_only=True)


def _channel_stats(w):
    a = w.abs().reshape(w.shape[0], -1)
    delta = (0.7 * a.mean(dim=1)).reshape(-1, 1, 1, 1)
    mask = w.abs() > delta
    count = mask.reshape(w.shape[0], -1).sum(dim=1).reshape(-1, 1, 1, 1).float()
    alpha = (w.abs() * mask).reshape(w.shape[0], -1).sum(dim=1).reshape(-1, 1, 1, 1) / count
    return delta, mask, count, alpha


def test_values_differ_only_at_the_threshold():
    w, ref = R["w"], R["out"]
    delta, mask, _, alpha = _channel_stats(w)
    at_delta = w.abs() == delta
    assert int(at_delta.sum()) == 2  # one weight of channels 0 and 1 (0.7 and −0.7) sits exactly on Δ
    mine = TernaryWeight(per_channel=True)(w)
    assert torch.equal(mine[~at_delta], ref[~at_delta])
    assert (mine[at_delta] == 0).all()  # eq. 3
    micronet_code = torch.sign(torch.sign(w + delta) + torch.sign(w - delta))
    assert torch.equal(ref, micronet_code * alpha)  # ±α at |w| = Δ
    assert torch.equal(ref[at_delta], torch.sign(w[at_delta]) * alpha.expand_as(w)[at_delta])


def test_gradient_scaled_and_through_alpha():
    w, g = R["w"], R["upstream"]
    delta, mask, count, alpha = _channel_stats(w)
    t = torch.sign(torch.sign(w + delta) + torch.sign(w - delta))
    through_alpha = (g * t).reshape(w.shape[0], -1).sum(dim=1).reshape(-1, 1, 1, 1) * torch.sign(w) * mask / count
    torch.testing.assert_close(R["grad"], alpha * g + through_alpha, rtol=1e-5, atol=1e-6)
    x = w.clone().requires_grad_()
    TernaryWeight(per_channel=True)(x).backward(g)
    assert torch.equal(x.grad, g)  # the paper: straight through
    assert not torch.allclose(R["grad"], g)


def test_layer_placement():
    # micronet ternarizes Conv2d only and keeps the first and last conv FP (the plugin's default first/last "fp"
    # keeps the first and last compute layer FP, here the first conv and the Linear); the ReLUs after the first
    # conv become its ActivationQuantizer, a plain ReLU with float activations (A=32)
    assert R["prepared_types"] == ["Conv2d", "ActivationQuantizer", "QuantConv2d", "ActivationQuantizer", "Conv2d",
                                   "ReLU", "Flatten", "Linear"]
