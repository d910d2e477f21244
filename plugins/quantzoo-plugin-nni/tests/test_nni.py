"""NNI config_list (3.0 and 2.x) selection, and worked numbers of each NNI quantizer's formulas."""

import math

import pytest
import torch
from torch import nn

from quantzoo import ConfigError, QuantzooWarning
from quantzoo_plugin_nni import NNIBNN, NNIPTQ, NNIQAT, NNILSQ, NNIDoReFa, NNILSQPlus, normalize, resolve
from quantzoo_plugin_nni.modules import (DoReFaOutput, DoReFaWeight, LSQQuant, TrackedQuant, dorefa_gradient,
                                         nni_qparams, target_spec)


def net():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 8),
                         nn.ReLU(), nn.Linear(8, 3))


def test_v3_selection():
    cl = [{"op_types": ["Conv2d", "Linear"], "exclude_op_names": ["5"], "target_names": ["_input_", "weight"],
           "quant_dtype": "int4", "target_settings": {"_input_": {"quant_dtype": "uint8", "quant_scheme": "affine"}}},
          {"op_names_re": ["[14]"], "op_types": ["ReLU"], "target_names": ["_output_"], "quant_dtype": "uint4"}]
    plan = resolve(net(), normalize(cl))
    assert sorted(plan) == ["0", "1", "3", "4"]
    assert set(plan["0"]) == {"_input_", "weight"} and plan["0"]["weight"]["quant_dtype"] == "int4"
    assert plan["3"]["_input_"] == {"quant_dtype": "uint8", "quant_scheme": "affine", "granularity": "default"}
    assert set(plan["1"]) == {"_output_"}
    # exclude by type and regex (re.match = prefix)
    plan = resolve(net(), normalize([{"op_types": ["Linear", "Conv2d"], "exclude_op_names_re": ["3"],
                                      "target_names": ["weight"]}]))
    assert sorted(plan) == ["0", "5"]
    # no target_names: every target of the type (Linear: _input_, weight, bias, _output_)
    plan = resolve(net(), normalize([{"op_names": ["5"]}]))
    assert set(plan["5"]) == {"_input_", "weight", "bias", "_output_"}


def test_v2_translated_with_notice():
    v2 = [{"quant_types": ["weight", "input"], "quant_bits": {"weight": 4, "input": 8}, "op_types": ["Linear"],
           "quant_scheme": "per_channel_symmetric"},
          {"exclude": True, "op_names": ["5"]}]
    with pytest.warns(QuantzooWarning, match="2.x"):
        cl = normalize(v2)
    plan = resolve(net(), cl)
    assert sorted(plan) == ["3"]
    # 2.x per_channel_* (NNI 3.0 raises on these names) = per output channel = 3.0's out_channel
    assert plan["3"]["weight"] == {"quant_dtype": "int4", "quant_scheme": "symmetric", "granularity": "out_channel"}
    assert plan["3"]["_input_"]["quant_dtype"] == "int8"
    with pytest.warns(QuantzooWarning):
        q = NNIQAT(config_list=v2)
    prepared = q.prepare(net())
    assert type(prepared[0]) is nn.Conv2d and type(prepared[5]) is nn.Linear
    assert prepared[3].weight_quantizer.spec.granularity == "per_channel"


def test_bad_config_list():
    with pytest.raises(ConfigError, match="quant_dtype"):
        NNIQAT(config_list=[{"op_types": ["Linear"], "quant_dtype": "int99"}])
    with pytest.raises(ConfigError, match="op_names"):
        NNIQAT(config_list=[{"target_names": ["weight"]}])


