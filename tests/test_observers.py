"""Observers: min-max and moving-average agree with torch.ao exactly; percentile, MSE and KL clip outliers
as their definitions say (hand-worked cases); every observer survives state_dict save/load.

torch.ao conventions and how they map to a QuantSpec:

* ``quint8 per_tensor_affine`` = ``QuantSpec(bits=8, signed=False, symmetric=False)``; ``qint8 affine`` =
  ``signed=True, symmetric=False``; ``qint8 symmetric`` = ``signed=True, symmetric=True`` (both use
  ``S = max(|min|, |max|)/((qmax - qmin)/2) = amax/127.5``).
* ``quint8 symmetric`` in torch.ao is the *signed* symmetric grid shifted by 128: the same scale
  ``amax/127.5`` with ``Z = 128`` on [0, 255]. quantzoo's equivalent is the signed symmetric spec with
  ``Z = 0`` on [-128, 127] (codes differ by exactly 128, real values are identical). quantzoo's unsigned
  symmetric spec is a different format (``S = max/255``, ``Z = 0``, the ReLU range) with no torch.ao twin.
* Both clamp the scale at ``eps = torch.finfo(float32).eps``; torch returns per-tensor qparams with shape
  ``[1]``, quantzoo with shape ``[]``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.ao.quantization import observer as tq

import quantzoo
from quantzoo.errors import ConfigError, NotCalibratedError, UnsupportedError
from quantzoo.math import compute_qparams, fake_quantize, reduce_min_max
from quantzoo.observers import (
    KLObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    kl_threshold_bins,
    mse_clip_search,
    row_percentile,
)
from quantzoo.spec import QuantSpec

torch.set_num_threads(1)

# (torch dtype, torch qscheme, quantzoo spec kwargs, zero-point offset torch - quantzoo)
PER_TENSOR = [
    (torch.quint8, torch.per_tensor_affine, {"signed": False, "symmetric": False}, 0),
    (torch.qint8, torch.per_tensor_affine, {"signed": True, "symmetric": False}, 0),
    (torch.qint8, torch.per_tensor_symmetric, {"signed": True, "symmetric": True}, 0),
    (torch.quint8, torch.per_tensor_symmetric, {"signed": True, "symmetric": True}, 128),
]
PER_CHANNEL = [
    (torch.quint8, torch.per_channel_affine, {"signed": False, "symmetric": False}, 0),
    (torch.qint8, torch.per_channel_affine, {"signed": True, "symmetric": False}, 0),
    (torch.qint8, torch.per_channel_symmetric, {"signed": True, "symmetric": True}, 0),
    (torch.quint8, torch.per_channel_symmetric, {"signed": True, "symmetric": True}, 128),
]


def _batches(seed=0, shape=(8, 6, 5)):
    gen = torch.Generator().manual_seed(seed)
    # Different ranges per batch, one all-positive batch and one all-zero batch (eps case).
    return [torch.randn(shape, generator=gen) * 2, torch.rand(shape, generator=gen) * 5,
            torch.randn(shape, generator=gen) * 0.1 - 3, torch.zeros(shape)]


def _assert_same_qparams(ours, theirs, offset):
    s, z = ours
    ts, tz = theirs
    assert torch.equal(s.reshape(-1), ts.reshape(-1)), (s, ts)
    assert torch.equal(z.reshape(-1).to(torch.int64) + offset, tz.reshape(-1).to(torch.int64)), (z, tz)


@pytest.mark.parametrize(("dtype", "qscheme", "kw", "offset"), PER_TENSOR)
@pytest.mark.parametrize("moving", [False, True])
def test_per_tensor_matches_torch_ao(dtype, qscheme, kw, offset, moving):
    spec = QuantSpec(bits=8, **kw)
    if moving:
        theirs = tq.MovingAverageMinMaxObserver(averaging_constant=0.1, dtype=dtype, qscheme=qscheme)
        ours = MovingAverageMinMaxObserver(spec, averaging_constant=0.1)
    else:
        theirs = tq.MinMaxObserver(dtype=dtype, qscheme=qscheme)
        ours = MinMaxObserver(spec)
    for x in _batches():
        theirs(x)
        ours(x)
        assert torch.equal(ours.min_val, theirs.min_val) and torch.equal(ours.max_val, theirs.max_val)
        _assert_same_qparams(ours.calculate_qparams(), theirs.calculate_qparams(), offset)


@pytest.mark.parametrize(("dtype", "qscheme", "kw", "offset"), PER_CHANNEL)
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("moving", [False, True])
def test_per_channel_matches_torch_ao(dtype, qscheme, kw, offset, axis, moving):
    spec = QuantSpec(bits=8, granularity="per_channel", axis=axis, **kw)
    if moving:
        theirs = tq.MovingAveragePerChannelMinMaxObserver(ch_axis=axis, averaging_constant=0.01, dtype=dtype,
                                                          qscheme=qscheme)
        ours = MovingAverageMinMaxObserver(spec, averaging_constant=0.01)
    else:
        theirs = tq.PerChannelMinMaxObserver(ch_axis=axis, dtype=dtype, qscheme=qscheme)
        ours = MinMaxObserver(spec)
    for x in _batches(seed=axis):
        theirs(x)
        ours(x)
    assert torch.equal(ours.min_val, theirs.min_val) and torch.equal(ours.max_val, theirs.max_val)
    _assert_same_qparams(ours.calculate_qparams(), theirs.calculate_qparams(), offset)


def test_quint8_symmetric_grid_is_the_shifted_signed_grid():
    # torch.ao quint8 symmetric (Z=128 on [0,255]) and quantzoo int8 symmetric (Z=0 on [-128,127]) give the
    # same real values.
    x = torch.randn(1000) * 3
    theirs = tq.MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_symmetric)
    theirs(x)
    ts, tz = theirs.calculate_qparams()
    spec = QuantSpec(bits=8)
    s, z = compute_qparams(*reduce_min_max(x, spec), spec)
    want = torch.fake_quantize_per_tensor_affine(x, float(ts), int(tz), 0, 255)
    assert torch.equal(fake_quantize(x, s, z, spec), want)


# ---------------------------------------------------------------------------------------------------------
# Percentile
# ---------------------------------------------------------------------------------------------------------
def test_row_percentile_matches_numpy_linear():
    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(5, 997, generator=gen)
    for q in (0.01, 1.0, 50.0, 99.0, 99.99, 100.0):
        want = np.percentile(rows.double().numpy(), q, axis=1)
        np.testing.assert_allclose(row_percentile(rows, q).numpy(), want, rtol=1e-6, atol=1e-6)


def test_percentile_by_hand_and_batch_mean():
    # 0..100: the 99th percentile sits at position (101 - 1)·0.99 = 99 -> 99; the 1st at position 1 -> 1.
    # Second batch 2·(0..100): 198 and 2. The observer averages batches with equal weight:
    # max = (99 + 198)/2 = 148.5, min = (1 + 2)/2 = 1.5.
    obs = PercentileObserver(QuantSpec(bits=8, symmetric=False), percentile=99.0)
    x = torch.arange(101.0)
    obs(x)
    assert (obs.min_val.item(), obs.max_val.item()) == (1.0, 99.0)
    obs(2 * x)
    assert (obs.min_val.item(), obs.max_val.item()) == (1.5, 148.5)
    # A third batch weighs 1/3: max = (99 + 198 + 0)/3 = 99.
    obs(torch.zeros(101))
    assert obs.max_val.item() == pytest.approx(99.0)


def test_percentile_clips_an_outlier_per_tensor_and_per_channel():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 10000, generator=gen)
    x[2, 17] = 100.0
    obs = PercentileObserver(QuantSpec(bits=8), percentile=99.99)
    obs(x)
    assert obs.max_val.item() < 5.0  # the outlier (100) is clipped; N(0,1) p99.99 is about 3.7
    per_channel = PercentileObserver(QuantSpec(bits=8, granularity="per_channel", axis=0), percentile=99.99)
    per_channel(x)
    assert per_channel.max_val.shape == (4,) and (per_channel.max_val < 5.0).all()
    s_pct, _ = obs.calculate_qparams()
    minmax = MinMaxObserver(QuantSpec(bits=8))
    minmax(x)
    assert s_pct < minmax.calculate_qparams()[0] / 10


# ---------------------------------------------------------------------------------------------------------
# MSE
# ---------------------------------------------------------------------------------------------------------
def _mse(x, spec, s, z):
    return ((fake_quantize(x, s, z, spec) - x) ** 2).mean().item()


def test_mse_search_equals_brute_force():
    # The search keeps, per row, the ratio with the smallest error; check against an explicit loop.
    gen = torch.Generator().manual_seed(1)
    rows = torch.randn(3, 500, generator=gen) ** 3  # heavy-tailed, so the optimum clips
    spec = QuantSpec(bits=4, signed=False, symmetric=False)
    ratios = torch.arange(1, 21, dtype=torch.float64) / 20
    lo, hi, err = mse_clip_search(rows, spec, ratios)
    row_spec = QuantSpec(bits=4, signed=False, symmetric=False)
    for r in range(3):
        errs = []
        for a in ratios.tolist():
            lo_a, hi_a = rows[r].min() * a, rows[r].max() * a
            s, z = compute_qparams(lo_a, hi_a, row_spec)
            errs.append(_mse(rows[r], row_spec, s, z))
        best = max(i for i, e in enumerate(errs) if e == min(errs))  # ties: the widest range
        assert err[r].item() == pytest.approx(errs[best], rel=1e-5)
        assert lo[r].item() == pytest.approx(rows[r].min().item() * ratios[best].item(), rel=1e-6)
        assert hi[r].item() == pytest.approx(rows[r].max().item() * ratios[best].item(), rel=1e-6)


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_mse_observer_beats_minmax_on_heavy_tails(granularity):
    # Student-t (3 dof) samples: rare large values. Clipping them lowers the MSE at 4 bits (to about a third
    # here). Since ratio 1 (the min-max range) is a candidate, the MSE range is never worse.
    torch.manual_seed(0)
    x = torch.distributions.StudentT(3.0).sample((4, 2000))
    spec = QuantSpec(bits=4, granularity=granularity, axis=0)
    mse_obs, mm_obs = MSEObserver(spec), MinMaxObserver(spec)
    mse_obs(x)
    mm_obs(x)
    s1, z1 = mse_obs.calculate_qparams()
    s0, z0 = mm_obs.calculate_qparams()
    assert _mse(x, spec, s1, z1) < 0.6 * _mse(x, spec, s0, z0)
    assert (mse_obs.max_val < mm_obs.max_val).all()
    if granularity == "per_channel":
        for c in range(4):
            row_spec = QuantSpec(bits=4)
            assert _mse(x[c], row_spec, s1[c], z1[c]) <= _mse(x[c], row_spec, s0[c], z0[c])


# ---------------------------------------------------------------------------------------------------------
# KL / entropy
# ---------------------------------------------------------------------------------------------------------
def test_kl_threshold_by_hand():
    # hist = [6, 2, 0, 0, 0, 0, 0, 1], 2 quantized levels. Candidates i = 2..8:
    # i=2: P = [6, 2+1] (outlier folded in), Q = chunks [6], [2] -> [6, 2].
    #      KL = 6/9·ln((6/9)/(6/8)) + 3/9·ln((3/9)/(2/8)) = -0.078522 + 0.095894 = 0.017372
    # i=3: P = [6, 2, 1]; chunks of 3//2 = 1 bin, remainder to the last: [6], [2, 0] -> sums 6, 2;
    #      P's non-zero bins per chunk: 1, 2 -> Q = [6, 1, 1].
    #      KL = 6/9·ln(0.8889) + 2/9·ln((2/9)/(1/8)) + 1/9·ln((1/9)/(1/8)) = 0.036250
    # i=4..7: the chunk holding bin i-1 (where the outlier count sits) sums to 0 in hist[:i] -> Q = 0
    #      where P > 0: KL = inf.
    # i=8: P = hist; chunks [6,2,0,0] = 8 over 2 non-zero bins, [0,0,0,1] = 1 -> Q = [4,4,0,0,0,0,0,1]:
    #      KL = 6/9·ln(6/4) + 2/9·ln(2/4) = 0.116277
    # Minimum at i = 2.
    assert kl_threshold_bins(np.array([6, 2, 0, 0, 0, 0, 0, 1]), 2) == 2
    # [4, 4, 0, 0, 0, 0, 0, 1]: at i = 8 each chunk's count spreads over its non-zero bins as 4, 4 | 1, so
    # Q = P and KL = 0, while i = 2 gives P = [4, 5], Q = [4, 4], KL > 0: nothing is clipped.
    assert kl_threshold_bins(np.array([4, 4, 0, 0, 0, 0, 0, 1]), 2) == 8
    # Enough levels for every bin: nothing to clip.
    assert kl_threshold_bins(np.array([1, 0, 3, 1]), 4) == 4


def test_kl_hand_values_of_the_divergence():
    # The same KL numbers, recomputed independently, for the two finite candidates that compete.
    p2, q2 = np.array([6, 3]) / 9, np.array([6, 2]) / 8
    p3, q3 = np.array([6, 2, 1]) / 9, np.array([6, 1, 1]) / 8
    assert np.sum(p2 * np.log(p2 / q2)) == pytest.approx(0.017372, abs=1e-6)
    assert np.sum(p3 * np.log(p3 / q3)) == pytest.approx(0.036250, abs=1e-6)


def test_kl_observer_clips_outliers():
    torch.manual_seed(0)
    x = torch.randn(50000)
    x[:5] = torch.tensor([40.0, -35.0, 50.0, 45.0, -60.0])
    obs = KLObserver(QuantSpec(bits=8))
    obs(x)
    t = obs.threshold()
    assert 2.0 < t < 20.0  # well below max|x| = 60, above the bulk of N(0,1)
    lo, hi = obs.min_max()
    assert (lo.item(), hi.item()) == pytest.approx((-t, t))
    s, z = obs.calculate_qparams()
    assert s.item() == pytest.approx(t / 127.5, rel=1e-6) and z.item() == 0


def test_kl_histogram_rebins_exactly_when_the_range_grows():
    torch.manual_seed(0)
    a = torch.rand(5000)
    a[0] = 1.0
    b = torch.rand(5000) * 3
    b[0] = 3.0
    obs = KLObserver(QuantSpec(bits=8, signed=False, symmetric=False))
    obs(a)
    assert obs.hist_max.item() == 1.0
    old = torch.bincount(torch.clamp((a * 2048).long(), max=2047), minlength=2048)  # on [0, 1]
    assert torch.equal(obs.histogram, old)
    obs(b)
    assert obs.hist_max.item() == 4.0  # 1 -> 2 -> 4 covers 3: every 4 old bins merge into one new bin
    # The top bin is closed ([R - w, R]): a[0] = 1.0 sits in old bin 2047, i.e. new bin 511, while a fresh
    # binning on [0, 4] would put 1.0 at the left edge of bin 512. Every other value lands where a direct
    # binning of all the data on the final grid puts it.
    merged = old.reshape(512, 4).sum(dim=1)
    new = torch.bincount(torch.clamp((b * (2048 / 4.0)).long(), max=2047), minlength=2048)
    assert torch.equal(obs.histogram, torch.cat([merged, torch.zeros(1536, dtype=torch.int64)]) + new)
    direct = torch.bincount(torch.clamp((torch.cat([a[1:], b]) * 512).long(), max=2047), minlength=2048)
    direct[511] += 1
    assert torch.equal(obs.histogram, direct)
    assert obs.num_levels() == 256  # asymmetric spec on non-negative data: all 256 levels cover [0, T]


def test_kl_per_channel_is_unsupported_at_construction():
    with pytest.raises(UnsupportedError, match="per-tensor only.*'mse'/'percentile'"):
        KLObserver(QuantSpec(bits=8, granularity="per_channel"))
    with pytest.raises(ConfigError, match="power of two"):
        KLObserver(QuantSpec(bits=8), bins=1000)


# ---------------------------------------------------------------------------------------------------------
# Common contract: registry, errors, state_dict
# ---------------------------------------------------------------------------------------------------------
def test_core_observers_are_registered():
    names = quantzoo.get_registry().names("observer")
    for name in ("minmax", "moving_average_minmax", "percentile", "mse", "kl"):
        assert name in names
    assert quantzoo.get_observer("entropy") is KLObserver


@pytest.mark.parametrize("cls", [MinMaxObserver, MovingAverageMinMaxObserver, PercentileObserver, MSEObserver,
                                 KLObserver])
def test_no_data_raises_not_calibrated(cls):
    with pytest.raises(NotCalibratedError, match="has seen no data"):
        cls(QuantSpec(bits=8)).calculate_qparams()


def test_bad_arguments_name_the_fix():
    with pytest.raises(ConfigError, match="percentile=40"):
        PercentileObserver(QuantSpec(bits=8), percentile=40)
    with pytest.raises(ConfigError, match="averaging_constant=0"):
        MovingAverageMinMaxObserver(QuantSpec(bits=8), averaging_constant=0)
    with pytest.raises(ConfigError, match="num_candidates=0"):
        MSEObserver(QuantSpec(bits=8), num_candidates=0)


@pytest.mark.parametrize("cls", [MinMaxObserver, MovingAverageMinMaxObserver, PercentileObserver, MSEObserver,
                                 KLObserver])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel", "per_group"])
def test_state_dict_round_trip(cls, granularity):
    kw = {"group_size": 4, "axis": 1} if granularity == "per_group" else {}
    spec = QuantSpec(bits=6, symmetric=False, granularity=granularity, **kw)
    if cls is KLObserver and granularity != "per_tensor":
        pytest.skip("KLObserver is per-tensor only (tested above)")
    obs = cls(spec)
    for x in _batches(seed=5, shape=(6, 8)):
        obs(x)
    want = obs.calculate_qparams()
    fresh = cls(spec)
    fresh.load_state_dict(obs.state_dict())
    got = fresh.calculate_qparams()
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    if granularity == "per_channel":
        assert got[0].shape == (6,)
    if granularity == "per_group":
        assert got[0].shape == (6, 2)
