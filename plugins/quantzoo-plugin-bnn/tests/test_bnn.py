"""BNN against values worked out by hand from Hubara/Courbariaux et al. 2016 (arXiv:1602.02830)."""

import pytest
import torch
from torch import nn

from quantzoo.errors import UnsupportedError
from quantzoo.nn import BinaryActivation, BinaryWeight
from quantzoo_plugin_bnn import BNNQuantizer


def test_sign_weights_and_saturating_ste_by_hand():
    # eq. 1: sign(0.3, -0.2, 0.0, -1.5) = (+1, -1, +1, -1)   (sign(0) = +1)
    # eq. 4: g_r = g_q·1_{|r|≤1} → (1, 1, 1, 0) for an all-ones upstream gradient
    w = torch.tensor([0.3, -0.2, 0.0, -1.5], requires_grad=True)
    out = BinaryWeight("none", clip=1.0)(w)
    assert torch.equal(out, torch.tensor([1.0, -1.0, 1.0, -1.0]))
    out.sum().backward()
    assert torch.equal(w.grad, torch.tensor([1.0, 1.0, 1.0, 0.0]))


def test_sign_activations_by_hand():
    # x = (-2, -0.5, 0, 0.7, 3) → (-1, -1, +1, +1, +1); gradient cancelled at |x| > 1 → (0, 1, 1, 1, 0)
    x = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0], requires_grad=True)
    out = BinaryActivation(None, clip=1.0)(x)
    assert torch.equal(out, torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0]))
    out.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))


def _mlp():
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))


def test_block_order_and_first_layer_input():
    torch.manual_seed(0)
    prepared = BNNQuantizer(last_layer="same").prepare(_mlp())  # the paper: all binary
    assert isinstance(prepared[2], nn.Identity)               # ReLU removed: sign is the nonlinearity
    assert prepared[0].input_quantizer is None                # first layer sees the real input (Alg. 1)
    assert isinstance(prepared[3].input_quantizer, BinaryActivation)
    # forward by hand: a_1 = BN(W_b x + b), a_b = sign(a_1), out = W2_b a_b + b2
    x = torch.randn(5, 4)
    prepared.eval()
    l1, bn, l2 = prepared[0], prepared[1], prepared[3]
    h = bn(x @ torch.where(l1.weight >= 0, 1.0, -1.0).T + l1.bias)
    ref = torch.where(h >= 0, 1.0, -1.0) @ torch.where(l2.weight >= 0, 1.0, -1.0).T + l2.bias
    assert torch.allclose(prepared(x), ref, atol=1e-6)


def test_latent_weights_clipped_after_step():
    q = BNNQuantizer()
    prepared = q.prepare(_mlp())
    with torch.no_grad():
        prepared[0].weight.fill_(3.0)
        prepared[0].weight[0, 0] = -0.5
    q.after_optimizer_step(prepared)
    assert prepared[0].weight.max() == 1.0 and prepared[0].weight[0, 0] == -0.5


def test_config_for_bits():
    assert isinstance(BNNQuantizer.config_for_bits(1, 1), BNNQuantizer.Config)
    for bits in ((1, None), (2, 2), (8, 8)):
        with pytest.raises(UnsupportedError):
            BNNQuantizer.config_for_bits(*bits)