def test_qparams_worked_numbers():
    # int8 narrow symmetric, range [-1, 2]: s = 2/((127+127)/2) = 2/127, zp = (127-127+1)//2 = 0
    s, z = nni_qparams(torch.tensor(-1.0), torch.tensor(2.0), target_spec({"quant_dtype": "int8"}, True))
    assert float(s) == pytest.approx(2 / 127) and int(z) == 0
    # uint8 symmetric: s = 2/127.5, zp = (255+0+1)//2 = 128
    s, z = nni_qparams(torch.tensor(-1.0), torch.tensor(2.0),
                       target_spec({"quant_dtype": "uint8", "quant_scheme": "symmetric"}, False))
    assert float(s) == pytest.approx(2 / 127.5) and int(z) == 128
    # uint2 affine on [-1, 2]: s = 3/3 = 1, zp = 0 - round(-1) = 1; x = 0.6 -> round(1.6) = 2 -> (2-1)*1 = 1
    spec = target_spec({"quant_dtype": "uint2", "quant_scheme": "affine"}, False)
    tq = TrackedQuant(spec, "ema").train()
    assert tq(torch.tensor([-1.0, 0.6, 2.0])).tolist() == [-1.0, 1.0, 2.0]
    # EMA 0.99: second batch max 4 -> 0.99*2 + 0.01*4 = 2.02
    tq(torch.tensor([0.0, 4.0]))
    assert float(tq.tracked_max) == pytest.approx(2.02)


def test_lsq_dorefa_bnn_worked_numbers():
    # LSQ v3: s = 0.01, int4 narrow [-7, 7]: x = [0.034, -0.2, 0.05] -> round(clamp(x/s)) = [3, -7, 5] * 0.01
    lsq = LSQQuant(target_spec({"quant_dtype": "int4"}, False))
    x = torch.tensor([0.034, -0.2, 0.05], requires_grad=True)
    y = lsq(x)
    assert y.tolist() == pytest.approx([0.03, -0.07, 0.05], rel=1e-4)
    y.sum().backward()
    # d/ds: (round(v)-v) inside, qmin outside; times g = 1/sqrt(7*3): (3-3.4) + (-7) + (5-5)
    assert float(lsq.scale.grad) == pytest.approx((-0.4 - 7) / math.sqrt(21), rel=1e-4)
    # LSQ v2 init: 2*mean|x|/sqrt(qmax) = 2*0.2/sqrt(7)
    v2 = LSQQuant(target_spec({"quant_dtype": "int4"}, False), init="v2")
    v2(torch.tensor([0.1, -0.3]))
    assert float(v2.scale) == pytest.approx(0.4 / math.sqrt(7))
    # DoReFa weight, int2 narrow [-1, 1]: grid s = 1/2, zp = -1 -> u in [0,1] on {0, .5, 1} -> 2u-1 in {-1,0,1}
    w = torch.tensor([0.5, -1.0, 0.1])
    t = torch.tanh(w)
    u = t / (2 * t.abs().max()) + 0.5  # [.803, 0, .566] -> [1, 0, .5]
    assert DoReFaWeight(target_spec({"quant_dtype": "int2"}, True))(w).tolist() == [1.0, -1.0, 0.0]
    assert torch.allclose(2 * torch.round(u * 2) / 2 - 1, torch.tensor([1.0, -1.0, 0.0]))
    # DoReFa output uint2: clamp(x,0,1), s = 1/3: [-1, .4, 2] -> [0, 1/3, 1]
    out = DoReFaOutput(target_spec({"quant_dtype": "uint2"}, False))(torch.tensor([-1.0, 0.4, 2.0]))
    assert out.tolist() == pytest.approx([0, 1 / 3, 1])
    # DoReFa gradient, uint2, noise 0: grid over [-1/6, 7/6], s = (4/3)/3 = 4/9, zp = round(1/6 / (4/9)) = 0
    # g = [0.5, -1] (one sample): m = 1; g/(2m)+.5 = [.75, 0] -> codes round([.75/(4/9)+... ])
    g = torch.tensor([[0.5, -1.0]])
    spec = target_spec({"quant_dtype": "uint2"}, False)
    gq = dorefa_gradient(g, 2, spec, noise=torch.zeros(1, 1))
    # affine [-1/6, 7/6]: s = (4/3)/3 = 4/9, zp = -round((-1/6)/(4/9)) = -round(-.375) = 0
    # .75/(4/9) = 1.6875 -> 2 -> 8/9; 0 -> 0 => g' = 2*(q - .5) = [2*(8/9 - .5), -1]
    assert gq.tolist()[0] == pytest.approx([2 * (8 / 9 - 0.5), -1.0], rel=1e-5)


