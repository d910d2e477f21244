"""Bias correction's equations (Nagel et al. 2019, arXiv:1906.04721 §4.2) against values worked by hand."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantzoo import ConfigError
from quantzoo.nn.bias_correction import channel_mean, clipped_normal_mean, empirical_bias_shift, output_shift

PHI0 = 1.0 / math.sqrt(2.0 * math.pi)  # φ(0)


def test_relu_of_normal_mean_by_hand():
    # E[relu(X)], X ~ N(μ, σ²) = μ·Φ(μ/σ) + σ·φ(μ/σ):
    #   μ = 0, σ = 1: 0 + φ(0) = 0.3989423
    #   μ = 1, σ = 2: Φ(0.5) + 2·φ(0.5) = 0.6914625 + 2·0.3520653 = 1.3955931
    #   μ = −1, σ = 1: −Φ(−1) + φ(−1) = −0.1586553 + 0.2419707 = 0.0833155
    got = clipped_normal_mean(torch.tensor([0.0, 1.0, -1.0]), torch.tensor([1.0, 2.0, 1.0]))
    torch.testing.assert_close(got, torch.tensor([PHI0, 1.3955931, 0.0833155]), rtol=0, atol=1e-6)


def test_relu6_and_degenerate_cases_by_hand():
    # ReLU6 of N(3, 1): symmetric around 3 inside [0, 6], so the mean stays 3
    assert clipped_normal_mean(torch.tensor(3.0), torch.tensor(1.0), 0.0, 6.0).item() == pytest.approx(3.0, abs=1e-6)
    # ReLU6 of N(6, 2²): a = (0 − 6)/2 = −3, b = 0:
    #   E = μ(Φ(b) − Φ(a)) + σ(φ(a) − φ(b)) + 6(1 − Φ(b)) = 6 − 6Φ(−3) + 2φ(−3) − 2φ(0)
    #     = 6 − 0.0080994 + 0.0088636 − 0.7978846 = 5.2028796
    assert clipped_normal_mean(torch.tensor(6.0), torch.tensor(2.0), 0.0, 6.0).item() == pytest.approx(
        5.2028796, abs=1e-6)
    # σ = 0: clip(μ)
    assert clipped_normal_mean(torch.tensor([-2.0, 2.0, 9.0]), torch.zeros(3), 0.0, 6.0).tolist() == [0.0, 2.0, 6.0]
    with pytest.raises(ConfigError):
        clipped_normal_mean(torch.tensor(0.0), torch.tensor(1.0), 1.0, 0.0)


@settings(max_examples=25, deadline=None)
@given(mu=st.floats(-3, 3), sigma=st.floats(0.1, 3), hi=st.sampled_from([6.0, math.inf]))
def test_clipped_normal_mean_matches_numerical_integration(mu, sigma, hi):
    # E[clip(X, 0, hi)] = ∫ clip(x, 0, hi)·N(x; μ, σ²) dx on a fine grid over μ ± 10σ
    x = torch.linspace(mu - 10 * sigma, mu + 10 * sigma, 200001, dtype=torch.float64)
    pdf = torch.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    ref = torch.trapezoid(x.clamp(0.0, hi) * pdf, x).item()
    assert clipped_normal_mean(torch.tensor(mu), torch.tensor(sigma), 0.0, hi).item() == pytest.approx(ref, abs=1e-5)


def test_output_shift_linear_conv_and_groups_by_hand():
    # Linear: ε = [[1, −1], [0.5, 0]], E[x] = [2, 3] → ε·E[x] = [2 − 3, 1] = [−1, 1]
    eps = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    assert output_shift(eps, torch.tensor([2.0, 3.0])).tolist() == [-1.0, 1.0]
    # Conv2d 2→1, 2x2 kernel: kernel sums [1+1+1+1, 0.5·4] = [4, 2]; E[x] = [1, −1] → 4 − 2 = 2
    eps = torch.stack([torch.ones(2, 2), torch.full((2, 2), 0.5)]).unsqueeze(0)  # [1, 2, 2, 2]
    assert output_shift(eps, torch.tensor([1.0, -1.0])).tolist() == [2.0]
    # groups = 2 (depthwise, 2 channels): output o reads only input o → [4·1, 2·(−1)] = [4, −2]
    dw = torch.stack([torch.ones(1, 2, 2), torch.full((1, 2, 2), 0.5)])  # [2, 1, 2, 2]
    assert output_shift(dw, torch.tensor([1.0, -1.0]), groups=2).tolist() == [4.0, -1.0 * 2.0]
    with pytest.raises(ConfigError, match="one mean per input"):
        output_shift(eps, torch.tensor([1.0, 2.0, 3.0]))


def test_empirical_shift_is_the_mean_error_per_channel():
    # outputs N x C x L: channel 0 of the quantized output is +0.5 off everywhere, channel 1 is off by
    # +1 at one position of two → mean errors [0.5, 0.5]
    y = torch.randn(4, 2, 2)
    yq = y.clone()
    yq[:, 0] += 0.5
    yq[:, 1, 0] += 1.0
    torch.testing.assert_close(empirical_bias_shift(yq, y), torch.tensor([0.5, 0.5]))
    # subtracting it from the bias zeroes the mean error of every channel
    assert channel_mean(yq - empirical_bias_shift(yq, y).reshape(1, 2, 1) - y).abs().max() < 1e-6
    with pytest.raises(ConfigError, match="same layer"):
        empirical_bias_shift(torch.zeros(2, 3), torch.zeros(2, 4))


def test_linear_on_a_sequence_corrects_its_features_not_its_tokens():
    # a Linear on N x T x F: the shift is per feature (last axis), averaged over samples and tokens
    y = torch.zeros(2, 3, 4)
    yq = y + torch.tensor([0.0, 1.0, 2.0, 3.0])
    torch.testing.assert_close(empirical_bias_shift(yq, y, dim=-1), torch.tensor([0.0, 1.0, 2.0, 3.0]))
    torch.testing.assert_close(channel_mean(yq, dim=-1), torch.tensor([0.0, 1.0, 2.0, 3.0]))
