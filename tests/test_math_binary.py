"""Binary and ternary primitives: sign(0) = +1, the gradient-cancelling STE, ternary codes (TWN)."""

from __future__ import annotations

import torch

from quantzoo.math import binarize, sign, ste, ternary_codes

torch.set_num_threads(1)


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([-3.0, -1e-30, -0.0, 0.0, 1e-30, 2.0])
    # -0.0 >= 0 is true in IEEE 754, so it maps to +1 like 0.
    assert sign(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]


def test_binarize_forward_and_cancelled_gradient():
    # Hubara et al. 2016 eq. 4: g_r = g_q · 1_{|r| ≤ 1}.
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0001, 3.0], requires_grad=True)
    y = binarize(x)
    assert y.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    y.backward(torch.arange(1.0, 9.0))
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]


def test_binarize_clip_variants():
    x = torch.tensor([-2.0, -0.5, 0.25, 0.75], requires_grad=True)
    binarize(x, clip=0.5).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]
    x.grad = None
    binarize(x, clip=None).sum().backward()  # plain identity STE
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_ternary_codes_by_hand():
    # Li & Liu 2016 eq. 3 with strict thresholds: +1 if x > Δ, -1 if x < -Δ, else 0. Δ = 0.5.
    x = torch.tensor([-1.0, -0.5, -0.3, 0.0, 0.3, 0.5, 0.7])
    assert ternary_codes(x, torch.tensor(0.5)).tolist() == [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_ternary_codes_twn_threshold_per_channel():
    # TWN: Δ = 0.7·E|w| per output channel. Row 0: E|w| = (1 + 0.2 + 0.5 + 0.3)/4 = 0.5 -> Δ = 0.35:
    # codes [1, 0, -1, 0]. Row 1: E|w| = (2 + 4 + 1 + 1)/4 = 2 -> Δ = 1.4: codes [1, -1, 0, 0].
    w = torch.tensor([[1.0, 0.2, -0.5, 0.3], [2.0, -4.0, 1.0, -1.0]])
    delta = 0.7 * w.abs().mean(dim=1, keepdim=True)
    assert ternary_codes(w, delta).tolist() == [[1.0, 0.0, -1.0, 0.0], [1.0, -1.0, 0.0, 0.0]]


def test_ste_forward_value_identity_gradient():
    x = torch.tensor([0.3, -1.2], requires_grad=True)
    y = ste(x, torch.tensor([5.0, 7.0]))
    assert y.tolist() == [5.0, 7.0]
    y.backward(torch.tensor([2.0, 3.0]))
    assert x.grad.tolist() == [2.0, 3.0]
