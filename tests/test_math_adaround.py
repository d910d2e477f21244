"""AdaRound's equations (Nagel et al. 2020, arXiv:2004.10568 eqs. 22-24) against values worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from quantzoo import ConfigError, QuantSpec
from quantzoo.math import (adaround_fake_quantize, beta_schedule, compute_qparams, fake_quantize, init_rounding,
                           inverse_rectified_sigmoid, rectified_sigmoid, reduce_min_max, rounding_regularizer)

LOG3 = math.log(3.0)


def test_rectified_sigmoid_hand_values():
    # h(V) = clip(σ(V)·1.2 − 0.1, 0, 1):
    #   V = 0      → σ = 1/2  → 0.6 − 0.1 = 0.5
    #   V = log 3  → σ = 3/4  → 0.9 − 0.1 = 0.8
    #   V = −log 3 → σ = 1/4  → 0.3 − 0.1 = 0.2
    #   V = 5      → σ ≈ 0.9933 → 1.092 → clipped to 1;  V = −5 → −0.092 → 0
    v = torch.tensor([0.0, LOG3, -LOG3, 5.0, -5.0])
    torch.testing.assert_close(rectified_sigmoid(v), torch.tensor([0.5, 0.8, 0.2, 1.0, 0.0]), rtol=0, atol=1e-6)
    # the stretch reaches 0 and 1 at V = ∓log 11 (σ = 1/12 → 0.1 − 0.1 = 0; σ = 11/12 → 1.1 − 0.1 = 1)
    torch.testing.assert_close(rectified_sigmoid(torch.tensor([-math.log(11), math.log(11)])),
                               torch.tensor([0.0, 1.0]), rtol=0, atol=1e-6)


def test_inverse_rectified_sigmoid_hand_values():
    # V = −log(1.2/(h + 0.1) − 1): h = 0.8 → −log(1.2/0.9 − 1) = −log(1/3) = log 3; h = 0.5 → −log(1) = 0;
    # h = 0 → −log(12 − 1) = −log 11
    h = torch.tensor([0.8, 0.5, 0.0, 0.2])
    torch.testing.assert_close(inverse_rectified_sigmoid(h), torch.tensor([LOG3, 0.0, -math.log(11), -LOG3]),
                               rtol=0, atol=1e-6)


def test_regularizer_value_and_gradient_by_hand():
    # f_reg = Σ 1 − |2h − 1|^β.  At V = log 3: h = 0.8, 2h − 1 = 0.6:
    #   β = 2  → 1 − 0.36 = 0.64;   β = 20 → 1 − 0.6^20 = 1 − 3.6561584e-5
    # Gradient (chain rule, inside the clip): df/dV = −β·|2h−1|^(β−1)·sign(2h−1)·2·dh/dV,
    #   dh/dV = (ζ − γ)·σ(1 − σ) = 1.2·(3/4)(1/4) = 0.225  →  β = 2: −2·0.6·2·0.225 = −0.54
    v = torch.tensor([LOG3], requires_grad=True)
    f = rounding_regularizer(v, 2.0)
    f.backward()
    assert f.item() == pytest.approx(0.64, abs=1e-6)
    assert v.grad.item() == pytest.approx(-0.54, abs=1e-6)
    assert rounding_regularizer(torch.tensor([LOG3]), 20.0).item() == pytest.approx(1 - 0.6 ** 20, abs=1e-6)
    # β = 20: −20·0.6^19·2·0.225 = −9·0.6^19 = −5.4842e-4
    v = torch.tensor([LOG3], requires_grad=True)
    rounding_regularizer(v, 20.0).backward()
    assert v.grad.item() == pytest.approx(-9 * 0.6 ** 19, rel=1e-4)
    # h = 1/2 is the maximum (f = 1, zero gradient); a clipped h (0 or 1) costs nothing and gets no gradient
    v = torch.tensor([0.0, 5.0, -5.0], requires_grad=True)
    f = rounding_regularizer(v, 2.0)
    f.backward()
    assert f.item() == pytest.approx(1.0, abs=1e-6)
    assert v.grad.tolist() == [0.0, 0.0, 0.0]


def test_regularizer_pushes_towards_the_nearer_integer():
    # below 1/2 the gradient is positive (descent lowers V, h → 0), above it negative (h → 1)
    v = torch.tensor([-LOG3, LOG3], requires_grad=True)
    rounding_regularizer(v, 2.0).backward()
    assert v.grad[0] > 0 > v.grad[1]


def test_beta_schedule_linear_and_cosine_by_hand():
    # T = 100, warm-up 20 %: β = 20 until t = 20, then linear to 2 at t = 100:
    #   t = 60: rel = (60 − 20)/80 = 1/2 → 2 + 18·(1 − 1/2) = 11
    #   t = 80: rel = 3/4 → 2 + 18/4 = 6.5
    assert [beta_schedule(t, 100) for t in (1, 19, 20, 60, 80, 100)] == [20, 20, 20, 11, 6.5, 2]
    # cosine (AIMET): 2 + 9·(1 + cos(π·rel)); rel = 1/2 → 11, rel = 1/4 → 2 + 9·(1 + √2/2)
    assert beta_schedule(60, 100, kind="cosine") == pytest.approx(11.0)
    assert beta_schedule(40, 100, kind="cosine") == pytest.approx(2 + 9 * (1 + math.sqrt(0.5)))
    assert beta_schedule(100, 100, kind="cosine") == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="kind"):
        beta_schedule(1, 10, kind="exp")


SPEC4 = QuantSpec(bits=4)  # signed symmetric: codes −8..7


def test_adaround_fake_quantize_by_hand():
    # s = 0.5, Z = 0: W/s = [0.52, −1.48, 3.9·2 = 7.8]; ⌊W/s⌋ = [0, −2, 7]; fractional parts [0.52, 0.52, 0.8]
    w = torch.tensor([0.26, -0.74, 3.9])
    s, z = torch.tensor(0.5), torch.tensor(0, dtype=torch.int32)
    v = init_rounding(w, s, SPEC4)
    # soft at initialisation: h = fractional part, so W̃ = W inside the grid; 7.8 is clipped to code 7
    torch.testing.assert_close(adaround_fake_quantize(w, v, s, z, SPEC4, soft=True),
                               torch.tensor([0.26, -0.74, 3.5]), rtol=0, atol=1e-6)
    # hard at initialisation: all fractions ≥ 1/2 round up → codes [1, −1, 8 → clipped to 7]: round to nearest
    hard = adaround_fake_quantize(w, v, s, z, SPEC4, soft=False)
    assert hard.tolist() == [0.5, -0.5, 3.5]
    # a learned choice: V < 0 rounds down → codes [0, −2, 7]
    assert adaround_fake_quantize(w, -torch.ones(3), s, z, SPEC4, soft=False).tolist() == [0.0, -1.0, 3.5]


def test_adaround_gradient_reaches_v_only_in_soft_mode():
    # dW̃/dV = s·(ζ − γ)·σ(V)(1 − σ(V)) = 0.5·1.2·(1/4) at V = 0 → 0.15 (unclipped weight)
    w = torch.tensor([0.26])
    v = torch.zeros(1, requires_grad=True)
    zero_point = torch.tensor(0, dtype=torch.int32)
    adaround_fake_quantize(w, v, torch.tensor(0.5), zero_point, SPEC4, soft=True).sum().backward()
    assert v.grad.item() == pytest.approx(0.15, abs=1e-7)
    v2 = torch.zeros(1, requires_grad=True)
    out = adaround_fake_quantize(w, v2, torch.tensor(0.5), torch.tensor(0, dtype=torch.int32), SPEC4, soft=False)
    assert not out.requires_grad


@pytest.mark.parametrize("spec", [QuantSpec(bits=4, granularity="per_channel"),
                                  QuantSpec(bits=3, symmetric=False, granularity="per_channel"),
                                  QuantSpec(bits=8)])
def test_fresh_rounding_is_exactly_round_to_nearest(spec):
    # Hard rounding of a fresh V equals fake_quantize bit for bit, ties included: a symmetric grid puts
    # −max|W| at exactly −(2^(b−1) − 1/2) steps, which round-half-to-even sends to −2^(b−1).
    torch.manual_seed(0)
    w = torch.randn(16, 3, 3, 3)
    w[0, 0, 0, 0] = -w[0].abs().max() - 1.0  # a negative extreme: a tie on the symmetric grids
    s, z = compute_qparams(*reduce_min_max(w, spec), spec)
    v = init_rounding(w, s, spec)
    assert torch.equal(adaround_fake_quantize(w, v, s, z, spec, soft=False), fake_quantize(w, s, z, spec))


def test_shape_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match="init_rounding"):
        adaround_fake_quantize(torch.zeros(3), torch.zeros(2), torch.tensor(1.0), torch.tensor(0), SPEC4, soft=True)
