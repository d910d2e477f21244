"""AWQ's search objective and SmoothQuant's scale worked by hand; FP invariance of the rescalings and of the
outlier model; the effect each method exists for, on a layer with an outlier input channel."""

import copy

import pytest
import torch
from torch import nn

import quantzoo
from quantzoo.errors import UnsupportedError
from quantzoo.math.awq import (apply_clip, awq_scales, pseudo_quantize, scale_search_losses, search_clip,
                               search_scale, weight_spec)
from quantzoo.math.smoothing import smooth_scales
from quantzoo.models.transformer import TinyTransformer
from quantzoo_plugin_outlier import AWQQuantizer, SmoothQuantQuantizer, add_outlier_channels

torch.set_num_threads(1)


def test_awq_objective_by_hand():
    # W = [0.35, 1.0], two tokens x = ±[4, 0.25]: s_X = mean|x| = [4, 0.25]; 2-bit asymmetric per row.
    # α = 0: s = 1, RTN on the range [0, 1]: step 1/3, Q = [1/3, 1]; output error (1/3 - 0.35)·4 = ∓1/15,
    #        loss = mean((1/15)²) = 0.0044444
    # α = ½: s_X^½ = [2, 0.5], √(max·min) = 1 → s = [2, 0.5]; W·s = [0.7, 0.5], step 0.7/3, codes
    #        round(3) = 3, round(2.1429) = 2 → Q = [0.7, 0.46667]; x/s = ±[2, 0.5]: output
    #        0.7·2 + 0.46667·0.5 = 1.63333 vs W·x = 1.4 + 0.25 = 1.65 → loss = (1/60)² = 0.00027778
    W = torch.tensor([[0.35, 1.0]])
    X = torch.tensor([[4.0, -4.0], [0.25, -0.25]])
    act = X.abs().mean(dim=1)
    spec = weight_spec(2, None)
    alphas, losses = scale_search_losses(W, X, act, spec, n_grid=2)
    assert alphas.tolist() == [0.0, 0.5]
    assert losses == pytest.approx([1 / 225, 1 / 3600], rel=1e-5)
    alpha, s = search_scale(W, X, act, spec, n_grid=2)
    assert alpha == 0.5 and torch.allclose(s, torch.tensor([2.0, 0.5]))
    # the official grid: α = i/20 for i = 0..19; α = 0 is plain round-to-nearest (s = 1)
    alphas, _ = scale_search_losses(W, X, act, spec)
    assert alphas.tolist() == [i / 20 for i in range(20)]
    assert torch.equal(awq_scales(torch.tensor([3.0, 0.1, 7.0]), 0.0), torch.ones(3))


def test_awq_clip_search_never_worse_than_no_clip():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 16, generator=g)
    X = torch.randn(16, 300, generator=g)
    spec = weight_spec(3, 8)
    m = search_clip(W, X, spec)
    org = W.abs().reshape(6, 2, 8).amax(-1)
    assert (m <= org).all() and (m >= 0.55 * org - 1e-6).all()  # candidates down to (1 - 9/20)·max
    assert (m < org).any()  # some groups of a Gaussian matrix are better clipped at 3 bits
    err = ((pseudo_quantize(apply_clip(W, m, 8), spec) - W) @ X).pow(2).mean()
    assert err <= ((pseudo_quantize(W, spec) - W) @ X).pow(2).mean()


def test_smoothquant_scale_by_hand():
    # eq. 4: s_j = max|X_j|^α / max|W_j|^(1-α); max|X| = [9, 1], max|W| = [1, 4]
    # α = ½: [3/1, 1/2] ; α = ¾: [9^¾ / 1, 1 / 4^¼] = [5.196152, 0.707107]
    act, w = torch.tensor([9.0, 1.0]), torch.tensor([1.0, 4.0])
    assert torch.allclose(smooth_scales(act, w, 0.5), torch.tensor([3.0, 0.5]))
    assert torch.allclose(smooth_scales(act, w, 0.75), torch.tensor([5.196152, 0.707107]), atol=1e-6)
    # the official clamps: weight max ≥ 1e-5 before the power, s ≥ 1e-5 after
    assert smooth_scales(torch.tensor([0.0]), torch.tensor([0.0]), 0.5).item() == pytest.approx(1e-5)


