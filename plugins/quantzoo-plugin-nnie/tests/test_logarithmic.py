"""NNIE logarithmic quantization (quantzoo.math.logarithmic) against nnieqat's test vector and by hand."""

import math

import pytest
import torch

from quantzoo.math import log_quantize, log_quantize_codes


def test_nnieqat_test_vector():
    # aovoc/nnieqat-pytorch nnieqat/quantize.py test(): GFPQ 8-bit quantize-dequantize of [0..9].
    expected = [0.0, 1.0, 2.0, 2.9536523819, 4.0, 4.9674310684, 5.9073047638, 7.0250086784, 8.0, 8.7240619659]
    out = log_quantize(torch.arange(10, dtype=torch.float32))
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor(expected), atol=2e-6, rtol=0)


def test_codes_by_hand():
    # M0 = 9: 16·log2 9 = 50.72 → z = 50 − 127 = −77. x = 3: 16·log2 3 = 25.36 → q = round(25.36 + 77) = 102,
    # x̂ = 2^((102 − 77)/16) = 2^(25/16). x = 9: q = round(127.72) = 128 → clamped to 127, x̂ = 2^(50/16).
    sign, q, z = log_quantize_codes(torch.tensor([3.0, 9.0, -3.0]))
    assert z.item() == -77
    assert q.tolist() == [102, 127, 102]
    assert sign.tolist() == [1, 1, -1]
    assert log_quantize(torch.tensor([9.0]), max_abs=9.0).item() == pytest.approx(2 ** (50 / 16), abs=1e-6)


def test_negative_values_mirror_positive():
    x = torch.tensor([0.3, 1.7, 5.5, 9.0])
    assert torch.equal(log_quantize(-x, max_abs=9.0), -log_quantize(x, max_abs=9.0))


def test_zero_threshold():
    # Smallest positive level 2^(z/16) with z = −77; positive x ≤ half of it → 0, just above → that level.
    # Negative codes stop at −1, so the smallest negative level is 2^((1+z)/16) and the threshold is 2^(1/16)
    # times larger (−M·2^(1/16−9) in the CUDA code).
    smallest = 2 ** (-77 / 16)
    half = smallest / 2
    x = torch.tensor([9.0, half * 0.999, half * 1.001, -half * 1.02, -half * 1.06], dtype=torch.float64)
    out = log_quantize(x.float(), bits=8).double()
    assert out[1] == 0 and out[3] == 0  # −half·1.02 > −half·2^(1/16) = −half·1.044
    assert out[2] == pytest.approx(smallest, rel=1e-6)
    assert out[4] == pytest.approx(-smallest * 2 ** (1 / 16), rel=1e-6)


def test_at_most_255_levels_and_saturation():
    x = torch.linspace(-10, 10, 20001)
    out = log_quantize(x)
    # 128 positive levels (q = 0..127), 127 negative ones (q = 1..127) and zero: exactly 2^8 values.
    assert torch.unique(out).numel() == 256
    assert torch.unique(out[out > 0]).numel() == 128 and torch.unique(out[out < 0]).numel() == 127
    # A fixed anchor: magnitudes above it saturate at the top code 2^((127+z)/16) ≤ anchor.
    top = log_quantize(torch.tensor([100.0]), max_abs=9.0).item()
    assert top == pytest.approx(2 ** (50 / 16), abs=1e-5)


def test_16bit_step_is_2_pow_1_over_2048():
    # Consecutive 16-bit levels differ by the factor 2^(1/2048): quantize a fine geometric sweep and look at
    # the ratios of neighbouring distinct levels.
    x = torch.exp2(torch.linspace(-1.0, 0.0, 20000, dtype=torch.float64)).float()
    levels = torch.unique(log_quantize(x, max_abs=1.0, bits=16)).double()
    ratios = levels[1:] / levels[:-1]
    assert torch.allclose(ratios, torch.full_like(ratios, 2 ** (1 / 2048)), rtol=1e-6, atol=0)
    assert levels.numel() == 2049  # one octave = 2048 steps
    _, q, z = log_quantize_codes(torch.tensor([1.0]), bits=16)
    assert q.item() == 32767 and z.item() == -32767  # anchor 1.0: floor(2048·0) − 32767


def test_8bit_step_is_2_pow_1_over_16():
    levels = torch.unique(log_quantize(torch.linspace(1, 2, 5000), max_abs=2.0)).double()
    assert torch.allclose(levels[1:] / levels[:-1], torch.full((16,), 2 ** (1 / 16), dtype=torch.float64),
                          rtol=1e-6)


def test_all_zero_and_bad_input():
    assert torch.equal(log_quantize(torch.zeros(5)), torch.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        log_quantize(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="8-bit and 16-bit"):
        log_quantize(torch.ones(3), bits=4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the device-agnostic path is tested on CPU")
def test_same_on_cuda():
    x = torch.randn(1000)
    assert torch.equal(log_quantize(x.cuda()).cpu(), log_quantize(x))


def test_log2_form_matches_cuda_form():
    # The CUDA form (k = floor(16·log2 M0)+1, M = 2^(k/16), x̂ = (M/256)·2^(q/16), q = rint(16·log2(256x/M)))
    # computed independently in Python floats gives the same values as the implementation.
    torch.manual_seed(0)
    x = torch.rand(200) * 3 + 0.1
    m0 = x.max().item()
    k = math.floor(16 * math.log2(m0)) + 1
    big_m = 2 ** (k / 16)
    ref = []
    for v in x.tolist():
        q = min(max(round(16 * math.log2(256 * v / big_m)), 0), 127)
        ref.append(big_m / 256 * 2 ** (q / 16))
    assert torch.allclose(log_quantize(x), torch.tensor(ref), rtol=1e-6, atol=0)