def test_quantizers_on_toy_model():
    x = torch.randn(4, 1, 4, 4)
    for cls in (NNIQAT, NNILSQ, NNILSQPlus, NNIDoReFa):
        q = cls(config=cls.config_for_bits(4, 4))
        p = q.prepare(net())
        p.train()
        p(x).sum().backward()
    # bias correction on the Linear layers (on a Conv NNI averages over the width: test_nni_anchor.py)
    q = NNIPTQ(bias_correction=True, config_list=[{"op_types": ["Linear"], "target_names": ["weight", "_input_"],
                                                   "quant_dtype": "int8"}])
    p = q.prepare(net())
    before = p[3].bias.detach().clone()
    q.calibrate(p, [x])
    assert not torch.equal(before, p[3].bias)  # the mean output error was folded into the bias
    b = NNIBNN()
    p = b.prepare(net())
    with torch.no_grad():
        p[3].weight.mul_(10)
    b.after_optimizer_step(p)
    assert float(p[3].weight.abs().max()) <= 1.0
    assert set(torch.unique(p[3].quantized_weight()).tolist()) <= {-1.0, 1.0}


def test_layer_policy_and_lsq_harness_config():
    cfg = NNILSQ.config_for_bits(4, 4)
    p = NNILSQ(cfg).prepare(net())
    # first and last layer: the core's 8-bit layers (quantzoo.policy.int8_layer: per-channel int8 weights,
    # asymmetric uint8 input, whose zero point covers the signed raw input); body: uint4 inputs / int4 weights
    assert p[0]._quantzoo_role == p[5]._quantzoo_role == "int8"
    assert p[0].input_quantizer.spec.describe() == "uint8 asym per_tensor" and p[0].weight_quantizer.bits == 8
    assert p[3].input_quantizer.spec.describe().startswith("uint4") and p[3].weight_quantizer.bits == 4
    p = NNIQAT(first_layer="fp").prepare(net())
    assert type(p[0]) is nn.Conv2d


def test_config_files(tmp_path):
    from quantzoo.bench import load_method_config

    p = tmp_path / "v3.json"
    p.write_text('[{"op_types": ["Linear"], "target_names": ["weight"], "quant_dtype": "int4"}]')
    cfg = load_method_config(p, "nni-qat")
    prepared = NNIQAT(cfg).prepare(net())
    assert type(prepared[0]) is nn.Conv2d and prepared[3].weight_quantizer.bits == 4
    p = tmp_path / "v2.yaml"
    p.write_text("config_list:\n  - quant_types: [weight]\n    quant_bits: {weight: 4}\n    op_types: [Conv2d]\n"
                 "quant_start_step: 10\n")
    with pytest.warns(QuantzooWarning, match="2.x"):
        cfg = load_method_config(p, "nni-qat")
    assert cfg.quant_start_step == 10
    plan = resolve(net(), cfg.config_list)
    assert list(plan) == ["0"] and plan["0"]["weight"]["quant_dtype"] == "int4"
    # the row's W/A label: the narrowest weight and activation dtypes (weights only here: float activations)
    assert NNIQAT.bits_of_config(cfg) == (4, None)
    mixed = NNIQAT.Config(config_list=[
        {"op_types": ["Conv2d", "Linear"], "target_names": ["_input_", "weight"],
         "target_settings": {"weight": {"quant_dtype": "int4"}, "_input_": {"quant_dtype": "uint3"}}},
        {"op_names": ["0"], "target_names": ["_input_", "weight"], "quant_dtype": "int8"}])
    assert NNIQAT.bits_of_config(mixed) == (4, 3)
    assert NNIBNN.bits_of_config(NNIBNN.config_for_bits(1, 1)) == (1, 1)


X = torch.tensor([[1.0, 0.3]])


def toy():
    """Linear(2→2, no bias) with W = [[0.5, -0.9], [0.25, 2.0]], then a ReLU."""
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -0.9], [0.25, 2.0]]))
    return nn.Sequential(lin, nn.ReLU())


