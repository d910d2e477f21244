"""Straight-through estimators and LSQ's learnable step size: gradients worked out by hand from
Esser et al. 2020 (arXiv:1902.08153) eq. 3 and the LSQ+ offset (Bhalgat et al. 2020)."""

from __future__ import annotations

import math

import pytest
import torch

from quantzoo.math import grad_scale, lsq_fake_quantize, lsq_grad_factor, round_ste
from quantzoo.math.straight_through import stochastic_round_ste
from quantzoo.spec import QuantSpec

torch.set_num_threads(1)


def test_round_ste_rounds_half_to_even_and_passes_gradient():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 0.49, 2.51], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == [0.0, 2.0, 2.0, -0.0, -2.0, 0.0, 3.0]
    y.backward(torch.arange(1.0, 8.0))
    assert x.grad.tolist() == list(range(1, 8))  # identity gradient


def test_stochastic_round_ste_values_and_gradient():
    torch.manual_seed(0)
    x = torch.full((10000,), 2.25, requires_grad=True)
    y = stochastic_round_ste(x)
    assert set(y.unique().tolist()) == {2.0, 3.0}
    # P(up) = 0.25; std of the mean sqrt(0.25·0.75/1e4) = 0.0043, 5 sigma.
    assert abs(y.mean().item() - 2.25) < 5 * math.sqrt(0.1875 / 1e4)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_grad_scale_keeps_value_scales_gradient():
    s = torch.tensor([0.5, 2.0], requires_grad=True)
    y = grad_scale(s, 0.1)
    assert torch.equal(y, s.detach())
    y.backward(torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(s.grad, torch.tensor([0.1, 0.3]))


def test_lsq_grad_factor_formula():
    # g = 1/sqrt(N·Q_P): 100 weights at 8 bits signed (Q_P = 127) -> 1/sqrt(12700).
    assert lsq_grad_factor(100, 127) == pytest.approx(1 / math.sqrt(12700))
    assert lsq_grad_factor(5, 7) == pytest.approx(1 / math.sqrt(35))


def test_lsq_gradients_by_hand():
    # int4 signed: Q_N = 8 (qmin = -8), Q_P = 7. s = 0.5, x = [0.6, -1.3, 5.0, -6.0, 0.25].
    # x/s = [1.2, -2.6, 10, -12, 0.5]:
    #   forward  round(clip(x/s))·s = [1, -3, 7, -8, 0]·0.5 = [0.5, -1.5, 3.5, -4.0, 0.0]
    #   ∂x̂/∂s (Esser et al. eq. 3) = -x/s + round(x/s) inside, -Q_N or Q_P outside:
    #       [-1.2 + 1, 2.6 - 3, 7, -8, -0.5 + 0] = [-0.2, -0.4, 7, -8, -0.5]
    #   ∂x̂/∂x = 1 inside, 0 outside: [1, 1, 0, 0, 1]
    # With upstream gradient w = [1, 2, 3, 4, 5]:
    #   ds = g · Σ w_i ∂x̂_i/∂s = g · (-0.2 - 0.8 + 21 - 32 - 2.5) = -14.5·g, g = 1/sqrt(5·7).
    spec = QuantSpec(bits=4)
    x = torch.tensor([0.6, -1.3, 5.0, -6.0, 0.25], requires_grad=True)
    s = torch.tensor(0.5, requires_grad=True)
    y = lsq_fake_quantize(x, s, spec)
    torch.testing.assert_close(y, torch.tensor([0.5, -1.5, 3.5, -4.0, 0.0]))
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    torch.testing.assert_close(s.grad, torch.tensor(-14.5 / math.sqrt(35)), rtol=1e-5, atol=1e-7)
    assert x.grad.tolist() == [1.0, 2.0, 0.0, 0.0, 5.0]


def test_lsq_per_channel_scale_gets_per_channel_gradient():
    # Two channels of 2 values; g = 1/sqrt(2·7) (N counts the elements that share one step size).
    # channel 0, s = 1: x/s = [0.4, 9] -> [-0.4 + 0, 7]; channel 1, s = 2: x/s = [-1.25, -0.75] ->
    # [1.25 - 1, 0.75 - 1] = [0.25, -0.25].
    spec = QuantSpec(bits=4, granularity="per_channel", axis=0)
    x = torch.tensor([[0.4, 9.0], [-2.5, -1.5]])
    s = torch.tensor([1.0, 2.0], requires_grad=True)
    lsq_fake_quantize(x, s, spec).sum().backward()
    g = 1 / math.sqrt(14)
    torch.testing.assert_close(s.grad, torch.tensor([6.6 * g, 0.0]), rtol=1e-5, atol=1e-7)


def test_lsq_plus_zero_point_gradient():
    # x̂ = (round(clip(x/s + z)) - z)·s. Inside the range ∂x̂/∂z = s·(1 - 1) = 0 (STE through both
    # roundings); clipped, x̂ = (q_bound - z)·s so ∂x̂/∂z = -s. uint4 [0, 15], s = 0.5, z = 3:
    # x/s + z = [4, 23, -5] -> inside, above, below -> dz = g·(0 - 0.5 - 0.5) = -g, g = 1/sqrt(3·15).
    spec = QuantSpec(bits=4, signed=False, symmetric=False)
    x = torch.tensor([0.5, 10.0, -4.0])
    s = torch.tensor(0.5, requires_grad=True)
    z = torch.tensor(3.0, requires_grad=True)
    y = lsq_fake_quantize(x, s, spec, zero_point=z)
    # forward: codes [4, 15, 0] - 3 = [1, 12, -3], times 0.5
    torch.testing.assert_close(y, torch.tensor([0.5, 6.0, -1.5]))
    y.sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor(-1.0 / math.sqrt(45)))


