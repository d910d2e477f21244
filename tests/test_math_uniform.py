"""Uniform affine quantization: bit-for-bit agreement with torch's fused kernels (forward and gradient, fused
and reference path), and qparams / codes worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from quantzoo.errors import ConfigError, DataError
from quantzoo.math import (
    compute_qparams,
    dequantize,
    expand_qparam,
    fake_quantize,
    quantize,
    reduce_min_max,
    reduction_rows,
    round_to_power_of_two,
    uses_fused_kernel,
)
from quantzoo.math.uniform import _FakeQuantSTE
from quantzoo.spec import QuantSpec

torch.set_num_threads(1)

EIGHT_BIT = [
    QuantSpec(bits=8, signed=False, symmetric=False),  # quint8 affine [0, 255]
    QuantSpec(bits=8, signed=True, symmetric=False),  # qint8 affine [-128, 127]
    QuantSpec(bits=8, signed=True, symmetric=True),  # qint8 symmetric
    QuantSpec(bits=8, signed=True, symmetric=True, narrow=True),  # [-127, 127]
    QuantSpec(bits=8, signed=False, symmetric=True),  # unsigned symmetric (ReLU outputs)
]


def _data(shape, scale_like, gen):
    """Random values plus exact half-step ties and far out-of-range values: the cases where rounding and
    clamping conventions show."""
    x = torch.randn(shape, generator=gen) * 3
    ties = (torch.randint(-300, 300, shape, generator=gen) + 0.5) * scale_like
    far = torch.randn(shape, generator=gen) * 1e3
    return torch.cat([x, ties, far], dim=-1)


def _grad(fn, x):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    w = torch.linspace(-1, 2, y.numel()).reshape(y.shape)  # a non-trivial upstream gradient
    (g,) = torch.autograd.grad(y, x, w)
    return y.detach(), g


# ---------------------------------------------------------------------------------------------------------
# Bit-for-bit agreement with torch.fake_quantize_per_tensor_affine / per_channel_affine
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", EIGHT_BIT, ids=lambda s: s.describe())
@pytest.mark.parametrize("path", ["dispatch", "reference"])
def test_per_tensor_bit_for_bit_with_torch(spec, path):
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(6, 50, generator=gen) * 4
    scale, zp = compute_qparams(*reduce_min_max(base, spec), spec)
    x = torch.cat([base, _data((6, 50), scale, gen)], dim=-1)
    want, want_g = _grad(lambda t: torch.fake_quantize_per_tensor_affine(t, float(scale), int(zp), spec.qmin,
                                                                        spec.qmax), x)
    if path == "dispatch":
        got, got_g = _grad(lambda t: fake_quantize(t, scale, zp, spec), x)
    else:  # force the pure-PyTorch fallback: it must be exact too
        got, got_g = _grad(lambda t: _FakeQuantSTE.apply(t, scale, zp.float(), spec), x)
    assert torch.equal(got, want)
    assert torch.equal(got_g, want_g)
    assert (want_g == 0).any() and (want_g != 0).any()  # both sides of the clipped STE were exercised


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 12, 16])
@pytest.mark.parametrize("signed", [True, False])
def test_other_widths_bit_for_bit_with_torch(bits, signed):
    spec = QuantSpec(bits=bits, signed=signed, symmetric=False)
    gen = torch.Generator().manual_seed(bits)
    x = _data((4, 40), 0.05, gen)
    scale, zp = torch.tensor(0.05), torch.tensor(spec.qmin + (spec.qmax - spec.qmin) // 3, dtype=torch.int32)
    want, want_g = _grad(lambda t: torch.fake_quantize_per_tensor_affine(t, scale, zp, spec.qmin, spec.qmax), x)
    for fn in (lambda t: fake_quantize(t, scale, zp, spec), lambda t: _FakeQuantSTE.apply(t, scale, zp.float(), spec)):
        got, got_g = _grad(fn, x)
        assert torch.equal(got, want) and torch.equal(got_g, want_g)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("spec_kw", [{"signed": True, "symmetric": True}, {"signed": False, "symmetric": False},
                                     {"signed": True, "symmetric": False}, {"signed": True, "narrow": True}])
@pytest.mark.parametrize("path", ["dispatch", "reference"])
def test_per_channel_bit_for_bit_with_torch(axis, spec_kw, path):
    spec = QuantSpec(bits=8, granularity="per_channel", axis=axis, **spec_kw)
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(5, 6, 30, generator=gen) * torch.rand(5, 6, 1, generator=gen) * 5
    scale, zp = compute_qparams(*reduce_min_max(base, spec), spec)
    shape = [1, 1, 1]
    shape[axis] = -1
    ties = (torch.randint(-200, 200, base.shape, generator=gen) + 0.5) * scale.reshape(shape)
    cat_dim = 0 if axis in (1, -1) else 1
    x = torch.cat([base, ties, base * 3], dim=cat_dim)
    ax = axis % 3
    want, want_g = _grad(lambda t: torch.fake_quantize_per_channel_affine(t, scale, zp, ax, spec.qmin,
                                                                         spec.qmax), x)
    if path == "dispatch":
        got, got_g = _grad(lambda t: fake_quantize(t, scale, zp, spec), x)
    else:
        got, got_g = _grad(lambda t: _FakeQuantSTE.apply(t, scale, zp.float(), spec), x)
    assert torch.equal(got, want)
    assert torch.equal(got_g, want_g)


def test_dispatch_uses_fused_kernels_where_they_apply():
    x = torch.randn(4, 6, requires_grad=True)
    s1, z1 = torch.tensor(0.1), torch.tensor(0, dtype=torch.int32)
    sc, zc = torch.full((4,), 0.1), torch.zeros(4, dtype=torch.int32)
    per_tensor, per_channel = QuantSpec(bits=8), QuantSpec(bits=8, granularity="per_channel")
    assert "PerTensorAffine" in type(fake_quantize(x, s1, z1, per_tensor).grad_fn).__name__
    assert "PerChannelAffine" in type(fake_quantize(x, sc, zc, per_channel).grad_fn).__name__
    grouped = QuantSpec(bits=8, granularity="per_group", axis=1, group_size=3)
    stochastic = QuantSpec(bits=8, rounding="stochastic")
    assert uses_fused_kernel(per_tensor) and uses_fused_kernel(per_channel)
    assert not uses_fused_kernel(grouped) and not uses_fused_kernel(stochastic)
    out = fake_quantize(x, torch.full((4, 2), 0.1), torch.zeros(4, 2), grouped)
    assert "_FakeQuantSTE" in type(out.grad_fn).__name__
    assert "_FakeQuantSTE" in type(fake_quantize(x, s1, z1, stochastic).grad_fn).__name__


def test_half_precision_round_trips_through_float32():
    spec = QuantSpec(bits=8)
    x = torch.randn(3, 5)
    s, z = torch.tensor(0.03), torch.tensor(0, dtype=torch.int32)
    for dtype in (torch.float16, torch.bfloat16):
        out = fake_quantize(x.to(dtype), s, z, spec)
        assert out.dtype == dtype
        assert torch.equal(out, fake_quantize(x.to(dtype).float(), s, z, spec).to(dtype))


# ---------------------------------------------------------------------------------------------------------
# qparams worked by hand
# ---------------------------------------------------------------------------------------------------------
def _qp(lo, hi, **kw):
    s, z = compute_qparams(torch.tensor(lo), torch.tensor(hi), QuantSpec(**kw))
    return float(s), int(z)


def test_qparams_asymmetric_by_hand():
    # uint8 [0,255], range [-1, 3]: S = 4/255; Z = 0 - round(-1/S) = round(63.75) = 64.
    s, z = _qp(-1.0, 3.0, bits=8, signed=False, symmetric=False)
    assert s == pytest.approx(4 / 255, rel=1e-7) and z == 64
    # A range that does not contain 0 is widened to it (Jacob et al. 2018 §2.1): [2, 6] -> [0, 6],
    # S = 6/255, Z = 0.
    s, z = _qp(2.0, 6.0, bits=8, signed=False, symmetric=False)
    assert s == pytest.approx(6 / 255, rel=1e-7) and z == 0
    # int4 [-8, 7], range [-1, 2]: S = 3/15 = 0.2; Z = -8 - round(-1/0.2) = -8 + 5 = -3.
    s, z = _qp(-1.0, 2.0, bits=4, signed=True, symmetric=False)
    assert s == pytest.approx(0.2, rel=1e-7) and z == -3
    # All-negative range [-5, -1] -> [-5, 0] on uint8: S = 5/255, Z = 0 - round(-255) = 255.
    s, z = _qp(-5.0, -1.0, bits=8, signed=False, symmetric=False)
    assert s == pytest.approx(5 / 255, rel=1e-7) and z == 255


def test_qparams_symmetric_by_hand():
    # signed int8: S = max(|min|, |max|) / ((qmax - qmin)/2) = 2 / 127.5 (torch.ao's convention), Z = 0.
    s, z = _qp(-2.0, 1.0, bits=8)
    assert s == pytest.approx(2 / 127.5, rel=1e-7) and z == 0
    # narrow int8 [-127, 127]: (127 - -127)/2 = 127, S = 2/127.
    s, z = _qp(-2.0, 1.0, bits=8, narrow=True)
    assert s == pytest.approx(2 / 127, rel=1e-7) and z == 0
    # int4 narrow [-7, 7]: S = 3.5 / 7 = 0.5 exactly.
    s, z = _qp(-1.0, 3.5, bits=4, narrow=True)
    assert s == 0.5 and z == 0
    # unsigned symmetric uint8 (ReLU range): S = max / qmax = 5.1 / 255 = 0.02, Z = 0.
    s, z = _qp(0.0, 5.1, bits=8, signed=False, symmetric=True)
    assert s == pytest.approx(0.02, rel=1e-6) and z == 0


def test_qparams_power_of_two_by_hand():
    # int8 sym, max 3: S = 3/127.5 = 0.02353, log2 = -5.41, ceil -> -5, S = 2^-5 = 0.03125.
    s, z = _qp(-1.0, 3.0, bits=8, scale_type="power_of_two")
    assert s == 2.0**-5 and z == 0
    # uint8 asym [-1, 3]: S = 4/255 = 0.01569, log2 = -5.99, ceil -> -5: S = 0.03125;
    # Z recomputed for that S: 0 - round(-1 / 0.03125) = 32.
    s, z = _qp(-1.0, 3.0, bits=8, signed=False, symmetric=False, scale_type="power_of_two")
    assert s == 2.0**-5 and z == 32
    # An exact power of two stays: int4 narrow [-7,7], max 14 -> S = 2 = 2^1.
    s, _ = _qp(-14.0, 14.0, bits=4, narrow=True, scale_type="power_of_two")
    assert s == 2.0
    assert torch.equal(round_to_power_of_two(torch.tensor([0.3, 1.0, 1.5, 5.0])), torch.tensor([0.5, 1, 2, 8]))


def test_qparams_zero_range_uses_eps_like_torch():
    eps = torch.finfo(torch.float32).eps
    assert _qp(0.0, 0.0, bits=8, signed=False, symmetric=False) == (eps, 0)
    assert _qp(0.0, 0.0, bits=8) == (eps, 0)


def test_qparams_reject_nan_and_binary():
    with pytest.raises(DataError, match="NaN or Inf"):
        compute_qparams(torch.tensor(float("inf")), torch.tensor(1.0), QuantSpec(bits=8))
    with pytest.raises(ConfigError, match="binary"):
        compute_qparams(torch.tensor(-1.0), torch.tensor(1.0), QuantSpec(bits=1, dtype="binary"))


# ---------------------------------------------------------------------------------------------------------
# quantize / dequantize / granularity worked by hand
# ---------------------------------------------------------------------------------------------------------
def test_quantize_dequantize_by_hand():
    # uint8, S = 0.25, Z = 10. x/S = [-40, -0.5, 0.5, 1.5, 2.5, 400]; round half to even ->
    # [-40, -0, 0, 2, 2, 400]; +Z -> [-30, 10, 10, 12, 12, 410]; clamp to [0, 255] -> [0, 10, 10, 12, 12, 255].
    spec = QuantSpec(bits=8, signed=False, symmetric=False)
    x = torch.tensor([-10.0, -0.125, 0.125, 0.375, 0.625, 100.0])
    s, z = torch.tensor(0.25), torch.tensor(10, dtype=torch.int32)
    q = quantize(x, s, z, spec)
    assert q.dtype == torch.int32
    assert q.tolist() == [0, 10, 10, 12, 12, 255]
    # (q - Z)·S = [-2.5, 0, 0, 0.5, 0.5, 61.25]
    assert dequantize(q, s, z, spec).tolist() == [-2.5, 0.0, 0.0, 0.5, 0.5, 61.25]
    assert fake_quantize(x, s, z, spec).tolist() == [-2.5, 0.0, 0.0, 0.5, 0.5, 61.25]


def test_per_channel_by_hand():
    # int4 signed [-8, 7], axis 0, S = [0.5, 2], Z = 0.
    # row 0: x/S = [2.4, -0.6, 20] -> [2, -1, 7 (clamped)] -> [1.0, -0.5, 3.5]
    # row 1: x/S = [1.5, -10, 0.45] -> [2, -8 (clamped), 0] -> [4.0, -16.0, 0.0]
    spec = QuantSpec(bits=4, granularity="per_channel", axis=0)
    x = torch.tensor([[1.2, -0.3, 10.0], [3.0, -20.0, 0.9]])
    s, z = torch.tensor([0.5, 2.0]), torch.zeros(2, dtype=torch.int32)
    assert quantize(x, s, z, spec).tolist() == [[2, -1, 7], [2, -8, 0]]
    assert fake_quantize(x, s, z, spec).tolist() == [[1.0, -0.5, 3.5], [4.0, -16.0, 0.0]]
    # The same along the last axis of the transpose.
    spec_t = QuantSpec(bits=4, granularity="per_channel", axis=-1)
    assert fake_quantize(x.T, s, z, spec_t).T.tolist() == [[1.0, -0.5, 3.5], [4.0, -16.0, 0.0]]


def test_per_group_by_hand():
    # int4 narrow [-7, 7] symmetric, groups of 2 along axis 1 of a 2x4 tensor -> qparams of shape (2, 2).
    # group max|x|: (0,0) [7, -2.4] -> 7; (0,1) [3.5, 1.3] -> 3.5; (1,0) [14, -5] -> 14; (1,1) [-0.7, 0.26] -> 0.7
    # S = max|x| / 7 = [[1, 0.5], [2, 0.1]].
    # x/S: [7, -2.4 | 7, 2.6] -> [7, -2 | 7, 3] -> [7, -2, 3.5, 1.5]
    #      [7, -2.5 | -7, 2.6] -> [7, -2 (half to even) | -7, 3] -> [14, -4, -0.7, 0.3]
    spec = QuantSpec(bits=4, narrow=True, granularity="per_group", axis=1, group_size=2)
    x = torch.tensor([[7.0, -2.4, 3.5, 1.3], [14.0, -5.0, -0.7, 0.26]])
    lo, hi = reduce_min_max(x, spec)
    assert torch.equal(lo, torch.tensor([[-2.4, 1.3], [-5.0, -0.7]]))
    assert torch.equal(hi, torch.tensor([[7.0, 3.5], [14.0, 0.26]]))
    s, z = compute_qparams(lo, hi, spec)
    torch.testing.assert_close(s, torch.tensor([[1.0, 0.5], [2.0, 0.1]]), rtol=1e-6, atol=0)
    out = fake_quantize(x, s, z, spec)
    torch.testing.assert_close(out, torch.tensor([[7.0, -2.0, 3.5, 1.5], [14.0, -4.0, -0.7, 0.3]]),
                               rtol=1e-6, atol=0)
    assert quantize(x, s, z, spec).tolist() == [[7, -2, 7, 3], [7, -2, -7, 3]]
    # The clipped STE passes gradient everywhere here (nothing beyond the range).
    xg = x.clone().requires_grad_(True)
    fake_quantize(xg, s, z, spec).sum().backward()
    assert torch.equal(xg.grad, torch.ones_like(x))


def test_per_group_on_axis_0_and_rows():
    spec = QuantSpec(bits=8, granularity="per_group", axis=0, group_size=3)
    x = torch.arange(24.0).reshape(6, 4)
    rows, shape = reduction_rows(x, spec)
    assert shape == (2, 4) and rows.shape == (8, 3)
    lo, hi = reduce_min_max(x, spec)
    # group (g, c) holds x[3g:3g+3, c] = 4·(3g + i) + c, i = 0..2
    assert lo.tolist() == [[0, 1, 2, 3], [12, 13, 14, 15]]
    assert hi.tolist() == [[8, 9, 10, 11], [20, 21, 22, 23]]
    assert expand_qparam(hi, x, spec).shape == x.shape


def test_stochastic_rounding_only_floor_or_ceil_and_unbiased():
    # x/S = 0.3 and -1.7: Gupta et al. 2015 round up with probability frac(y), so the codes are {0, 1} with
    # mean 0.3 and {-2, -1} with mean -1.7. n = 40000: std of the mean = sqrt(0.21/n) = 0.0023; 5 sigma.
    torch.manual_seed(0)
    spec = QuantSpec(bits=8, rounding="stochastic")
    s, z = torch.tensor(0.5), torch.tensor(0, dtype=torch.int32)
    for y, (f, c) in ((0.3, (0, 1)), (-1.7, (-2, -1))):
        x = torch.full((40000,), y * 0.5)
        q = quantize(x, s, z, spec)
        assert set(q.unique().tolist()) == {f, c}
        assert abs(q.float().mean().item() - y) < 5 * math.sqrt(0.21 / 40000)
        out = fake_quantize(x, s, z, spec)
        assert set(out.unique().tolist()) == {f * 0.5, c * 0.5}
    # Values on the grid are never moved.
    x = torch.tensor([-1.0, 0.0, 0.5, 2.0]).repeat(100)
    assert torch.equal(fake_quantize(x, s, z, spec), x)


def test_shape_errors_name_the_fix():
    x = torch.randn(4, 6)
    with pytest.raises(ConfigError, match="axis=2 is out of range"):
        reduce_min_max(x, QuantSpec(bits=8, granularity="per_channel", axis=2))
    with pytest.raises(ConfigError, match="not a multiple of group_size=4"):
        reduce_min_max(x, QuantSpec(bits=8, granularity="per_group", axis=1, group_size=4))
    with pytest.raises(ConfigError, match="3 qparams for 4 channels"):
        fake_quantize(x, torch.ones(3), torch.zeros(3, dtype=torch.int32),
                      QuantSpec(bits=8, granularity="per_channel", axis=0))
    with pytest.raises(ConfigError, match="do not match"):
        fake_quantize(x, torch.ones(4, 2), torch.zeros(4, 2),
                      QuantSpec(bits=8, granularity="per_group", axis=1, group_size=2))
    with pytest.raises(ConfigError, match="binarize"):
        fake_quantize(x, torch.tensor(1.0), torch.tensor(0), QuantSpec(bits=1, dtype="binary"))