def test_toy_qat_and_ptq_forward():
    # weight int4 symmetric (narrow [-7, 7]): s = 2/7; W/s = [[1.75, -3.15], [.875, 7]] -> [[2, -3], [1, 7]]*2/7
    # input int4 affine on x = [1, .3]: min' = 0, max 1, s = 1/14, zp = -7 - round(0) = -7;
    # q = round(x*14) - 7 = [7, round(4.2) - 7 = -3] -> x̂ = (q + 7)/14 = [1, 4/14]
    cl = [{"op_types": ["Linear"], "target_names": ["weight", "_input_"], "quant_dtype": "int4",
           "target_settings": {"_input_": {"quant_scheme": "affine"}}}]
    wq = torch.tensor([[2.0, -3.0], [1.0, 7.0]]) * 2 / 7
    xq = torch.tensor([[1.0, 4 / 14]])
    for q in (NNIQAT(config_list=cl), NNIPTQ(config_list=cl)):
        p = q.prepare(toy())
        if isinstance(q, NNIPTQ):
            q.calibrate(p, [X])
        else:
            p.train()
        assert torch.allclose(p[0].quantized_weight(), wq)
        assert torch.allclose(p(X), torch.relu(xq @ wq.T))


def test_toy_lsq_bnn_dorefa_forward():
    # LSQ (v3, s = 0.01) int4: every |w|/0.01 > 7 -> w_q = ±0.07; x/0.01 clamps to 7 -> x̂ = [.07, .07];
    # y = x̂ w_q^T = [.07*.07 - .07*.07, .07*.07 + .07*.07] = [0, .0098]
    cl = [{"op_types": ["Linear"], "target_names": ["weight", "_input_"], "quant_dtype": "int4"}]
    p = NNILSQ(config_list=cl).prepare(toy())
    assert torch.allclose(p[0].quantized_weight(), torch.tensor([[0.07, -0.07], [0.07, 0.07]]), atol=1e-6)
    assert torch.allclose(p(X), torch.tensor([[0.0, 0.0098]]), atol=1e-6)
    # BNN W1A1: sign(W) = [[1, -1], [1, 1]]; y = [0.7, 1.3]; the ReLU became a Hardtanh whose output is
    # binarized: sign(hardtanh(y)) = [1, 1]
    p = NNIBNN(NNIBNN.config_for_bits(1, 1)).prepare(toy())
    assert isinstance(p[1].module, nn.Hardtanh)
    assert p[0].quantized_weight().tolist() == [[1.0, -1.0], [1.0, 1.0]]
    assert p(X).tolist() == [[1.0, 1.0]]
    # DoReFa W uint2 affine over [0,1] (s = 1/3, zp = 0): tanh(W) = [[.462, -.716], [.245, .964]],
    # u = t/(2*.964) + .5 = [[.740, .129], [.627, 1]] -> round(3u) = [[2, 0], [2, 3]] -> 2c/3 - 1;
    # ReLU output uint2 clamp(0,1): y = [1/3 - .3, 1/3 + .3] -> 3y = [.1, 1.9] -> round(3y)/3 = [0, 2/3]
    p = NNIDoReFa(NNIDoReFa.config_for_bits(2, 2)).prepare(toy())
    assert torch.allclose(p[0].quantized_weight(), torch.tensor([[1 / 3, -1.0], [1 / 3, 1.0]]))
    assert torch.allclose(p(X), torch.tensor([[0.0, 2 / 3]]))


def test_example_files_on_zoo_cnn():
    from pathlib import Path

    from quantzoo.bench import load_method_config
    from quantzoo.models.cnn import SmallCNN

    ex = Path(__file__).parents[1] / "examples"
    p = NNILSQ(load_method_config(ex / "cnn_digits_lsq_v3.yaml", "nni-lsq")).prepare(SmallCNN((1, 8, 8), 10))
    assert p.features[0].weight_quantizer.bits == 8 and p.features[3].weight_quantizer.bits == 4
    assert p.features[3].input_quantizer.spec.describe().startswith("uint4")
    assert p.classifier[1].input_quantizer.bits == 8
    with pytest.warns(QuantzooWarning, match="2.x"):
        cfg = load_method_config(ex / "cnn_digits_qat_v2.yaml", "nni-qat")
    p = NNIQAT(cfg).prepare(SmallCNN((1, 8, 8), 10))
    assert type(p.classifier[1]) is nn.Linear  # excluded
    assert p.features[7].weight_quantizer.spec.granularity == "per_channel"


