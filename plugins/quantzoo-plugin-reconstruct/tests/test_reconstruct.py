"""The reconstruction loop: its start point is uniform's min-max grid, its units follow MQBench's rule,
BRECQ's Fisher loss and QDrop's dropping behave as the papers' code, and the loop lowers its own loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantzoo import ConfigError, QuantSpec, UnsupportedError, get_quantizer
from quantzoo.math import fake_quantize
from quantzoo.bench.data import build_model
from quantzoo.nn import FakeQuant, fold_batch_norms
from quantzoo.observers import MinMaxObserver
from quantzoo_plugin_reconstruct import AdaRoundQuantizer, AdaRoundWeight, BRECQQuantizer, QDropQuantizer
from quantzoo_plugin_reconstruct.recon import _ActivationHooks, fisher_weights, reconstruction_loss
from quantzoo_plugin_reconstruct.units import partition, trace

torch.set_num_threads(1)  # the machine is shared (tests/conftest.py does it for the core's tests)


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    for m in model.modules():  # non-trivial BN statistics, so that folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _batches(n=4, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 1, 8, 8, generator=g) for _ in range(n)]


def _calibrated(cls, model=None, **cfg):
    q = cls(cls.config_for_bits(4, 4).model_copy(update={"first_layer": "int8", "last_layer": "int8", **cfg}))
    prepared = q.prepare(model if model is not None else _cnn())
    q.calibrate(prepared, _batches())
    return q, prepared


@pytest.mark.parametrize("cls", [AdaRoundQuantizer, BRECQQuantizer, QDropQuantizer])
def test_zero_iterations_is_uniform_on_the_folded_model_bit_for_bit(cls):
    # Same grids and observers as `uniform`, and a fresh V rounds to nearest (ties included): without
    # reconstruction the three methods are uniform's min-max PTQ on the BN-folded model.
    model, x = _cnn(), torch.randn(16, 1, 8, 8)
    uni = get_quantizer("uniform")
    u = uni(uni.config_for_bits(4, 4).model_copy(update={"first_layer": "int8", "last_layer": "int8"}))
    pu = u.prepare(fold_batch_norms(model))
    u.calibrate(pu, _batches())
    q, pq = _calibrated(cls, model, iterations=0)
    with torch.no_grad():
        assert torch.equal(u.convert(pu)(x), q.convert(pq)(x))


def _units(model_name, dataset, pattern, chain=3):
    q = AdaRoundQuantizer()
    prepared = q.prepare(build_model(model_name, dataset))
    return [u.layers for u in partition(prepared, trace(prepared), pattern, chain)]


def test_layer_units_are_the_compute_layers():
    assert _units("cnn", "digits", "layer") == [["features.0"], ["features.3"], ["features.7"], ["classifier.1"]]


def test_block_units_follow_mqbench():
    # plain chains stack up to `chain` layers (across containers); a residual block runs from the fork to the
    # join (+ its ReLU), the projection shortcut included; the stem before a fork and the classifier stay alone
    assert _units("cnn", "digits", "block") == [["features.0", "features.3", "features.7"], ["classifier.1"]]
    assert _units("cnn1d", "mnist1d", "block", chain=2) == [["features.0", "features.3"],
                                                            ["features.6", "classifier.1"]]
    assert _units("resnet-tiny", "digits", "block") == [
        ["stem.0"], ["layer1.conv1", "layer1.conv2"], ["layer2.conv1", "layer2.conv2", "layer2.shortcut.0"],
        ["layer3.conv1", "layer3.conv2", "layer3.shortcut.0"], ["fc"]]


def test_reconstruction_loss_by_hand():
    # mean over samples (and positions) of the sum over channels: pred − tgt = [[1, 2]], [[0, 1]]
    #   mse: ((1 + 4) + (0 + 1))/2 = 3;  Fisher g = [[1, 2], [3, 1]]: ((1·1 + 4·4) + (0 + 1·1))/2 = 9
    pred, tgt = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.zeros(2, 2)
    assert reconstruction_loss(pred, tgt).item() == 3.0
    assert reconstruction_loss(pred, tgt, torch.tensor([[1.0, 2.0], [3.0, 1.0]])).item() == 9.0
    # N x C x L: channel sum, then mean over N and L: one sample, 2 channels, 2 positions, all errors 1 → 2
    assert reconstruction_loss(torch.ones(1, 2, 2), torch.zeros(1, 2, 2)).item() == 2.0


def test_fisher_weights_of_a_tiny_block_by_hand():
    # A one-layer model: the block output z is the logits. KL(p ‖ softmax(z)) with p = softmax(z_float),
    # "batchmean" over B samples, has ∂KL/∂z = (softmax(z) − p)/B, so BRECQ's weights are that, in absolute
    # value, plus 1 (save_grad_data's damping).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4)).eval()
    q = AdaRoundQuantizer(weight=QuantSpec(bits=2), activation=None, iterations=0)
    prepared = q.prepare(model)
    q.calibrate(prepared, [torch.randn(8, 3)])
    x = torch.randn(6, 3)
    graph = trace(prepared)
    unit = partition(prepared, graph, "block", 2)[0]
    full = torch.fx.GraphModule(prepared, graph)
    got = fisher_weights(full, unit, x, {"0"}, batch_size=6)
    with torch.no_grad():
        z_q, z_fp = prepared(x), model(x)
    want = (F.softmax(z_q, 1) - F.softmax(z_fp, 1)).abs() / 6 + 1
    torch.testing.assert_close(got, want)
    # with nothing quantized the model equals its float self: no gradient, weights exactly 1
    assert torch.equal(fisher_weights(full, unit, x, set(), batch_size=6), torch.ones(6, 4))


def _act_quantizer():
    q = FakeQuant(QuantSpec(bits=4, signed=False, symmetric=False),
                  MinMaxObserver(QuantSpec(bits=4, signed=False, symmetric=False)))
    q(torch.linspace(0, 3, 100))
    return q.freeze()


def test_qdrop_keeps_each_element_quantized_with_the_given_probability():
    q = _act_quantizer()
    x = torch.rand(200, 100) * 3
    x_float = x + 10.0  # the float model's input: dropped elements at the unit input take it
    quantized = fake_quantize(x, q.scale, q.zero_point, q.spec)
    hooks = _ActivationHooks([q], keep=0.5, learn_scale=False, generator=torch.Generator().manual_seed(0))
    hooks.current_input, hooks.float_input = x, x_float
    out = q(x)
    kept, dropped = out == quantized, out == x_float
    assert bool((kept | dropped).all())
    assert kept.float().mean().item() == pytest.approx(0.5, abs=0.01)  # binomial sd 0.0035 at n = 20 000
    inner = q(x.clone())  # a quantizer inside the unit: dropped elements keep their own float value
    assert bool(((inner == fake_quantize(x, q.scale, q.zero_point, q.spec)) | (inner == x)).all())
    hooks.close()
    assert torch.equal(q(x), quantized)  # hooks removed: always quantized again
    always = _ActivationHooks([q], keep=1.0, learn_scale=False, generator=torch.Generator())
    assert torch.equal(q(x), quantized)  # drop_prob = 1 (AdaRound, BRECQ): nothing dropped
    always.close()


def test_learned_activation_step_gets_the_lsq_gradient():
    q = _act_quantizer()
    hooks = _ActivationHooks([q], keep=1.0, learn_scale=True, generator=torch.Generator())
    (q(torch.rand(4, 10) * 3) ** 2).sum().backward()
    (scale,) = hooks.scales.values()
    assert scale.grad is not None and scale.grad.abs().item() > 0
    with torch.no_grad():
        scale.mul_(1.5)
    hooks.close()
    assert q.scale.item() == pytest.approx(1.5 * 3 / 15, rel=1e-5)  # written back (min-max 3/15 before)


@pytest.mark.parametrize("cls", [AdaRoundQuantizer, BRECQQuantizer, QDropQuantizer])
def test_reconstruction_lowers_its_loss_and_ends_binary(cls):
    q, prepared = _calibrated(cls, iterations=120, lr=5e-2)
    # the int8 first/last layers are the core's (rounded to nearest); every other layer is reconstructed
    assert [n for u in q.history for n in u["learned"]] == prepared._quantzoo_plan.method_layers()
    for unit in (u for u in q.history if u["learned"]):
        assert unit["hard_loss"] < unit["start_loss"], unit["layers"]
        assert unit["softness"] < 0.1, unit["layers"]  # rounding (nearly) decided: hard ≈ soft
        assert unit["hard_loss"] == pytest.approx(unit["soft_loss"], rel=0.3, abs=1e-3)
    weights = [m for m in prepared.modules() if isinstance(m, AdaRoundWeight)]
    assert weights and not any(w.soft for w in weights)


def test_reconstruction_is_deterministic():
    a = _calibrated(QDropQuantizer, iterations=10)[1]
    b = _calibrated(QDropQuantizer, iterations=10)[1]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="swap them"):
        AdaRoundQuantizer(beta_start=2.0, beta_end=20.0)
    with pytest.raises(ConfigError, match="integer grid"):
        AdaRoundQuantizer(weight=QuantSpec(bits=1, dtype="binary"))
    with pytest.raises(ConfigError, match="drop_prob"):
        QDropQuantizer(drop_prob=0.0)
    with pytest.raises(UnsupportedError, match="W1A4"):
        AdaRoundQuantizer.config_for_bits(1, 4)


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


def test_untraceable_model_fails_at_prepare():
    with pytest.raises(UnsupportedError, match="traceable"):
        AdaRoundQuantizer().prepare(_Branchy())
