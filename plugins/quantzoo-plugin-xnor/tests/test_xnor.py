"""XNOR-Net / BWN against values worked out by hand from Rastegari et al. 2016 (arXiv:1603.05279)."""

import pytest
import torch
from torch import nn

from quantzoo.errors import UnsupportedError
from quantzoo.nn import BinaryWeight
from quantzoo_plugin_xnor import XnorInput, XnorQuantizer


def test_bwn_weights_by_hand():
    # eq. 6 per output filter: α_0 = (0.5 + 1 + 0)/3 = 0.5, α_1 = (0.2 + 0.4 + 0.6)/3 = 0.4
    # sign (sign(0)=+1): [[+1, -1, +1], [-1, +1, +1]] → W̃ = α·sign(W)
    w = torch.tensor([[0.5, -1.0, 0.0], [-0.2, 0.4, 0.6]])
    out = BinaryWeight("channel", clip=1.0, scale_grad=True)(w)
    assert torch.allclose(out, torch.tensor([[0.5, -0.5, 0.5], [-0.4, 0.4, 0.4]]), atol=1e-7)


X_IN = torch.tensor([[[[1.0, -2.0, 3.0], [0.0, 1.0, -1.0], [2.0, 2.0, -2.0]],
                   [[-1.0, 0.0, 1.0], [2.0, -3.0, 1.0], [0.0, 2.0, 0.0]]]])
W = torch.tensor([[[[0.5, -1.0], [0.25, 0.25]], [[-0.5, 0.5], [1.0, -1.0]]]])


def _xnor_conv():
    conv = nn.Conv2d(2, 1, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(W)
    return conv


def test_scaling_map_by_hand():
    # A = (|I_0| + |I_1|)/2 = [[1, 1, 2], [1, 2, 1], [1, 2, 1]]
    # K = A ⊛ (2×2 box of 1/4): [[(1+1+1+2)/4, (1+2+2+1)/4], [(1+2+1+2)/4, (2+1+2+1)/4]] = [[1.25, 1.5], [1.5, 1.5]]
    xb, K = XnorInput(_xnor_conv()).scaled_forward(X_IN)
    assert torch.allclose(K, torch.tensor([[[[1.25, 1.5], [1.5, 1.5]]]]))
    assert torch.equal(xb, torch.where(X_IN >= 0, 1.0, -1.0))


def test_xnor_conv_by_hand():
    # α = mean|W| = (0.5+1+0.25+0.25+0.5+0.5+1+1)/8 = 0.625; sign(W)_0 = [[1,-1],[1,1]], sign(W)_1 = [[-1,1],[1,-1]]
    # sign(X_IN)_0 = [[1,-1,1],[1,1,-1],[1,1,-1]], sign(X_IN)_1 = [[-1,1,1],[1,-1,1],[1,1,1]]
    # sign(X_IN) ⊛ sign(W) = [[4+4, -2-2], [2-2, 2+2]] = [[8, -4], [0, 4]]
    # eq. 11: (sign(X_IN) ⊛ sign(W)) ⊙ K·α = [[8·1.25, -4·1.5], [0, 4·1.5]]·0.625 = [[6.25, -3.75], [0, 3.75]]
    q = XnorQuantizer(first_layer="same", last_layer="same")
    layer = q.prepare(nn.Sequential(_xnor_conv()))[0]
    out = layer(X_IN)
    assert torch.allclose(out, torch.tensor([[[[6.25, -3.75], [0.0, 3.75]]]]), atol=1e-6)


def test_linear_beta_by_hand():
    # binary dot product: β = mean|x| = (1 + 2 + 0.5 + 0.5)/4 = 1; sign(x) = (1, -1, 1, -1)
    # W = (0.2, 0.2, -0.6, 0.2): α = 0.3, sign(W) = (1, 1, -1, 1); sign(x)·sign(W) = 1-1-1-1 = -2 → -2·0.3·1 = -0.6
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.2, 0.2, -0.6, 0.2]]))
    layer = XnorQuantizer(first_layer="same", last_layer="same").prepare(nn.Sequential(lin))[0]
    out = layer(torch.tensor([[1.0, -2.0, 0.5, -0.5]]))
    assert torch.allclose(out, torch.tensor([[-0.6]]), atol=1e-6)


def test_block_order_on_zoo_style_model():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    xnor = XnorQuantizer().prepare(model)
    assert isinstance(xnor[2], nn.Identity)  # BN → (pool) → sign → BinConv: the sign is the nonlinearity
    assert isinstance(xnor[6], nn.ReLU)  # after the last binary layer: feeds only the real-valued last layer
    assert isinstance(xnor[4].input_quantizer, XnorInput)
    bwn = XnorQuantizer(binary_activations=False).prepare(model)
    assert isinstance(bwn[2], nn.ReLU) and bwn[4].input_quantizer is None


def test_config_for_bits():
    assert XnorQuantizer.config_for_bits(1, None).binary_activations is False
    assert XnorQuantizer.config_for_bits(1, 1).binary_activations is True
    for bits in ((2, None), (1, 2), (4, 4)):
        with pytest.raises(UnsupportedError):
            XnorQuantizer.config_for_bits(*bits)