def test_lsqplus_offset_gradient_and_dorefa_hook():
    # LSQ+ uint4 (qmin 0, qmax 15), s = 0.01, β = 7.5: x/s + β = [-92.5, 7.9, 207.5] -> clamp [0, 7.9, 15]
    # -> round [0, 8, 15] - 7.5 -> [-7.5, .5, 7.5]*0.01. NNI's β gradient: -s outside the range, 0 inside.
    q = LSQQuant(target_spec({"quant_dtype": "uint4", "quant_scheme": "affine"}, False), learn_zero_point=True)
    y = q(torch.tensor([-1.0, 0.004, 2.0]))
    assert y.tolist() == pytest.approx([-0.075, 0.005, 0.075], rel=1e-4)
    y.sum().backward()
    assert float(q.zero_point.grad) == pytest.approx(-2 * 0.01, rel=1e-4)
    # DoReFa's backward pre-hook quantizes the gradient reaching the layer's output: the weight gradient
    # with the hook equals the one obtained by feeding dorefa_gradient(g_out) (same noise draw) without it.
    p = NNIDoReFa(NNIDoReFa.config_for_bits(2, None)).prepare(toy())
    lin = p[0]
    g_out = torch.tensor([[0.5, -1.0]])
    torch.manual_seed(1)
    (lin(X) * g_out).sum().backward()
    with_hook = lin.weight.grad.clone()
    lin.weight.grad = None
    torch.manual_seed(1)
    gq = dorefa_gradient(g_out, 2, lin.grad_spec)
    out = torch.nn.functional.linear(X, lin.quantized_weight())
    (out * gq).sum().backward()
    assert torch.allclose(with_hook, lin.weight.grad) and not torch.allclose(gq, g_out)


def test_bias_target_is_quantized_and_baked():
    # bias int4 symmetric on b = [0.3, -0.7]: s = 0.7/7 = 0.1 -> [3, -7]*0.1
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.bias.copy_(torch.tensor([0.3, -0.7]))
    cl = [{"op_types": ["Linear"], "target_names": ["weight", "bias"], "quant_dtype": "int4"}]
    q = NNIPTQ(config_list=cl)
    p = q.prepare(nn.Sequential(lin))
    out = q.convert(p)
    assert out[0].bias.tolist() == pytest.approx([0.3, -0.7], abs=1e-6)
    assert out[0].bias_quantizer is None and out[0].weight_bits == 4
    with torch.no_grad():
        lin.bias.copy_(torch.tensor([0.33, -0.7]))
    out = q.convert(q.prepare(nn.Sequential(lin)))
    assert out[0].bias.tolist() == pytest.approx([0.3, -0.7], abs=1e-6)


def test_fuse_names_fold_bn_and_quantize_after_activation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3))
    model[1].running_mean.fill_(0.5)
    model[1].running_var.fill_(4.0)
    model.train()
    cl = [{"op_names": ["0"], "target_names": ["weight", "_output_"], "quant_dtype": "uint8",
           "quant_scheme": "affine", "fuse_names": [["0", "1", "2"]]}]
    q = NNIQAT(config_list=cl)
    p = q.prepare(model)
    assert isinstance(p[1], nn.Identity) and isinstance(p[2], nn.Identity)
    # evaluation: the fold with the running statistics, W·γ/sqrt(var + eps) = W/2 (γ = 1), b' = (b − 0.5)/2
    p.eval()
    w, b = p[0]._float_params(torch.randn(2, 1, 4, 4))
    assert torch.allclose(w, model[0].weight / (4.0 + 1e-5) ** 0.5)
    assert torch.allclose(b, (model[0].bias - 0.5) / (4.0 + 1e-5) ** 0.5)
    y = p[0](torch.randn(2, 1, 4, 4))
    assert float(y.min()) >= 0.0  # the output target sits after the fused ReLU
    # training: a float pass first updates the running mean (momentum 0.1) before the fold, as NNI
    p.train()
    p[0](torch.randn(2, 1, 4, 4))
    assert not torch.allclose(p[0].fused_bn.running_mean, torch.full((2,), 0.5))


def test_dorefa_output_only_on_activations():
    cl = [{"op_types": ["Linear"], "target_names": ["weight", "_output_"], "quant_dtype": "uint4",
           "quant_scheme": "affine"}]
    with pytest.raises(ConfigError, match="activation"):
        NNIDoReFa(config_list=cl).prepare(net())
    cl[0].update(op_types=None, op_names=["3"], fuse_names=[["3", "4"]])  # Linear 3 fused with ReLU 4: allowed
    p = NNIDoReFa(config_list=cl).prepare(net())
    assert float(p[3](torch.randn(2, 32)).min()) >= 0.0
