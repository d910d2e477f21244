"""Data-free quantization (Nagel et al. 2019): cross-layer equalization, high-bias absorption and bias
correction against hand-worked values and their defining properties."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from quantzoo import get_quantizer
from quantzoo.bench.data import build_model
from quantzoo.nn import fold_batch_norms
from quantzoo.nn.capture import capture
from quantzoo.nn.reference import quantizers_off
from quantzoo_plugin_datafree import (BiasCorrectionQuantizer, DFQQuantizer, absorb_high_bias, cross_layer_equalize,
                                      equalization_scale, equalize_pair, find_links)
from quantzoo_plugin_datafree.equalize import ChannelStats, expected_input

torch.set_num_threads(1)  # the machine is shared (tests/conftest.py does it for the core's tests)


def test_equalization_scale_by_hand():
    # s = √(r1·r2)/r2: r = (4, 1) → √4/1 = 2;  (1, 4) → √4/4 = 1/2;  a zero range → 1 (AIMET)
    r1, r2 = torch.tensor([4.0, 1.0, 0.0]), torch.tensor([1.0, 4.0, 2.0])
    s = equalization_scale(r1, r2)
    assert s.tolist() == [2.0, 0.5, 1.0]
    # afterwards both ranges are √(r1·r2): 4/2 = 1·2 = 2, 1/0.5 = 4·0.5 = 2
    assert (r1[:2] / s[:2]).tolist() == (r2[:2] * s[:2]).tolist() == [2.0, 2.0]


def _pair(seed=0):
    # conv1's output channel i scaled by k_i ∈ [0.01, 100] and conv2's input channel i by 1/k_i: the same
    # function as the unscaled pair (relu(k·x) = k·relu(x)), with channel ranges spread over 4 decades
    torch.manual_seed(seed)
    conv1, conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 4, 3, padding=1)
    k = torch.logspace(-2, 2, 6)[torch.randperm(6)]
    with torch.no_grad():
        conv1.weight.mul_(k.reshape(6, 1, 1, 1))
        conv1.bias.mul_(k)
        conv2.weight.div_(k.reshape(1, 6, 1, 1))
    return nn.Sequential(conv1, nn.ReLU(), nn.MaxPool2d(2), conv2).eval()


def test_equalized_pair_keeps_the_function_and_equalizes_ranges():
    model, x = _pair(), torch.randn(5, 3, 8, 8)
    ref = model(x)
    r1 = model[0].weight.abs().amax(dim=(1, 2, 3))
    r2 = model[3].weight.abs().amax(dim=(0, 2, 3))
    equalize_pair(model[0], model[3])
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    geo = torch.sqrt(r1 * r2)
    torch.testing.assert_close(model[0].weight.abs().amax(dim=(1, 2, 3)), geo)
    torch.testing.assert_close(model[3].weight.abs().amax(dim=(0, 2, 3)), geo)


def test_chain_equalization_converges_and_keeps_the_function():
    model = build_model("cnn", "digits").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.logspace(-1.5, 1.5, m.num_features)[torch.randperm(m.num_features)])
    x = torch.randn(8, 1, 8, 8)
    ref = model(x)
    links = find_links(model)
    folded = fold_batch_norms(model)
    sweeps = cross_layer_equalize(folded, links, {}, sweeps=200)
    assert sweeps < 200
    torch.testing.assert_close(folded(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    for link in links:  # every pair ends equalized: producer row ranges = consumer column ranges
        p, c = folded.get_submodule(link.producer), folded.get_submodule(link.consumer)
        r1 = p.weight.abs().reshape(p.weight.shape[0], -1).amax(1)
        r2 = c.weight.abs().reshape(c.weight.shape[0], p.weight.shape[0], -1).amax(dim=(0, 2))
        torch.testing.assert_close(r1, r2, rtol=1e-4, atol=0)


def test_links_of_the_zoo_models():
    cnn = {(lk.producer, lk.consumer): lk for lk in find_links(build_model("cnn", "digits"))}
    assert list(cnn) == [("features.0", "features.3"), ("features.3", "features.7"), ("features.7", "classifier.1")]
    first, pooled, flat = cnn.values()
    assert (first.bn, first.activation, first.mean_preserving, first.flatten) == ("features.1", "relu", True, False)
    assert not pooled.mean_preserving  # max-pool between: E[x] no longer the ReLU's mean
    assert flat.flatten and flat.mean_preserving  # adaptive average pool, then Flatten into the Linear
    # residual blocks: the stem's output forks, conv2 meets an add: only conv1 → conv2 inside each block
    res = [(lk.producer, lk.consumer) for lk in find_links(build_model("resnet-tiny", "digits"))]
    assert res == [("layer1.conv1", "layer1.conv2"), ("layer2.conv1", "layer2.conv2"), ("layer3.conv1", "layer3.conv2")]
    relu6 = find_links(nn.Sequential(nn.Linear(4, 4), nn.ReLU6(), nn.Linear(4, 2)))
    assert relu6[0].activation == "relu6" and not relu6[0].scalable  # relu6(x/s) ≠ relu6(x)/s


def test_high_bias_absorption_by_hand_and_identity():
    # β = (5, 0.5), γ = (1, 1) before a ReLU: c = max(0, β − 3|γ|) = (2, 0)
    lin1, lin2 = nn.Linear(2, 2), nn.Linear(2, 1)
    with torch.no_grad():
        lin1.weight.copy_(torch.eye(2))
        lin1.bias.copy_(torch.tensor([5.0, 0.5]))
        lin2.weight.copy_(torch.tensor([[3.0, -1.0]]))
        lin2.bias.fill_(0.25)
    model = nn.Sequential(lin1, nn.ReLU(), lin2)
    x = torch.tensor([[0.0, 1.0], [-2.9, -3.0], [1.0, 0.0]])  # every pre-activation of channel 0 ≥ c = 2
    ref = model(x)
    stats = ChannelStats(torch.tensor([5.0, 0.5]), torch.tensor([1.0, 1.0]))
    c = absorb_high_bias(lin1, lin2, stats, "relu")
    assert c.tolist() == [2.0, 0.0]
    # b1 = (5, 0.5) − (2, 0) = (3, 0.5);  b2 = 0.25 + W2·c = 0.25 + 3·2 = 6.25;  the model is unchanged
    assert lin1.bias.tolist() == [3.0, 0.5] and lin2.bias.tolist() == [6.25]
    assert stats.mean.tolist() == [3.0, 0.5]
    torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-6)


def _gaussian_chain():
    # Linear(4→3) → BN → ReLU → Linear(3→2), with the BN's running statistics those of its input for
    # x ~ N(0, I) (mean 0, variance = squared row norm): the BN output is exactly N(β, γ²) per channel
    torch.manual_seed(0)
    lin1, bn, lin2 = nn.Linear(4, 3, bias=False), nn.BatchNorm1d(3), nn.Linear(3, 2)
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.copy_(lin1.weight.pow(2).sum(1) - bn.eps)
        bn.bias.copy_(torch.tensor([0.5, -0.3, 1.0]))
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    return nn.Sequential(lin1, bn, nn.ReLU(), lin2).eval()


def test_analytic_input_mean_is_the_clipped_normal_mean_of_the_data():
    model = _gaussian_chain()
    (link,) = find_links(model)
    stats = ChannelStats(model[1].bias.detach(), model[1].weight.detach().abs())
    analytic = expected_input(link, stats, model[3])
    x = torch.randn(200_000, 4, generator=torch.Generator().manual_seed(1))
    empirical = capture(model, ["3"], [x])["3"].mean(0)
    torch.testing.assert_close(analytic, empirical, rtol=0, atol=0.01)  # sd of the mean ≈ 0.004


def test_analytic_and_empirical_bias_correction_agree_on_gaussian_data():
    # the same per-channel shift ε·E[x] whether E[x] comes from the BN statistics or from data (the first
    # layer kept float, so that the last one's input is exactly the N(β, γ²) ReLU the analytic mean models)
    model = _gaussian_chain()
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(4096, 4, generator=g) for _ in range(4)]
    biases = {}
    for mode in ("analytic", "empirical"):
        q = DFQQuantizer(equalize=False, absorb_bias=False, bias_correction=mode, activation=None)
        q = DFQQuantizer(q.config.model_copy(update={"weight": q.config.weight.model_copy(update={"bits": 3}),
                                                     "first_layer": "fp", "last_layer": "same"}))
        prepared = q.prepare(model)
        q.calibrate(prepared, batches)
        biases[mode] = prepared.get_submodule("3").bias.detach().clone()
    before = model[3].bias.detach()
    assert (biases["analytic"] - before).abs().max() > 0.01  # a real correction at 3 bits
    torch.testing.assert_close(biases["analytic"], biases["empirical"], rtol=0, atol=0.01)


def test_empirical_correction_removes_every_layers_mean_output_error():
    model = build_model("cnn", "digits").eval()
    batches = [torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    q = BiasCorrectionQuantizer(BiasCorrectionQuantizer.config_for_bits(4, 4))
    prepared = q.prepare(model)
    q.calibrate(prepared, batches)
    names = ["features.0", "features.3", "features.7", "classifier.1"]
    corrected = capture(prepared, names, batches, outputs=True)
    fp = capture(fold_batch_norms(model), names, batches, outputs=True)
    for name in names:  # re-measured after all corrections: later layers do not disturb earlier ones
        dims = [d for d in range(fp[name].dim()) if d != 1]
        err = (corrected[name] - fp[name]).mean(dim=dims)
        assert err.abs().max() < 1e-4 * fp[name].abs().max(), name


def test_dfq_without_quantization_is_the_float_model():
    # BN folding and CLE are exact; HBA is exact where no pre-activation falls below c (not asserted here)
    model = build_model("cnn1d", "mnist1d").eval()
    x = torch.randn(16, 1, 40)
    q = DFQQuantizer(absorb_bias=False, bias_correction="none")
    prepared = q.prepare(model)
    q.calibrate(prepared, [x])
    with quantizers_off(prepared), torch.no_grad():
        torch.testing.assert_close(prepared(x), model(x), rtol=1e-4, atol=1e-5)


def test_cle_rescues_per_tensor_weights_of_a_badly_scaled_model():
    # Trend 2 of DFQ: on the rescaled pair per-tensor W4 min-max loses the small channels of both layers;
    # CLE undoes the k_i (up to a balanced per-channel scale) and brings them back
    model = _pair(1)
    x = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = model(x).detach()
    errors = {}
    for name, q in (("uniform", get_quantizer("uniform")(get_quantizer("uniform").config_for_bits(4, None))),
                    ("dfq", DFQQuantizer(DFQQuantizer.config_for_bits(4, None)))):
        q = type(q)(q.config.model_copy(update={
            "weight": q.config.weight.model_copy(update={"granularity": "per_tensor"}),
            "first_layer": "same", "last_layer": "same"}))
        prepared = q.prepare(model)
        q.calibrate(prepared, [x])
        with torch.no_grad():
            errors[name] = (q.convert(prepared)(x) - ref).pow(2).mean().item()
    assert errors["dfq"] < errors["uniform"] / 10, errors  # measured: 0.98 vs 0.0062 (relative MSE)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_config_for_bits_grids(bits):
    assert DFQQuantizer.config_for_bits(bits, 8).weight.granularity == "per_tensor"
    assert BiasCorrectionQuantizer.config_for_bits(bits, 8).weight.granularity == "per_channel"
    assert BiasCorrectionQuantizer.bits_of_config(BiasCorrectionQuantizer.config_for_bits(bits, None)) == (bits, None)