def test_lsq_matches_fake_quantize_forward():
    # Same step size -> the same values as the fused fake-quantizer (clip-then-round = round-then-clip for
    # integer bounds).
    from quantzoo.math import fake_quantize

    spec = QuantSpec(bits=8)
    x = torch.randn(2000) * 3
    s = torch.tensor(0.0625)  # a power of two: x/s and x·(1/s) are the same float
    want = fake_quantize(x, s, torch.tensor(0, dtype=torch.int32), spec)
    assert torch.equal(lsq_fake_quantize(x, s, spec), want)


def test_round_clamp_fake_quantize_gradients_by_hand():
    # s = 0.5, signed 4-bit [-8, 7]. x/s = [1.2, 7.4, 7.6, -8.4, -8.6]:
    #   round: [1, 7, 8, -8, -9] → clamp: [1, 7, 7, -8, -8] → x̂ = [0.5, 3.5, 3.5, -4, -4].
    # Round then clamp: ∂x̂/∂x = 1 where round(x/s) ∈ [-8, 7] (7.4 and -8.4 included: half a step outside
    # the range still passes), 0 where it does not (7.6 → 8, -8.6 → -9).
    # ∂x̂/∂s = round(x/s) − x/s inside: [-0.2, -0.4]; 7 and -8 outside.
    spec = QuantSpec(bits=4)
    x = torch.tensor([0.6, 3.7, 3.8, -4.2, -4.3], requires_grad=True)
    s = torch.tensor(0.5, requires_grad=True)
    from quantzoo.math import round_clamp_fake_quantize

    y = round_clamp_fake_quantize(x, s, spec)
    assert torch.allclose(y, torch.tensor([0.5, 3.5, 3.5, -4.0, -4.0]))
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 1.0, 0.0]
    want_s = (1 - 1.2) + (7 - 7.4) + 7 + (-8 + 8.4) + (-8)
    assert s.grad.item() == pytest.approx(want_s, abs=1e-5)
    # clamp_ste: identity gradient for x everywhere, ∂x̂/∂s = clamp(round(x/s)) − x/s everywhere.
    x.grad = s.grad = None
    round_clamp_fake_quantize(x, s, spec, clamp_ste=True).sum().backward()
    assert x.grad.tolist() == [1.0] * 5
    want_s = (1 - 1.2) + (7 - 7.4) + (7 - 7.6) + (-8 + 8.4) + (-8 + 8.6)
    assert s.grad.item() == pytest.approx(want_s, abs=1e-5)
    # LSQ clamps first: the same values, but 7.4 and -8.4 lose their gradient.
    x.grad = None
    lsq_fake_quantize(x, s.detach(), spec, grad_factor=1.0).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
