"""Brevitas-style presets, injector and layers, checked against the formulas worked out by hand
(methods.md §3: ``s = threshold / int_scale``, ``int_scale = −min_int`` (signed) or ``max_int`` (unsigned))."""

import math

import pytest
import torch

from quantzoo.errors import ConfigError, UnsupportedError
from quantzoo_plugin_brevitas import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int8WeightPerTensorFloat,
    QuantConv2d,
    QuantEltwiseAdd,
    QuantIdentity,
    QuantLinear,
    QuantReLU,
    QuantTensor,
    SignedBinaryWeightPerTensorConst,
    SignedTernaryWeightPerTensorConst,
)
from quantzoo_plugin_brevitas.tensor_quant import abs_percentile


def _lin(**kw):
    torch.manual_seed(0)
    return QuantLinear(16, 6, **kw)


def test_int8_weight_per_tensor_is_narrow_max_abs():
    layer = _lin()
    w = layer.weight.detach()
    s = w.abs().max() / 127  # narrow signed 8-bit: int_scale = 127
    qw = layer.quantized_weight().detach()
    codes = qw / s
    assert torch.allclose(codes, torch.round(codes), atol=1e-4)
    assert codes.round().abs().max() == 127 and codes.round().min() >= -127
    assert torch.allclose(qw, torch.round(w / s) * s)


def test_per_channel_and_bit_width_override():
    layer = _lin(weight_quant=Int8WeightPerChannelFloat, weight_bit_width=4)
    w = layer.weight.detach()
    s = w.abs().amax(dim=1, keepdim=True) / 7  # narrow signed 4-bit: ±7
    qw = layer.quantized_weight().detach()
    assert torch.allclose(qw, torch.clamp(torch.round(w / s), -7, 7) * s)
    assert all(torch.unique(r).numel() <= 15 for r in qw)


def test_let_equals_keyword_override():
    a = _lin(weight_quant=Int8WeightPerTensorFloat.let(bit_width=3)).quantized_weight()
    b = _lin(weight_bit_width=3).quantized_weight()
    assert torch.equal(a, b)
    assert Int8WeightPerTensorFloat.settings["bit_width"] == 8  # .let does not change the original


def test_power_of_two_scale():
    # Brevitas: restrict_scaling_type=power_of_two on a float preset rounds the log2 of the threshold
    # (RoundSte, the default restrict_value_float_to_int_impl) and divides by PowerOfTwoIntScaling = 2^(8-1):
    # s = 2^round(log2 max|W|) / 128. The fixed-point presets ceil instead: 2^ceil(log2 max|W|) / 128.
    layer = _lin(weight_restrict_scaling_type="power_of_two")
    w = layer.weight.detach()
    s = 2 ** round(math.log2(w.abs().max().item())) / 128
    codes = layer.quantized_weight().detach() / s
    assert torch.equal(codes, torch.round(codes))
    scale, _ = layer.weight_quantizer.qparams(layer.weight)
    assert scale.item() == s
    from quantzoo_plugin_brevitas import Int8WeightPerTensorFixedPoint

    fixed = _lin(weight_quant=Int8WeightPerTensorFixedPoint)
    want = 2 ** math.ceil(math.log2(w.abs().max().item())) / 128
    assert fixed.weight_quantizer.qparams(fixed.weight)[0].item() == want


def test_unknown_setting_and_bad_bits_raise():
    with pytest.raises(ConfigError, match="unknown quantizer setting 'bitwidth'"):
        Int8WeightPerTensorFloat.let(bitwidth=4)
    with pytest.raises(ConfigError, match="bit_width=1"):
        _lin(weight_bit_width=1)
    with pytest.raises(ConfigError, match="restrict_scaling_type"):
        QuantReLU(restrict_scaling_type="log")


def test_binary_and_ternary_const():
    w = torch.tensor([[-0.3, -0.04, 0.0, 0.04, 0.06, 0.2]])
    lin = QuantLinear(6, 1, bias=False, weight_quant=SignedBinaryWeightPerTensorConst)
    lin.weight.data = w.clone()
    assert torch.allclose(lin.quantized_weight(), torch.tensor([[-0.1, -0.1, 0.1, 0.1, 0.1, 0.1]]))
    lin = QuantLinear(6, 1, bias=False, weight_quant=SignedTernaryWeightPerTensorConst)
    lin.weight.data = w.clone()
    # threshold 0.5·0.1 = 0.05: |w| > 0.05 → ±0.1, else 0
    assert torch.allclose(lin.quantized_weight(), torch.tensor([[-0.1, 0.0, 0.0, 0.0, 0.1, 0.1]]))
    assert lin.weight_quantizer.bits == 2


