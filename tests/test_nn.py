"""Quantized modules: FakeQuant modes and LSQ training, Quant layers vs float layers, bake(), state_dict round
trips of prepared and converted models, BN folding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import quantzoo
from quantzoo.errors import ConfigError, NotCalibratedError
from quantzoo.math import compute_qparams, fake_quantize, reduce_min_max
from quantzoo.nn import (
    FakeQuant,
    QuantConv1d,
    QuantConv2d,
    QuantLayerMixin,
    QuantLinear,
    fold_batch_norms,
    to_quant_layer,
)
from quantzoo.observers import MinMaxObserver, MovingAverageMinMaxObserver
from quantzoo.spec import QuantSpec

torch.set_num_threads(1)


def _fq(spec, **kw):
    return FakeQuant(spec, MinMaxObserver(spec), **kw)


# ---------------------------------------------------------------------------------------------------------
# FakeQuant
# ---------------------------------------------------------------------------------------------------------
def test_observe_only_mode_returns_input_and_records_range():
    spec = QuantSpec(bits=8, signed=False, symmetric=False)
    fq = _fq(spec, quantizing=False)
    x = torch.randn(4, 5)
    assert fq(x) is x
    want = compute_qparams(*reduce_min_max(x, spec), spec)
    assert torch.equal(fq.scale, want[0]) and torch.equal(fq.zero_point, want[1])


def test_quantize_mode_uses_the_observer_qparams_and_freeze_stops_observing():
    spec = QuantSpec(bits=4, granularity="per_channel", axis=0)
    fq = _fq(spec)
    x = torch.randn(3, 7)
    out = fq(x)
    s, z = compute_qparams(*reduce_min_max(x, spec), spec)
    assert torch.equal(out, fake_quantize(x, s, z, spec))
    assert fq.scale.shape == (3,)
    fq.freeze()
    fq(x * 10)  # not observed
    assert torch.equal(fq.scale, s)


def test_unobserved_quantizer_refuses_to_run_in_full_precision():
    fq = _fq(QuantSpec(bits=8), observing=False)
    with pytest.raises(NotCalibratedError, match="never observed data"):
        fq(torch.randn(3))
    with pytest.raises(ConfigError, match="binarize"):
        FakeQuant(QuantSpec(bits=1, dtype="binary"), MinMaxObserver(QuantSpec(bits=8)))


def test_stochastic_rounding_only_while_training():
    torch.manual_seed(0)
    spec = QuantSpec(bits=4, rounding="stochastic")
    fq = _fq(spec)
    x = torch.randn(2000)
    fq.train()
    a, b = fq(x), fq(x)
    assert not torch.equal(a, b)
    fq.eval()
    nearest = fake_quantize(x, fq.scale, fq.zero_point, spec.model_copy(update={"rounding": "nearest_even"}))
    assert torch.equal(fq(x), nearest) and torch.equal(fq(x), fq(x))


def test_learnable_lsq_mode_trains_the_scale():
    # 3-bit, heavy-tailed data: the min-max step is far too coarse for the bulk. Minimising the
    # reconstruction error through LSQ's gradient must move the step size and lower the error.
    torch.manual_seed(0)
    spec = QuantSpec(bits=3)
    fq = FakeQuant(spec, MinMaxObserver(spec), learnable=True)
    x = torch.distributions.StudentT(4.0).sample((4096,))
    fq(x)  # initialises the learned scale from the observer
    s0 = fq.learned_scale.detach().clone()
    assert torch.equal(s0, fq.scale)
    err0 = ((fq(x) - x) ** 2).mean().item()
    opt = torch.optim.Adam([fq.learned_scale], lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        loss = ((fq(x) - x) ** 2).mean()
        loss.backward()
        assert fq.learned_scale.grad is not None and fq.learned_scale.grad.abs().item() > 0
        opt.step()
    assert fq.learned_scale.item() < 0.7 * s0.item()
    assert ((fq(x) - x) ** 2).mean().item() < 0.8 * err0
    # The observer is not consulted once the scale is learned.
    assert fq.observer.max_val.item() == x.max().item()


@pytest.mark.parametrize("per_sample", [False, True])
def test_learnable_gradient_scale_counts_features_per_sample_for_activations(per_sample):
    # Esser et al. 2020 §2.2: g = 1/sqrt(N_W·Q_P) for weights, 1/sqrt(N_F·Q_P) for activations, N_F the
    # features of one sample. A (16, 10) activation at 4 bits (Q_P = 7): g = 1/sqrt(10·7), not 1/sqrt(160·7).
    import math

    from quantzoo.math import lsq_fake_quantize

    spec = QuantSpec(bits=4)
    fq = FakeQuant(spec, MinMaxObserver(spec), learnable=True, per_sample=per_sample)
    x = torch.randn(16, 10)
    fq(x)
    fq.learned_scale.grad = None
    fq(x).sum().backward()
    s = fq.learned_scale.detach().clone().requires_grad_(True)
    lsq_fake_quantize(x, s.abs() + torch.finfo(torch.float32).eps, spec, grad_factor=1.0).sum().backward()
    n = 10 if per_sample else 160
    torch.testing.assert_close(fq.learned_scale.grad, s.grad / math.sqrt(n * 7))


def test_learnable_per_channel_state_dict_round_trip():
    spec = QuantSpec(bits=4, granularity="per_channel", axis=0)
    fq = FakeQuant(spec, MinMaxObserver(spec), learnable=True)
    x = torch.randn(5, 9)
    fq(x)
    with torch.no_grad():
        fq.learned_scale.mul_(0.8)
    fresh = FakeQuant(spec, MinMaxObserver(spec), learnable=True)
    fresh.load_state_dict(fq.state_dict())
    assert fresh.learned_scale.shape == (5,)
    assert torch.equal(fresh(x), fq(x))


# ---------------------------------------------------------------------------------------------------------
# Quant layers
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("make", "shape"), [
    (lambda: nn.Linear(6, 4), (3, 6)),
    (lambda: nn.Conv1d(2, 3, 3, padding=1, stride=2), (2, 2, 9)),
    (lambda: nn.Conv2d(2, 4, 3, padding=1, groups=2, dilation=1, bias=False), (2, 2, 5, 5)),
])
def test_quant_layers_equal_float_layers_without_quantizers(make, shape):
    torch.manual_seed(0)
    float_layer = make()
    q = to_quant_layer(float_layer)
    assert isinstance(q, (QuantLinear, QuantConv1d, QuantConv2d))
    assert q.weight is float_layer.weight  # parameters are shared, not copied
    x = torch.randn(shape)
    assert torch.equal(q(x), float_layer(x))


def test_unsupported_layer_type_is_named():
    with pytest.raises(TypeError, match="no quantized layer for LSTM"):
        to_quant_layer(nn.LSTM(3, 3))


def test_bake_puts_weights_on_the_grid():
    torch.manual_seed(0)
    w_spec = QuantSpec(bits=3, granularity="per_channel", axis=0)
    a_spec = QuantSpec(bits=8, signed=False, symmetric=False)
    layer = to_quant_layer(nn.Conv2d(3, 5, 3), weight_quantizer=_fq(w_spec), input_quantizer=_fq(a_spec))
    x = torch.randn(2, 3, 6, 6)
    before = layer(x)
    want_w = layer.quantized_weight().detach().clone()
    s, z = layer.weight_quantizer.scale.clone(), layer.weight_quantizer.zero_point.clone()
    layer.bake()
    assert layer.weight_quantizer is None and layer.weight_bits == 3
    assert torch.equal(layer.weight, want_w)
    # On the grid: integer multiples of the per-channel step within the 3-bit code range, and a fixed point
    # of the quantizer.
    codes = layer.weight.detach() / s[:, None, None, None]
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.round().min() >= -4 and codes.round().max() <= 3
    assert torch.equal(fake_quantize(layer.weight, s, z, w_spec), layer.weight)
    for c in range(5):
        assert layer.weight[c].unique().numel() <= 2**3
    assert layer.input_quantizer.observing is False
    assert torch.equal(layer(x), before)


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 4 * 4, 5))


def test_state_dict_round_trip_of_prepared_and_converted_models():
    torch.manual_seed(0)
    q = quantzoo.get_quantizer("uniform")(
        weight={"bits": 4, "granularity": "per_channel", "axis": 0},
        activation={"bits": 8, "signed": False, "symmetric": False},
    )
    data = [torch.randn(8, 1, 6, 6) for _ in range(3)]
    prepared = q.calibrate(q.prepare(_cnn()), data)
    x = torch.randn(4, 1, 6, 6)
    prepared.eval()
    # A fresh prepared model from a different float model: loading must restore everything, including
    # per-channel scale vectors whose shapes the fresh buffers do not have yet.
    other = q.prepare(_cnn())
    other.load_state_dict(prepared.state_dict())
    other.eval()
    for name in ("0", "2", "5"):
        assert other.get_submodule(name).weight_quantizer.scale.shape == (prepared.get_submodule(name).weight.shape[0],)
    for m in (prepared, other):
        for fq in m.modules():
            if isinstance(fq, FakeQuant):
                fq.freeze()
    assert torch.equal(other(x), prepared(x))

    converted = q.convert(prepared)
    other_converted = q.convert(q.calibrate(q.prepare(_cnn()), [torch.randn(8, 1, 6, 6)]))
    other_converted.load_state_dict(converted.state_dict())
    assert torch.equal(other_converted(x), converted(x))
    assert all(m.weight_bits == 4 for m in converted.modules() if isinstance(m, QuantLayerMixin))


# ---------------------------------------------------------------------------------------------------------
# BN folding
# ---------------------------------------------------------------------------------------------------------
class _Branchy(nn.Module):
    """Not a Sequential: folding must find the pairs through torch.fx."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        self.bn1d = nn.BatchNorm1d(3)
        self.shared = nn.Conv2d(2, 4, 1)
        self.bn_shared = nn.BatchNorm2d(4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        s = self.shared(x)
        y = y + self.bn_shared(s) + s  # 'shared' feeds two consumers: must not be folded
        return self.bn1d(self.fc(y.mean(dim=(2, 3))))


def _randomise_bn(model):
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def test_fold_batch_norms_equals_the_unfolded_eval_model():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(36, 3),
                        nn.BatchNorm1d(3))
    branchy = _Branchy()
    x = torch.randn(5, 2, 5, 5)
    for model in (seq, branchy):
        _randomise_bn(model)
        model.eval()
        folded = fold_batch_norms(model)
        assert not folded.training
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
        assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())  # original kept
    folded = fold_batch_norms(branchy)
    assert isinstance(folded.bn, nn.Identity) and isinstance(folded.bn1d, nn.Identity)
    assert isinstance(folded.bn_shared, nn.BatchNorm2d)
    seq_folded = fold_batch_norms(seq)
    assert isinstance(seq_folded[1], nn.Identity) and isinstance(seq_folded[5], nn.Identity)


def _mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 2))


def test_uniform_int8_policy_builds_8bit_first_and_last_layers():
    q = quantzoo.get_quantizer("uniform")(weight={"bits": 4, "granularity": "per_channel"},
                                          first_layer="int8", last_layer="fp")
    prepared = q.prepare(_mlp())
    assert prepared[0].weight_quantizer.bits == 8
    assert prepared[2].weight_quantizer.bits == 4
    assert type(prepared[6]) is nn.Linear
    assert isinstance(prepared[2].input_quantizer.observer, MovingAverageMinMaxObserver)
    assert prepared[2].input_quantizer.per_sample and not prepared[2].weight_quantizer.per_sample
