"""quantzoo.math.dorefa_weight / dorefa_codes (DoReFa-Net eq. 7-9, Zhou et al. 2016, arXiv:1606.06160): values
worked by hand for both rounding modes, the exact straight-through gradient, and the fake-quantizer identity of
"step_fp32"."""

import math

import pytest
import torch

from quantzoo.math import compute_qparams, dorefa_codes, dorefa_weight, fake_quantize, tanh_unit
from quantzoo.spec import QuantSpec

torch.set_num_threads(1)

# w = (0, 0.5, -1, 2): tanh = (0, .462117, -.761594, .964028), max|tanh| = .964028 (w = 2),
# u = tanh/(2·.964028) + ½ = (.5, .739681, .104994, 1.0). At 3 bits (n = 7): n·u = (3.5, 5.17777, .73496, 7).
W = torch.tensor([0.0, 0.5, -1.0, 2.0])


def test_half_even_by_hand():
    # 3.5 is an exact tie → even code 4; 5.178 → 5; .735 → 1; 7 → 7.  w_q = 2c/7 − 1 = (1/7, 3/7, −5/7, 1)
    assert dorefa_codes(W, 3).tolist() == [4.0, 5.0, 1.0, 7.0]
    assert torch.allclose(dorefa_weight(W, 3), torch.tensor([1 / 7, 3 / 7, -5 / 7, 1.0]), rtol=0, atol=1e-7)
    # the value is Distiller's arithmetic, 2·(c/7) − 1, to the bit
    assert torch.equal(dorefa_weight(W, 3), 2 * (torch.tensor([4.0, 5.0, 1.0, 7.0]) / 7) - 1)


def test_step_fp32_is_one_code_lower_at_zero():
    # fl(1/7) = 0.142857149..., 1/fl(1/7) rounds to 6.9999995 in float32: 0.5·6.9999995 = 3.4999998 → 3.
    assert float(torch.tensor(1.0) / (torch.tensor(1.0) / 7)) < 7.0
    assert dorefa_codes(W, 3, "step_fp32").tolist() == [3.0, 5.0, 1.0, 7.0]
    assert dorefa_weight(W, 3, "step_fp32")[0].item() == pytest.approx(-1 / 7, abs=1e-7)
    for bits in (2, 3, 4, 8):  # w = 0 at every width: +1/n (half_even) vs −1/n (step_fp32); 2 bits has no gap
        n = 2**bits - 1
        z = torch.zeros(1)
        even, fp32 = dorefa_weight(z, bits).item(), dorefa_weight(z, bits, "step_fp32").item()
        if bits == 2:  # 3·½ = 1.5 and fl(1/fl(1/3))·½ both round to 2
            assert even == fp32 == pytest.approx(1 / 3)
        else:
            assert (even, fp32) == pytest.approx((1 / n, -1 / n), abs=1e-6)


def test_step_fp32_equals_the_affine_fake_quantizer():
    torch.manual_seed(0)
    w = torch.randn(20000)
    for bits in (2, 3, 4, 5, 8):
        spec = QuantSpec(bits=bits, signed=False, symmetric=False)
        scale, zp = compute_qparams(torch.tensor(0.0), torch.tensor(1.0), spec)
        assert torch.equal(dorefa_weight(w, bits, "step_fp32"), 2 * fake_quantize(tanh_unit(w), scale, zp, spec) - 1)
    # NNI's narrow int8 target: 254 steps, zero point −127
    spec = QuantSpec(bits=8, signed=True, symmetric=False, narrow=True)
    scale, zp = compute_qparams(torch.tensor(0.0), torch.tensor(1.0), spec)
    assert torch.equal(dorefa_weight(w, 8, "step_fp32", levels=254),
                       2 * fake_quantize(tanh_unit(w), scale, zp, spec) - 1)


def test_gradient_is_that_of_2u_minus_1():
    torch.manual_seed(1)
    w = torch.randn(6, 5)
    g = torch.randn(6, 5)
    for rounding in ("half_even", "step_fp32"):
        a = w.clone().requires_grad_()
        (dorefa_weight(a, 4, rounding) * g).sum().backward()
        b = w.clone().requires_grad_()
        ((2 * tanh_unit(b) - 1) * g).sum().backward()
        assert torch.equal(a.grad, b.grad)  # straight through the rounding, exactly


def test_one_bit_by_hand():
    # eq. 7: E|w| = (0 + .5 + 1 + 2)/4 = 0.875, sign(0) = +1 → (.875, .875, −.875, .875); eq. 8: identity gradient
    w = W.clone().requires_grad_()
    out = dorefa_weight(w, 1)
    assert out.tolist() == [0.875, 0.875, -0.875, 0.875]
    (out * torch.arange(4.0)).sum().backward()
    assert torch.equal(w.grad, torch.arange(4.0))


def test_errors():
    with pytest.raises(ValueError, match="rounding"):
        dorefa_codes(W, 3, "nearest")
    with pytest.raises(ValueError, match="bits >= 2"):
        dorefa_codes(W, 1)
    assert math.isclose(dorefa_weight(torch.zeros(3), 3).sum().item(), 3 / 7, rel_tol=1e-6)  # all-zero: no 0/0
