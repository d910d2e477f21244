"""HQQ's shrinkage and zero-point steps worked by hand (Badri & Shaji 2023; the official
optimize_weights_proximal_legacy), the min-max start, and the quantizer's grouping."""

import math

import pytest
import torch
from torch import nn

from quantzoo.errors import ConfigError, UnsupportedError
from quantzoo.math.hqq import hqq_quantize, shrink_lp
from quantzoo_plugin_hqq import HQQQuantizer

torch.set_num_threads(1)


def test_generalised_soft_thresholding_by_hand():
    # shrink_p(x, β) = sign(x)·relu(|x| - |x|^(p-1)/β), β = 10, p = 0.7:
    #   x = 0.5:   0.5^-0.3 = 1.231144, /10 = 0.1231144 → 0.5 - 0.1231144 = 0.3768856
    #   x = -0.05: 0.05^-0.3 = 2.456456, /10 = 0.245646 > 0.05 → 0 (small errors are treated as outliers-free)
    #   p = 1: relu(|x| - 1/β): 0.5 → 0.4, -0.05 → 0
    x = torch.tensor([0.5, -0.05])
    assert torch.allclose(shrink_lp(x, 10.0, 0.7), torch.tensor([0.5 - 0.5**-0.3 / 10, 0.0]), atol=1e-7)
    assert shrink_lp(x, 10.0, 0.7)[0].item() == pytest.approx(0.3768856, abs=1e-6)
    assert torch.allclose(shrink_lp(x, 10.0, 1.0), torch.tensor([0.4, 0.0]))


def test_zero_point_iterations_by_hand():
    # W = [0, 0.3, 1.0], 2 bits: s⁻¹ = 3/(1 - 0) = 3, z = -0·3 = 0.
    # iteration 0: W_q = round([0, 0.9, 3]) = [0, 1, 3], W_r = W_q/3 = [0, 1/3, 1], W - W_r = [0, -1/30, 0];
    #   shrink (β = 10): |-1/30|^-0.3/10 = 0.2774 > 1/30 → W_e = 0;
    #   z ← mean(W_q - (W - W_e)·s⁻¹) = mean([0, 1 - 0.9, 0]) = 1/30; error mean|W - W_r| = 1/90 = 0.011111
    # iteration 1 (β = 10.1): W_q = round([1/30, 0.9333, 3.0333]) = [0, 1, 3], W_r = ([0, 1, 3] - 1/30)/3,
    #   error = (1/90 + 2/90 + 1/90)/3 = 0.014815 ≥ 0.011111 → stop. The legacy solver has already updated
    #   z (to mean([0, 0.1, 0]) = 1/30 again) and returns it; the v2 ("best") returns z = 0 of iteration 0.
    W = torch.tensor([[0.0, 0.3, 1.0]])
    r = hqq_quantize(W, 2)
    assert r.errors == pytest.approx([1 / 90, 4 / 270], rel=1e-5)
    assert r.zero.item() == pytest.approx(1 / 30, rel=1e-5)
    assert torch.equal(r.codes, torch.tensor([[0.0, 1.0, 3.0]]))
    assert torch.allclose(r.dequantize(), (torch.tensor([[0.0, 1, 3]]) - 1 / 30) / 3)
    assert r.scale.item() == pytest.approx(1 / 3)
    assert hqq_quantize(W, 2, early_stop="best").zero.item() == 0.0


def test_no_optimisation_is_min_max_and_round_zero():
    # optimize=False: s⁻¹ = (2^b - 1)/(max - min), z = -min·s⁻¹ — plain asymmetric min-max without widening to 0
    W = torch.tensor([[0.2, 0.5, 0.9], [-1.0, 0.0, 0.5]])
    r = hqq_quantize(W, 2, optimize=False)
    assert torch.allclose(r.scale.flatten(), torch.tensor([0.7 / 3, 1.5 / 3]))
    assert torch.allclose(r.zero.flatten(), torch.tensor([-0.2 * 3 / 0.7, 3 / 1.5]))
    rz = hqq_quantize(W, 2, optimize=False, round_zero=True)
    assert torch.equal(rz.zero.flatten(), torch.tensor([-1.0, 2.0]))  # round(-0.857) = -1, round(2) = 2
    # a constant group: s⁻¹ clamped to 2e4 instead of dividing by zero
    assert hqq_quantize(torch.ones(1, 4), 4).scale.item() == pytest.approx(1 / 2e4)


def test_optimised_zero_lowers_the_lp_error_on_gaussian_groups():
    W = torch.randn(256, 64, generator=torch.Generator().manual_seed(0))
    err = {}
    for opt in (False, True):
        d = hqq_quantize(W, 3, optimize=opt).dequantize() - W
        err[opt] = float(d.abs().pow(0.7).sum())
    assert err[True] < err[False]


def test_quantizer_groups_and_bad_settings():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    q = HQQQuantizer(weight_bits=3, group_size=32)
    converted = q.convert(q.calibrate(q.prepare(model), [torch.randn(4, 64)]))
    lin = converted[0]
    assert lin.weight_bits == 3 and lin.weight_group_size == 32
    assert max(torch.unique(g).numel() for g in lin.weight.reshape(-1, 32)) <= 8
    assert isinstance(converted[2], nn.Linear)  # the head stays float, as the official lm_head skip
    expect = hqq_quantize(model[0].weight.detach().reshape(-1, 32), 3).dequantize().reshape(64 * 2, 64)
    assert torch.equal(lin.weight, expect.reshape(128, 64))
    with pytest.raises(ConfigError, match="group_size=48 does not divide the 64 inputs"):
        HQQQuantizer(group_size=48).prepare(model)
    with pytest.raises(UnsupportedError, match="activations float, not W4A"):
        HQQQuantizer.config_for_bits(4, 4)
    assert HQQQuantizer.config_for_bits(3, None).group_size is None
    assert math.isclose(HQQQuantizer.Config().lp_norm, 0.7)
