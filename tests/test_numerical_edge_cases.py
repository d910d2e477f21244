"""Numerical edge cases have defined behaviour (issue 8): zero ranges, extreme magnitudes, half precision,
tiny shapes, non-finite data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import quantzoo
from quantzoo.errors import DataError
from quantzoo.math import compute_qparams, fake_quantize, quantize, reduce_min_max
from quantzoo.spec import QuantSpec

SPECS = [
    QuantSpec(bits=8),
    QuantSpec(bits=8, signed=False, symmetric=False),
    QuantSpec(bits=4, granularity="per_channel", axis=0),
    QuantSpec(bits=8, symmetric=False, granularity="per_channel", axis=1),
]


def _fq(x, spec):
    lo, hi = reduce_min_max(x, spec)
    s, z = compute_qparams(lo, hi, spec)
    return fake_quantize(x, s, z, spec)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
def test_constant_tensor_is_reproduced(spec, value):
    # A zero-width range: the scale falls back to eps or to |value|/q, and zero stays exactly zero.
    # Error at most half a step (symmetric specs split the range over (qmax-qmin)/2 steps).
    x = torch.full((4, 3, 2), value)
    out = _fq(x, spec)
    assert torch.isfinite(out).all()
    half_step = abs(value) / ((spec.qmax - spec.qmin) / 2) / 2
    assert (out - x).abs().max() <= half_step * 1.001 + 1e-6


def test_all_zero_weights_quantize_to_zero():
    spec = QuantSpec(bits=4, granularity="per_channel")
    w = torch.zeros(8, 5)
    assert torch.equal(_fq(w, spec), w)
    q = quantize(w, *compute_qparams(*reduce_min_max(w, spec), spec), spec)
    assert torch.equal(q, torch.zeros_like(q))


@pytest.mark.parametrize("magnitude", [1e-30, 1e-8, 1e-3, 1e8, 1e30])
def test_extreme_magnitudes_stay_finite_and_error_is_bounded(magnitude):
    spec = QuantSpec(bits=8, symmetric=False)
    x = torch.linspace(-1, 1, 101) * magnitude
    out = _fq(x, spec)
    assert torch.isfinite(out).all()
    # The scale never drops below float32 eps (as in torch.ao), so the step is max(range/255, eps):
    # tiny tensors flush towards zero by at most half of that step; large ones keep half-a-step accuracy.
    step = max(2 * magnitude / 255, torch.finfo(torch.float32).eps)
    assert (out - x).abs().max() <= step / 2 * 1.001


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_keep_their_dtype(dtype):
    spec = QuantSpec(bits=8)
    x = torch.randn(16, 8).to(dtype)
    out = _fq(x, spec)
    assert out.dtype == dtype
    ref = _fq(x.float(), spec)
    assert torch.allclose(out.float(), ref, atol=float(ref.abs().max()) / 100)


def test_nan_in_range_is_an_error_naming_the_problem():
    spec = QuantSpec(bits=8)
    with pytest.raises(ValueError, match="NaN or Inf"):
        compute_qparams(torch.tensor(float("nan")), torch.tensor(1.0), spec)


def _tiny_cnn(channels=1):
    return nn.Sequential(nn.Conv2d(channels, 1, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_calibration_data_raises_data_error(bad):
    x = torch.randn(4, 1, 4, 4)
    x[1, 0, 2, 3] = bad
    q = quantzoo.get_quantizer("uniform")()
    prepared = q.prepare(_tiny_cnn())
    with pytest.raises(DataError, match="NaN or Inf"):
        q.calibrate(prepared, [x])


def test_empty_calibration_set_is_an_error():
    q = quantzoo.get_quantizer("uniform")()
    prepared = q.prepare(_tiny_cnn())
    with pytest.raises(DataError, match="empty"):
        q.calibrate(prepared, [])


def test_batch_size_one_and_single_channel_layers():
    # One sample, one input channel, one output channel: per-channel axes of size 1.
    torch.manual_seed(0)
    model = _tiny_cnn(channels=1).eval()
    x = torch.randn(1, 1, 4, 4)
    cfg = {"weight": {"bits": 8, "granularity": "per_channel", "axis": 0}}
    converted = quantzoo.quantize(model, "uniform", cfg, calibration=[x])
    out = converted(x).detach()
    assert out.shape == (1, 2) and torch.isfinite(out).all()
    assert converted[0].weight_bits == 8
    assert converted[0].weight.shape[0] == 1


# -- gaps closed for issue 8: where the bad value is, weights, half-precision models, huge activations ------
def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def test_non_finite_calibration_batch_is_named_by_its_index():
    batches = [torch.randn(4, 4), torch.randn(4, 4), torch.randn(4, 4)]
    batches[2][3, 1] = float("nan")
    q = quantzoo.get_quantizer("uniform")()
    prepared = q.prepare(_mlp())
    with pytest.raises(DataError, match="calibration batch 2"):
        q.calibrate(prepared, batches)


@pytest.mark.parametrize("method", ["uniform", "bnn", "xnor", "twn", "dorefa"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_an_error_naming_the_parameter(method, bad):
    # Without the check, sign()-based methods turned a NaN weight into a finite code and hid a broken model.
    if method != "uniform":
        pytest.importorskip(f"quantzoo_plugin_{method}")
    model = _mlp()
    with torch.no_grad():
        model[2].weight[1, 3] = bad
    q = quantzoo.get_quantizer(method)()
    with pytest.raises(DataError, match=r"2\.weight.*NaN or Inf"):
        q.prepare(model)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_quantizes_end_to_end(dtype):
    model = _mlp().to(dtype)
    x = torch.randn(16, 4).to(dtype)
    converted = quantzoo.quantize(model, "uniform", calibration=[x])
    out = converted(x).detach()
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = quantzoo.quantize(_mlp(), "uniform", calibration=[x.float()])(x.float()).detach()
    assert torch.allclose(out.float(), ref, atol=0.1 * float(ref.abs().max()) + 0.05)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_extreme_activations_through_a_quantized_model_stay_finite(scale):
    model = _mlp()
    x = torch.randn(16, 4) * scale
    out = quantzoo.quantize(model, "uniform", calibration=[x])(x)
    assert torch.isfinite(out).all()


def test_constant_calibration_data_and_an_all_zero_layer():
    model = _mlp()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()
    converted = quantzoo.quantize(model, "uniform", calibration=[torch.zeros(4, 4)])
    out = converted(torch.randn(2, 4))
    assert torch.isfinite(out).all()
    assert torch.equal(converted[0].weight, torch.zeros_like(converted[0].weight))  # zero stays exactly zero


def test_per_channel_axis_of_size_one_in_every_role():
    # A (1, k) Linear weight per output channel, and a per-channel spec on a one-channel activation.
    spec = QuantSpec(bits=4, granularity="per_channel", axis=0)
    w = torch.tensor([[0.3, -1.2, 0.7, 0.0]])
    lo, hi = reduce_min_max(w, spec)
    assert lo.shape == hi.shape == (1,)
    out = _fq(w, spec)
    step = 1.2 / 7  # symmetric int4: max|w| / qmax with qmax = 7
    assert (out - w).abs().max() <= step / 2 + 1e-6
    assert out[0, 3] == 0  # zero stays exactly zero