def _outlier_layer_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()


def _outlier_batches():
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(4):
        x = torch.randn(64, 16, generator=g)
        x[:, 3] *= 60.0  # an activation outlier channel
        out.append(x)
    return out


def test_smoothquant_is_fp_invariant_and_uses_the_calibration_max():
    model, batches = _outlier_layer_model(), _outlier_batches()
    q = SmoothQuantQuantizer(first_layer="same", last_layer="same")
    prepared = q.calibrate(q.prepare(model), batches)
    x = torch.cat(batches)
    lin = prepared[0]
    s_expect = smooth_scales(x.abs().amax(0), model[0].weight.abs().amax(0), 0.5)
    assert torch.allclose(1.0 / lin.input_quantizer.inv_scale, s_expect, rtol=1e-5)
    # (X·diag(s)⁻¹)·(diag(s)·W) = X·W: the smoothed float layer computes the original function
    smoothed = torch.nn.functional.linear(x * lin.input_quantizer.inv_scale, lin.weight, lin.bias)
    assert torch.allclose(smoothed, model[0](x), rtol=1e-4, atol=1e-3)


def test_smoothquant_beats_naive_w8a8_on_an_outlier_channel():
    model, batches = _outlier_layer_model(), _outlier_batches()
    x = torch.cat(batches)
    ref = model(x).detach()
    sq = SmoothQuantQuantizer(first_layer="same", last_layer="same")
    cfg = SmoothQuantQuantizer.Config()
    naive = quantzoo.get_quantizer("uniform")(weight=cfg.weight, activation=cfg.activation,
                                              activation_observer="minmax")
    err = {}
    for name, qz in (("sq", sq), ("naive", naive)):
        converted = qz.convert(qz.calibrate(qz.prepare(model), batches))
        err[name] = float((converted(x).detach() - ref).pow(2).mean())
    assert err["sq"] < 0.5 * err["naive"], err


def test_awq_beats_rtn_on_salient_channels_and_keeps_fp_function():
    model, batches = _outlier_layer_model(), _outlier_batches()
    x = torch.cat(batches)
    q = AWQQuantizer(weight_bits=3, first_layer="same", last_layer="same", mse_range=False)
    prepared = q.calibrate(q.prepare(model), batches)
    lin = prepared[0]
    assert lin.weight_quantizer.alpha > 0  # an outlier channel makes the search scale
    scaled = torch.nn.functional.linear(x * lin.input_quantizer.inv_scale, lin.weight, lin.bias)
    assert torch.allclose(scaled, model[0](x), rtol=1e-4, atol=1e-3)
    rtn = AWQQuantizer(weight_bits=3, first_layer="same", last_layer="same", mse_range=False, auto_scale=False)
    err = {}
    for name, qz in (("awq", q), ("rtn", rtn)):
        converted = qz.convert(qz.calibrate(qz.prepare(model), batches))
        err[name] = float((converted[0](x) - model[0](x)).detach().pow(2).mean())
    assert err["awq"] < err["rtn"], err


def test_outlier_transformer_is_the_same_function():
    torch.manual_seed(0)
    base = TinyTransformer((1, 40), 10).eval()
    out = add_outlier_channels(copy.deepcopy(base)).eval()
    x = torch.randn(8, 1, 40)
    assert torch.allclose(out(x), base(x), rtol=1e-4, atol=1e-5)
    assert torch.allclose(out.blocks[0].ln1.weight[[5, 37]], 50 * base.blocks[0].ln1.weight[[5, 37]])
    h = out.blocks[0].ln1(out.embed(x.transpose(1, 2).unflatten(1, (10, -1)).flatten(2)) + out.pos)
    mags = h.abs().amax(dim=(0, 1))
    assert mags[[5, 37]].min() > 10 * mags.median()
    assert "transformer-outlier" in quantzoo.get_registry().names("model")


def test_bad_settings():
    with pytest.raises(UnsupportedError, match="W8A8"):
        SmoothQuantQuantizer.config_for_bits(4, 4)
    with pytest.raises(UnsupportedError, match="activations float, not W4A"):
        AWQQuantizer.config_for_bits(4, 8)
    with pytest.raises(UnsupportedError, match="no layer left to quantize"):
        AWQQuantizer().prepare(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)))
