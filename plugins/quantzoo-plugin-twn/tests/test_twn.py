"""TWN against values worked out by hand from Li & Liu 2016 (arXiv:1605.04711) eq. 3, 9, 10."""

import pytest
import torch
from torch import nn

import quantzoo
from quantzoo.errors import ConfigError, UnsupportedError
from quantzoo_plugin_twn import TernaryWeight, TWNQuantizer

W = torch.tensor([[0.1, -0.5, 0.9, -0.05],
                  [0.3, 0.0, -0.7, 0.2]])


def test_per_layer_by_hand():
    # |W| = .1 .5 .9 .05 .3 0 .7 .2, Σ = 2.75, E|W| = 0.34375, Δ = 0.7·0.34375 = 0.240625      (eq. 9)
    # |W| > Δ: {.5, .9, .3, .7} → α = 2.4 / 4 = 0.6                                             (eq. 10)
    # t = [[0, -1, +1, 0], [+1, 0, -1, 0]]                                                       (eq. 3)
    expected = torch.tensor([[0.0, -0.6, 0.6, 0.0], [0.6, 0.0, -0.6, 0.0]])
    out = TernaryWeight()(W)
    assert torch.allclose(out, expected, atol=1e-7)
    codes = TernaryWeight().encode(W)
    assert torch.equal(codes.codes, torch.tensor([[1.0, 0, 2, 1], [2, 1, 0, 1]]))  # c = t + 1
    assert codes.bits == 2 and torch.isclose(codes.scale, torch.tensor(0.6))


def test_per_channel_by_hand():
    # row 0: Σ|w| = 1.55, Δ0 = 0.7·0.3875 = 0.27125, |w| > Δ0: {.5, .9} → α0 = 0.7
    # row 1: Σ|w| = 1.2,  Δ1 = 0.7·0.3    = 0.21,    |w| > Δ1: {.3, .7} → α1 = 0.5 (0.2 < 0.21 → 0)
    expected = torch.tensor([[0.0, -0.7, 0.7, 0.0], [0.5, 0.0, -0.5, 0.0]])
    assert torch.allclose(TernaryWeight(per_channel=True)(W), expected, atol=1e-7)


def test_straight_through_gradient():
    w = W.clone().requires_grad_()
    g = torch.arange(8.0).reshape(2, 4)
    (TernaryWeight()(w) * g).sum().backward()
    assert torch.equal(w.grad, g)  # ∂L/∂W = ∂L/∂W_t (STE)


def test_config_for_bits_and_errors():
    assert TWNQuantizer.config_for_bits(2, None).activation_bits is None
    assert TWNQuantizer.config_for_bits(2, 8).activation_bits == 8
    for bits in ((1, None), (4, 4), (2, 2)):
        with pytest.raises(UnsupportedError):
            TWNQuantizer.config_for_bits(*bits)
    with pytest.raises(ConfigError, match="activation_bits"):
        TWNQuantizer(activation_bits=4)


def test_all_fp_policy_is_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedError, match="first_layer"):
        TWNQuantizer().prepare(model)


def test_converted_layers_hold_three_values():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    q = quantzoo.get_quantizer("twn")()
    prepared = q.prepare(model)
    prepared._quantzoo_trained = True
    converted = q.convert(prepared)
    body = converted[2]
    assert body.weight_bits == 2 and torch.unique(body.weight).numel() <= 3
    assert not hasattr(converted[0], "weight_bits") or converted[0].weight_bits is None  # first layer FP
