"""DoReFa-Net against values worked out by hand from Zhou et al. 2016 (arXiv:1606.06160)."""

import math

import pytest
import torch
from torch import nn

from quantzoo.errors import ConfigError, UnsupportedError
from quantzoo.nn import BinaryWeight
from quantzoo_plugin_dorefa import DorefaActivation, DorefaGradient, DorefaQuantizer, DorefaWeight
from quantzoo_plugin_dorefa.quantizer import quantize_gradient


def test_kbit_weights_by_hand():
    # eq. 9, k = 2 (n = 3): tanh(0, .5, -1, 2) = (0, .462117, -.761594, .964028); max|tanh| = .964028
    # w' = tanh/(2·.964028) + ½ = (.5, .739681, .104994, 1.0); n·w' = (1.5, 2.21904, .31498, 3.0)
    # round half to even (tf.round) → (2, 2, 0, 3); r_o = 2·c/3 − 1 = (1/3, 1/3, −1, 1)
    w = torch.tensor([0.0, 0.5, -1.0, 2.0])
    t = [math.tanh(v) for v in (0.0, 0.5, -1.0, 2.0)]
    assert abs(t[1] / (2 * t[3]) + 0.5 - 0.739681) < 1e-6 and abs(t[2] / (2 * t[3]) + 0.5 - 0.104994) < 1e-6
    out = DorefaWeight(2)(w)
    assert torch.allclose(out, torch.tensor([1 / 3, 1 / 3, -1.0, 1.0]), atol=1e-6)
    assert torch.equal(DorefaWeight(2).encode(w).codes, torch.tensor([2.0, 2.0, 0.0, 3.0]))


def test_one_bit_weights_by_hand():
    # eq. 7: E|w| = (.2 + .4 + 0 + .6)/4 = 0.3 → 0.3·sign(w) = (.3, −.3, .3, .3)  (sign(0)=+1)
    # eq. 8: ∂c/∂r_i = ∂c/∂r_o → the upstream gradient passes unchanged
    w = torch.tensor([0.2, -0.4, 0.0, 0.6], requires_grad=True)
    out = BinaryWeight("layer", clip=None, scale_grad=False)(w)
    assert torch.allclose(out, torch.tensor([0.3, -0.3, 0.3, 0.3]))
    (out * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert torch.equal(w.grad, torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_activations_by_hand():
    # eq. 11, k = 2: clamp(x,0,1) = (0, .1, .2, .5, .9, 1); ×3 = (0, .3, .6, 1.5, 2.7, 3)
    # round (half to even) = (0, 0, 1, 2, 3, 3); /3 = (0, 0, 1/3, 2/3, 1, 1); gradient = clamp mask
    x = torch.tensor([-0.3, 0.1, 0.2, 0.5, 0.9, 1.7], requires_grad=True)
    out = DorefaActivation(2)(x)
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]))
    out.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.0]))
    # micronet's quirk 0.1·x: clamp(0.1·(5, 17)) = (.5, 1) → (2/3, 1)
    assert torch.allclose(DorefaActivation(2, prescale=0.1)(torch.tensor([5.0, 17.0])), torch.tensor([2 / 3, 1.0]))


def test_gradient_quantization_by_hand():
    # eq. 12, k = 2 (n = 3), max₀ per sample.
    # sample 0: g = (.4, −.2, .1, −.1), max = .4; g/(2·.4) + ½ = (1, .25, .625, .375)
    #   σ = (0, .3, −.45, .2) → +σ/3 = (1, .35, .475, .441667); ×3 = (3, 1.05, 1.425, 1.325) → (3, 1, 1, 1)
    #   → /3 − ½ = (½, −1/6, −1/6, −1/6) → ×2·.4 = (.4, −.133333, −.133333, −.133333)
    # sample 1: g = (0, 1, −1, .5), max = 1, σ = 0: (.5, 1, 0, .75)·3 = (1.5, 3, 0, 2.25) → (2, 3, 0, 2)
    #   → (1/6, ½, −½, 1/6)·2 = (1/3, 1, −1, 1/3)
    g = torch.tensor([[0.4, -0.2, 0.1, -0.1], [0.0, 1.0, -1.0, 0.5]])
    noise = torch.tensor([[0.0, 0.3, -0.45, 0.2], [0.0, 0.0, 0.0, 0.0]])
    expected = torch.tensor([[0.4, -2 / 15, -2 / 15, -2 / 15], [1 / 3, 1.0, -1.0, 1 / 3]])
    assert torch.allclose(quantize_gradient(g, 2, noise), expected, atol=1e-6)


def test_gradient_quantizer_is_identity_forward_and_quantizes_backward():
    torch.manual_seed(0)
    x = torch.randn(3, 5, requires_grad=True)
    gq = DorefaGradient(2)
    y = gq(x)
    assert torch.equal(y, x)
    upstream = torch.randn(3, 5)
    y.backward(upstream)
    # every gradient lies on the 4-level grid 2·max₀·(c/3 − ½), c ∈ {0..3}
    m = upstream.abs().amax(dim=1, keepdim=True)
    codes = (x.grad / (2 * m) + 0.5) * 3
    assert torch.allclose(codes, codes.round(), atol=1e-5) and codes.min() >= -1e-5 and codes.max() <= 3 + 1e-5


def test_independent_bits_and_layer_roles():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    p = DorefaQuantizer(weight_bits=1, activation_bits=2, gradient_bits=6).prepare(model)
    body = p[2]
    assert isinstance(body.weight_quantizer, BinaryWeight) and body.input_quantizer.bits == 2
    assert body.output_quantizer.gradient_bits == 6
    assert not hasattr(p[0], "weight_quantizer") and not hasattr(p[4], "weight_quantizer")  # first/last FP
    p8 = DorefaQuantizer(weight_bits=3, activation_bits=None, first_layer="int8").prepare(model)
    assert p8[0].weight_quantizer.bits == 8 and p8[2].input_quantizer is None and p8[2].weight_quantizer.bits == 3


def test_config_for_bits_and_errors():
    assert DorefaQuantizer.config_for_bits(1, 2).weight_bits == 1
    assert DorefaQuantizer.config_for_bits(8, None).activation_bits is None
    with pytest.raises(UnsupportedError):
        DorefaQuantizer.config_for_bits(16, 16)
    with pytest.raises(ConfigError, match="weight_bits"):
        DorefaQuantizer(weight_bits=0)
