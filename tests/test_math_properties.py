"""Property-based tests of the quantization math (issue 2, must-show #3): error at most scale/2 inside the
range, clamping outside it, fake-quantize idempotent and monotone, pack/unpack exact."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantzoo.math import (
    compute_qparams,
    fake_quantize,
    pack_bits,
    pack_signed,
    quantize,
    reduce_min_max,
    unpack_bits,
    unpack_signed,
)
from quantzoo.spec import QuantSpec

torch.set_num_threads(1)

FAST = settings(max_examples=60, deadline=None)

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, width=32)
values = st.lists(finite, min_size=1, max_size=64)


@st.composite
def int_specs(draw, granularity="per_tensor"):
    bits = draw(st.integers(2, 16))
    signed = draw(st.booleans())
    narrow = signed and draw(st.booleans())
    return QuantSpec(bits=bits, signed=signed, narrow=narrow, symmetric=draw(st.booleans()),
                     scale_type=draw(st.sampled_from(["float", "power_of_two"])), granularity=granularity)


def _qparams(spec, draw_lo, draw_hi):
    lo, hi = sorted((draw_lo, draw_hi))
    return compute_qparams(torch.tensor(lo), torch.tensor(hi), spec)


def _grid_bounds(scale, zp, spec):
    """Real values of the smallest and largest code, computed as the kernel does: (q - Z)·S."""
    return (spec.qmin - zp.float()) * scale, (spec.qmax - zp.float()) * scale


@FAST
@given(spec=int_specs(), xs=values, lo=finite, hi=finite)
def test_error_at_most_half_a_step_inside_the_range(spec, xs, lo, hi):
    scale, zp = _qparams(spec, lo, hi)
    x = torch.tensor(xs)
    low, high = _grid_bounds(scale, zp, spec)
    inside = (x >= low) & (x <= high)
    err = (fake_quantize(x, scale, zp, spec) - x).abs()
    # S/2 plus float32 rounding of x·(1/S) (a few ulps of |x|).
    bound = scale / 2 * (1 + 1e-5) + 4 * torch.finfo(torch.float32).eps * x.abs()
    assert bool((err[inside] <= bound.expand_as(x)[inside]).all())


@FAST
@given(spec=int_specs(), xs=values, lo=finite, hi=finite)
def test_values_beyond_the_range_clamp_to_the_end_codes(spec, xs, lo, hi):
    scale, zp = _qparams(spec, lo, hi)
    x = torch.tensor(xs)
    low, high = _grid_bounds(scale, zp, spec)
    out = fake_quantize(x, scale, zp, spec)
    q = quantize(x, scale, zp, spec)
    assert bool((q >= spec.qmin).all() and (q <= spec.qmax).all())
    assert bool((out[x >= high] == high).all())
    assert bool((out[x <= low] == low).all())


@FAST
@given(spec=int_specs(), xs=values, lo=finite, hi=finite)
def test_fake_quantize_is_idempotent(spec, xs, lo, hi):
    scale, zp = _qparams(spec, lo, hi)
    once = fake_quantize(torch.tensor(xs), scale, zp, spec)
    assert torch.equal(fake_quantize(once, scale, zp, spec), once)


@FAST
@given(spec=int_specs(), xs=values, lo=finite, hi=finite)
def test_fake_quantize_is_monotone(spec, xs, lo, hi):
    scale, zp = _qparams(spec, lo, hi)
    x = torch.tensor(sorted(xs))
    out = fake_quantize(x, scale, zp, spec)
    assert bool((out[1:] >= out[:-1]).all())


@FAST
@given(spec=int_specs("per_channel"), data=st.data())
def test_per_channel_observed_range_properties(spec, data):
    # qparams from the tensor's own per-channel range: everything representable is inside (all of it except
    # negatives under an unsigned symmetric spec, whose range is [0, max] by design), so the error is at most
    # S/2 per channel, and the result is idempotent.
    rows = data.draw(st.integers(1, 4))
    cols = data.draw(st.integers(1, 16))
    x = torch.tensor(data.draw(st.lists(finite, min_size=rows * cols, max_size=rows * cols))).reshape(rows, cols)
    scale, zp = compute_qparams(*reduce_min_max(x, spec), spec)
    out = fake_quantize(x, scale, zp, spec)
    bound = scale[:, None] / 2 * (1 + 1e-5) + 4 * torch.finfo(torch.float32).eps * x.abs()
    inside = x >= 0 if (spec.symmetric and not spec.signed) else torch.ones_like(x, dtype=torch.bool)
    assert bool(((out - x).abs() <= bound)[inside].all())
    assert torch.equal(fake_quantize(out, scale, zp, spec), out)


@FAST
@given(xs=st.lists(st.floats(-100, 100, width=32), min_size=1, max_size=64), seed=st.integers(0, 2**16))
def test_stochastic_rounding_lands_on_a_neighbouring_code(xs, seed):
    spec = QuantSpec(bits=8, rounding="stochastic")
    torch.manual_seed(seed)
    x = torch.tensor(xs)
    s, z = torch.tensor(0.5), torch.tensor(0, dtype=torch.int32)
    q = quantize(x, s, z, spec).float()
    y = torch.clamp(x * 2.0, spec.qmin, spec.qmax)  # x/S, exact for S = 0.5
    assert bool(((q == torch.floor(y)) | (q == torch.ceil(y))).all())


@FAST
@given(bits=st.sampled_from([1, 2, 4, 8]), data=st.data())
def test_pack_unpack_round_trip(bits, data):
    codes = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=0, max_size=100))
    t = torch.tensor(codes, dtype=torch.int64)
    packed = pack_bits(t, bits)
    assert packed.numel() == -(-len(codes) * bits // 8)  # ceil(n·bits/8) bytes
    assert unpack_bits(packed, bits, len(codes)).tolist() == codes


@FAST
@given(bits=st.sampled_from([2, 4, 8]), data=st.data())
def test_pack_signed_round_trip(bits, data):
    qmin = -(2 ** (bits - 1))
    n = data.draw(st.integers(1, 30))
    codes = data.draw(st.lists(st.integers(qmin, -qmin - 1), min_size=n, max_size=n))
    shape = (n,) if n % 2 else (2, n // 2)
    q = torch.tensor(codes).reshape(shape)
    assert np.array_equal(unpack_signed(pack_signed(q, bits, qmin), bits, qmin, shape).numpy(), q.numpy())