def test_percentile_by_hand():
    # Brevitas AbsPercentile: k = floor(0.01·99.999·100000 + 0.5) = 99999 → the 99999-th smallest |x|.
    x = torch.arange(1, 100001, dtype=torch.float32)
    assert abs_percentile(x, 99.999).item() == 99999.0
    assert abs_percentile(-x, 99.999).item() == 99999.0


def test_act_scale_from_stats_then_learned():
    q = QuantIdentity(collect_stats_steps=2, scaling_stats_momentum=None)
    x1 = torch.linspace(-2.0, 2.0, 1001)
    x2 = 2 * x1
    q.train()
    out1 = q(x1)
    # step 1: s = p99.999(|x1|)/128 with the batch's own statistic
    p1 = abs_percentile(x1, 99.999)
    assert torch.allclose(out1, torch.clamp(torch.round(x1 / (p1 / 128)), -128, 127) * (p1 / 128))
    q(x2)
    p2 = abs_percentile(x2, 99.999)
    assert not q.act_quant.learned
    assert torch.isclose(q.act_quant.running, (p1 + p2) / 2)  # momentum None: cumulative average
    out3 = q(x1)  # step 3: the running value becomes the learned parameter
    assert q.act_quant.learned
    s = (p1 + p2) / 2 / 128
    assert torch.allclose(out3, torch.clamp(torch.round(x1 / s), -128, 127) * s, atol=1e-6)
    out3.sum().backward()
    assert q.act_quant.value.grad is not None and q.act_quant.value.grad.abs() > 0


def test_uint8_relu_and_quant_tensor():
    relu = QuantReLU(return_quant_tensor=True)
    relu.eval()
    x = torch.randn(4, 50)
    qt = relu(x)
    assert isinstance(qt, QuantTensor) and not qt.signed and qt.bit_width == 8
    # eval mode before any statistics: Brevitas' running value starts at 1, so s = 1/255
    assert qt.scale.item() == pytest.approx(1 / 255)
    relu.train()
    qt = relu(x)  # a training step reports the scale of this batch's statistic
    s = abs_percentile(torch.relu(x), 99.999) / 255
    assert torch.equal(qt.scale, s)
    assert qt.is_valid and qt.int().min() >= 0 and qt.int().max() <= 255
    assert torch.allclose(qt.value, qt.int().float() * qt.scale)
    # tensor-like: torch functions act on the value, quant layers accept it
    assert torch.equal(torch.flatten(qt), qt.value.flatten())
    assert QuantLinear(50, 3)(qt).shape == (4, 3)


def test_eltwise_add_and_conv():
    add = QuantEltwiseAdd(input_bit_width=4, return_quant_tensor=True).eval()
    a, b = torch.randn(2, 8), torch.randn(2, 8)
    out = add(a, b)
    assert out.is_valid and out.bit_width == 8 and out.signed
    conv = QuantConv2d(1, 2, 3, padding=1, weight_quant=Int8WeightPerChannelFloat,
                       input_quant=Int8ActPerTensorFloat, input_bit_width=6)
    assert conv(torch.randn(1, 1, 5, 5)).shape == (1, 2, 5, 5)
    assert conv.input_quantizer.bits == 6


def test_return_quant_tensor_needs_output_quant():
    with pytest.raises(UnsupportedError, match="output_quant"):
        QuantLinear(4, 2, return_quant_tensor=True)
    with pytest.raises(UnsupportedError, match="bias_quant"):
        QuantLinear(4, 2, bias_quant=Int8ActPerTensorFloat)


def test_fixed_point_activation_scale_is_power_of_two_learned_in_log_domain():
    from quantzoo_plugin_brevitas import Int8ActPerTensorFixedPoint

    q = QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, collect_stats_steps=1)
    x = torch.linspace(-3.0, 3.0, 1001)
    q.train()
    q(x)
    q(x)  # second step: the log2 threshold becomes the parameter
    p = abs_percentile(x, 99.999).item()
    assert q.act_quant.value.item() == pytest.approx(math.log2(p), rel=1e-6)
    scale = q.act_quant.qparams()[0].item()
    assert scale == 2 ** math.ceil(math.log2(p / 128))  # 2^ceil(log2(threshold) − log2(128))


def test_eval_before_any_statistics_still_quantizes():
    q = QuantIdentity(bit_width=2).eval()  # signed 2-bit: codes −2..1
    x = torch.linspace(-1.0, 1.0, 101)
    out = q(x)
    assert torch.unique(out).numel() <= 4 and not torch.equal(out, x)
