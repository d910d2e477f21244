"""Worked numbers: each Distiller quantizer's fake-quantized weights and activations against values computed
by hand from Distiller's formulas (q_utils.py, clipped_linear.py; methods.md §1)."""

import pytest
import torch
from torch import nn

from quantzoo_plugin_distiller import DistillerDorefa, DistillerPACT, DistillerPTQ, DistillerQAT, DistillerWRPN
from quantzoo_plugin_distiller.linear import fake_quantize, mode_params, quantized_range
from quantzoo_plugin_distiller.modules import (ClippedActivation, DorefaWeight, EMAActivation, PACTActivation,
                                               RangeLinearQATWeight, WRPNWeight)
from quantzoo_plugin_distiller.ranges import saturation_from_stats
from quantzoo.errors import ConfigError, NotCalibratedError


def _toy():
    """Linear(2→2) without bias and a ReLU: weights [[0.5, -1.0], [0.25, 2.0]]."""
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -1.0], [0.25, 2.0]]))
    return nn.Sequential(lin, nn.ReLU())


def _fq(x, lo, hi, bits, mode):
    s, zp = mode_params(bits, torch.tensor(lo), torch.tensor(hi), mode)
    return fake_quantize(torch.tensor(x), s, zp, quantized_range(bits, mode))


def test_scale_convention_asymmetric_unsigned():
    # Range [-1, 2], 2 bits, ASYMMETRIC_UNSIGNED: Distiller s = (2^2-1)/(2-(-1)) = 1, zp = round(1*-1) = -1.
    # x = 0.4 -> q = round(0.4 + 1) = 1 -> x̂ = (1 + zp)/s = 0; x = 1.7 -> q = round(2.7) = 3 -> x̂ = 2;
    # x = -3 -> q = round(-2) = -2, clamped to 0 -> x̂ = -1.
    s, zp = mode_params(2, torch.tensor(-1.0), torch.tensor(2.0), "ASYMMETRIC_UNSIGNED")
    assert (float(s), float(zp)) == (1.0, -1.0)
    assert _fq([0.4, 1.7, -3.0], -1.0, 2.0, 2, "ASYMMETRIC_UNSIGNED").tolist() == pytest.approx([0.0, 2.0, -1.0])


def test_scale_convention_signed_and_symmetric():
    # ASYMMETRIC_SIGNED, 3 bits, [-1, 2.5]: s = 7/3.5 = 2, zp = round(-2) + 4 = 2; codes [-4, 3].
    s, zp = mode_params(3, torch.tensor(-1.0), torch.tensor(2.5), "ASYMMETRIC_SIGNED")
    assert (float(s), float(zp)) == (2.0, 2.0)
    # SYMMETRIC, 3 bits, max|x| = 3.5: s = (7/2)/3.5 = 1, codes [-4, 3]: 3.4 -> 3, -3.6 -> -4.
    assert _fq([3.4, -3.6], -3.5, 1.0, 3, "SYMMETRIC").tolist() == [3.0, -4.0]
    # SYMMETRIC_RESTRICTED, 3 bits, max 3: s = 3/3 = 1, codes [-3, 3]: -3.6 -> -3.
    assert _fq([-3.6], -3.0, 1.0, 3, "SYMMETRIC_RESTRICTED").tolist() == [-3.0]
    # zero range: Distiller overrides the saturation so that the scale is 1
    assert float(mode_params(3, torch.tensor(0.0), torch.tensor(0.0), "SYMMETRIC_RESTRICTED")[0]) == 1.0
    assert float(mode_params(3, torch.tensor(0.0), torch.tensor(0.0), "ASYMMETRIC_UNSIGNED")[0]) == 1.0


STATS = {"min": -2.0, "max": 6.0, "avg_min": -1.0, "avg_max": 4.0, "mean": 1.0, "std": 0.5, "b": 0.25}


def test_clip_modes_from_stats():
    assert [float(v) for v in saturation_from_stats(STATS, 8, "ASYMMETRIC_UNSIGNED", "AVG")] == [-1.0, 4.0]
    # N_STD n=2: [max(-2, 1-1), min(6, 1+1)] = [0, 2]
    assert [float(v) for v in saturation_from_stats(STATS, 8, "ASYMMETRIC_UNSIGNED", "N_STD", 2)] == [0.0, 2.0]
    # LAPLACE 8 bits symmetric: alpha = 9.89*0.25 = 2.4725; clip = |1| + alpha = 3.4725
    lo, hi = saturation_from_stats(STATS, 8, "SYMMETRIC", "LAPLACE")
    assert float(hi) == pytest.approx(3.4725) and float(lo) == pytest.approx(-3.4725)
    # GAUSS 8 bits asymmetric: alpha = 3.92*0.5 = 1.96; lo = max(avg_min=-1, 1-1.96) = -0.96; hi = lo + 2alpha
    lo, hi = saturation_from_stats(STATS, 8, "ASYMMETRIC_UNSIGNED", "GAUSS")
    assert (float(lo), float(hi)) == pytest.approx((-0.96, 2.96))
    # half range (after ReLU) uses the positive table: alpha = 4.2*0.5 = 2.1, hi = lo + alpha
    lo, hi = saturation_from_stats(STATS, 8, "ASYMMETRIC_UNSIGNED", "GAUSS", half_range=True)
    assert (float(lo), float(hi)) == pytest.approx((-1.0, 1.1))


def test_ptq_toy_model_weights_and_activations():
    # SYMMETRIC 8-bit weights, per tensor: max|w| = 2 -> s = 127.5/2, S = 2/127.5.
    # w = 0.25 -> round(15.9375) = 16 -> 16*2/127.5 = 0.25098...; w = 2 -> round(127.5) = 128 -> clamp 127.
    model = _toy()
    q = DistillerPTQ(bits_activations=8, bits_parameters=8, mode="SYMMETRIC")
    prepared = q.prepare(model)
    x = torch.tensor([[1.0, 0.5], [-0.5, 1.0]])
    q.calibrate(prepared, [x])
    conv = q.convert(prepared)
    S = 2 / 127.5
    assert conv[0].weight[1].tolist() == pytest.approx([16 * S, 127 * S])
    assert conv[0].weight[0].tolist() == pytest.approx([round(0.5 / S) * S, -round(1.0 / S) * S])
    # input stats: min -0.5, max 1 -> symmetric s_in = 127.5/1. Output y = W x̂ (before ReLU):
    # y0 = [0.5*1 - 1*0.5, 0.5*-0.5 - 1*1] = [0, -1.25]; ReLU follows, so half range: stats clipped to [0, 1.0]
    # (max of y1 = [0.25+1.0, -0.125+2] -> 1.875) -> output s = 127.5/1.875 on relu(y).
    out = conv[0](x)
    s_in = 1.0 / 127.5
    xq = torch.round(x / s_in) * s_in
    wq = conv[0].weight
    y = torch.relu(xq @ wq.T)
    s_out = 1.875 / 127.5
    expected = torch.clamp(torch.round(y / s_out), -128, 127) * s_out
    assert torch.allclose(out, expected, atol=1e-6)


def test_ptq_dynamic_and_per_channel():
    model = _toy()
    q = DistillerPTQ(per_channel_wts=True, dynamic=True, mode="SYMMETRIC_RESTRICTED")
    prepared = q.prepare(model)
    conv = q.convert(prepared)  # dynamic: no calibration needed
    # per channel restricted: row 0 max 1 -> S = 1/127; row 1 max 2 -> S = 2/127
    assert conv[0].weight[0].tolist() == pytest.approx([64 / 127, -1.0])  # 0.5*127 = 63.5 -> 64 (half even)
    assert conv[0].weight[1].tolist() == pytest.approx([round(0.25 * 63.5) * 2 / 127, 2.0])


def test_ptq_stats_roundtrip_yaml(tmp_path):
    model = _toy()
    out = tmp_path / "stats.yaml"
    q = DistillerPTQ(stats_out=str(out))
    prepared = q.prepare(model)
    q.calibrate(prepared, [torch.tensor([[1.0, 0.5], [-0.5, 1.0]])])
    import yaml
    stats = yaml.safe_load(out.read_text())
    rec = stats["0"]["inputs"][0]
    # two samples: per-sample mins [0.5, -0.5] -> avg_min 0; maxes [1, 1] -> avg_max 1; mean 0.5
    # std (population, second pass) = sqrt(mean((x-0.5)^2)) = sqrt((0.25+0+1+0.25)/4) = sqrt(0.375)
    assert (rec["min"], rec["max"], rec["avg_min"], rec["avg_max"], rec["mean"]) == (-0.5, 1.0, 0.0, 1.0, 0.5)
    assert rec["std"] == pytest.approx(0.375 ** 0.5) and rec["b"] == pytest.approx(0.5)
    q2 = DistillerPTQ(model_activation_stats=str(out))
    p2 = q2.prepare(model)  # static from the file: no calibration needed
    x = torch.tensor([[0.3, -0.2]])
    assert torch.equal(q2.convert(p2)(x), q.convert(prepared)(x))


def test_qat_weight_asymmetric_whatever_the_mode_and_ema():
    # Distiller's QAT runs every mode as ASYMMETRIC_UNSIGNED (the ModuleQuantMode namedtuple is never equal to a
    # LinearQuantMode). 2 bits, w = [1.0, -0.4, 0.1]: s = 3/1.4, zp = round(s·-0.4) = round(-0.857) = -1;
    # codes round(s·w + 1) = [round(3.14), round(0.143), round(1.21)] = [3, 0, 1] -> (q - 1)/s.
    s = 3 / 1.4
    for mode in ("SYMMETRIC", "ASYMMETRIC_UNSIGNED"):
        wq = RangeLinearQATWeight(2, mode)
        assert wq(torch.tensor([1.0, -0.4, 0.1])).tolist() == pytest.approx([2 / s, -1 / s, 0.0])
        assert wq.bits == 2
    # EMA decay 0.9 (float32), batches with (min, max) = (-1, 3) then (-3, 1):
    # biased max: 0.1*3 = 0.3 -> /(1-0.9) = 3; then 0.9*0.3 + 0.1*1 = 0.37 -> /(1-0.81) = 1.947368...
    ema = EMAActivation(8, "ASYMMETRIC_UNSIGNED", ema_decay=0.9).train()
    ema(torch.tensor([-1.0, 3.0]))
    assert float(ema.tracked_max) == pytest.approx(3.0, rel=1e-6)
    ema(torch.tensor([-3.0, 1.0]))
    assert float(ema.tracked_max) == pytest.approx(0.37 / 0.19, rel=1e-6)
    assert float(ema.tracked_min) == pytest.approx((0.9 * -0.1 + 0.1 * -3.0) / 0.19, rel=1e-6)
    assert ema.tracked_max.dtype == ema.ema_decay.dtype == torch.float32


def test_dorefa_pact_wrpn_worked_numbers():
    # DoReFa 2 bits: tanh([0.5, -1, 0.25, 2]) / (2*tanh(2)) + 0.5, round(3*u)/3, then 2x-1.
    w = torch.tensor([0.5, -1.0, 0.25, 2.0])
    t = torch.tanh(w)
    u = t / (2 * t.abs().max()) + 0.5
    expected = 2 * torch.round(3 * u) / 3 - 1
    assert torch.allclose(DorefaWeight(2)(w), expected)
    # by hand: tanh = [.462, -.762, .245, .964], u = [.740, .105, .627, 1], 3u -> codes [2, 0, 2, 3]
    assert expected.tolist() == pytest.approx([1 / 3, -1.0, 1 / 3, 1.0])
    # DoReFa 1 bit: E|w| * sign(w) = 0.9375 * [1, -1, 1, 1]; sign(0) = +1
    assert DorefaWeight(1)(torch.tensor([0.0, -1.0, 0.75, 2.0])).tolist() == pytest.approx([0.9375, -0.9375, 0.9375, 0.9375])
    # DoReFa/WRPN activation 2 bits: clamp(x,0,1) then round(3x)/3: [-1, 0.2, 0.5, 2] -> [0, 1/3, 2/3, 1]
    assert ClippedActivation(2)(torch.tensor([-1.0, 0.2, 0.5, 2.0])).tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    # PACT alpha 8, 2 bits: y = min(relu(x), 8); round(y*3/8)*8/3: [-1, 2, 5, 9] -> [0, 8/3, 16/3, 8]
    pact = PACTActivation(2, 8.0)
    x = torch.tensor([-1.0, 2.0, 5.0, 9.0])
    y = pact(x)
    assert y.tolist() == pytest.approx([0, 8 / 3, 16 / 3, 8])
    y.sum().backward()
    assert float(pact.clip_val.grad) == 1.0  # only x = 9 >= alpha contributes
    # WRPN 2 bits, Distiller quirk: n = 1.5, round(1.5*clamp(w)) with no clamp -> five levels {0,±1,±2}/1.5
    ww = WRPNWeight(2)(torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.2]))
    assert ww.tolist() == pytest.approx([-2 / 1.5, -1 / 1.5, 0, 1 / 1.5, 2 / 1.5])
    # corrected: n = 1 -> {-1, 0, 1}
    assert WRPNWeight(2, "paper")(torch.tensor([-1.0, -0.4, 0.6, 1.2])).tolist() == [-1.0, 0.0, 1.0, 1.0]


@pytest.mark.filterwarnings("ignore::quantzoo.QuantzooWarning")
def test_qat_methods_on_toy_model():
    x = torch.tensor([[1.0, 0.5]])
    for cls, kw in ((DistillerDorefa, {}), (DistillerPACT, {}), (DistillerWRPN, {"levels": "paper"})):
        q = cls(bits_weights=2, bits_activations=2, **kw)
        prepared = q.prepare(_toy())
        assert type(prepared[1]).__name__ in ("ClippedActivation", "PACTActivation")
        conv = q.convert(prepared)
        w = conv[0].weight
        assert torch.unique(w).numel() <= 4
    # range-linear QAT: ReLU wrapped, model input quantized
    q = DistillerQAT(bits_weights=4, bits_activations=4)
    prepared = q.prepare(_toy())
    assert type(prepared[1]).__name__ == "FakeQuantizationWrapper"
    assert isinstance(prepared[0].input_quantizer, EMAActivation) and len(prepared) == 2
    prepared(x)


X = torch.tensor([[1.0, 0.25]])
W = torch.tensor([[0.5, -1.0], [0.25, 2.0]])


@pytest.mark.filterwarnings("ignore::quantzoo.QuantzooWarning")
@pytest.mark.parametrize("cls, kw", [(DistillerDorefa, {}), (DistillerPACT, {"act_clip_init_val": 1.0})])
def test_toy_model_dorefa_pact_forward(cls, kw):
    # 2-bit DoReFa weights of W (see test_dorefa_pact_wrpn_worked_numbers): codes [[2,0],[2,3]] ->
    # w_q = [[1/3, -1], [1/3, 1]]. y = x w_q^T = [1/3 - 1/4, 1/3 + 1/4] = [1/12, 7/12]; the ReLU becomes
    # clamp(0, 1) (PACT: min(relu, alpha=1)) and round(3y)/3 = [round(.25), round(1.75)]/3 = [0, 2/3].
    q = cls(bits_weights=2, bits_activations=2, **kw)
    prepared = q.prepare(_toy())
    assert torch.allclose(prepared[0].quantized_weight(), torch.tensor([[1 / 3, -1.0], [1 / 3, 1.0]]))
    assert torch.allclose(prepared(X), torch.tensor([[0.0, 2 / 3]]))
    assert torch.allclose(q.convert(prepared)(X), torch.tensor([[0.0, 2 / 3]]))


@pytest.mark.filterwarnings("ignore::quantzoo.QuantzooWarning")
def test_toy_model_wrpn_and_range_linear_qat_forward():
    # WRPN corrected 2 bits (n = 1): round(clamp(W)) = [[round(.5)=0, -1], [round(.25)=0, 1]];
    # y = [-1/4, 1/4] -> clamp(0,1), round(3y)/3 = [0, round(.75)/3] = [0, 1/3].
    q = DistillerWRPN(bits_weights=2, bits_activations=2, levels="paper")
    p = q.prepare(_toy())
    assert p[0].quantized_weight().tolist() == [[0.0, -1.0], [0.0, 1.0]]
    assert torch.allclose(p(X), torch.tensor([[0.0, 1 / 3]]))
    # Range-linear QAT W4A4 (asymmetric unsigned, as Distiller runs every mode), w01 = -0.9 here:
    # weights: s = 15/(2 - -0.9) = 15/2.9, zp = round(s·-0.9) = round(-4.655) = -5;
    # codes round(s·W + 5) = [[round(7.586), round(0.345)], [round(6.293), round(15.345)]] = [[8, 0], [6, 15]]
    # -> (q - 5)/s = [[3, -5], [1, 10]]/s.
    # model input (first EMA batch: its own range [.25, 1] widened to [0, 1]): s = 15 -> [15, 3.75] ->
    # [15, 4]/15. Then y = x_q w_q^T, ReLU, and the ReLU's EMA range [0, max y]: s = 15/max y.
    q = DistillerQAT(DistillerQAT.config_for_bits(4, 4))
    toy = _toy()
    with torch.no_grad():
        toy[0].weight[0, 1] = -0.9
    p = q.prepare(toy).train()
    wq = torch.tensor([[3.0, -5.0], [1.0, 10.0]]) / (15 / 2.9)
    assert torch.allclose(p[0].quantized_weight(), wq)
    xq = torch.tensor([[15.0, 4.0]]) / 15
    y = torch.relu(xq @ wq.T)
    s = 15 / y.max()
    # (tolerance: float32 bias correction 0.001/(1-0.999) is 1 + 1.3e-5, not exactly 1)
    assert torch.allclose(p(X), torch.round(y * s) / s, atol=1e-4)


def test_pact_param_groups_own_weight_decay():
    q = DistillerPACT(bits_weights=4, bits_activations=4, act_clip_decay=5e-4)
    p = q.prepare(_toy())
    groups = q.param_groups(p, lr=0.1, weight_decay=1e-2)
    assert [len(g["params"]) for g in groups] == [1, 1]
    assert groups[1]["params"][0] is p[1].clip_val and float(p[1].clip_val.detach()) == 8.0
    assert (groups[0]["weight_decay"], groups[1]["weight_decay"]) == (1e-2, 5e-4)
    # act_clip_decay None: the run's weight decay
    q = DistillerPACT(bits_weights=4, bits_activations=4)
    assert q.param_groups(q.prepare(_toy()), 0.1, 1e-2)[1]["weight_decay"] == 1e-2


def test_collector_running_mean_quirk():
    # Distiller weights every running mean by the element count seen so far, also for per-sample extremes:
    # batch 1 (4 elements) per-sample mins [.5, -.5] -> avg_min 0; batch 2 (one sample [2, 3]) min 2 ->
    # avg_min = (4*0 + 2)/(4 + 1) = 0.4 (the per-sample average would be (0.5 - 0.5 + 2)/3).
    from quantzoo_plugin_distiller.stats import new_record, update_first_pass

    rec = new_record()
    update_first_pass(rec, torch.tensor([[1.0, 0.5], [-0.5, 1.0]]))
    update_first_pass(rec, torch.tensor([[2.0, 3.0]]))
    assert rec["avg_min"] == pytest.approx(0.4) and rec["min"] == -0.5 and rec["max"] == 3.0
    assert rec["mean"] == pytest.approx((2.0 + 5.0) / 6)


def test_pact_mse_init_is_the_brute_force_optimum():
    # act_clip_init_val "mse": alpha = the candidate r*max(relu(x)), r in {1/100..1}, with the least 2-bit MSE
    # of round(min(relu(x), a)*3/a)*a/3 - relu(x); computed here by a plain loop, independently of the module.
    x = torch.tensor([-2.0, 0.1, 0.3, 0.5, 0.6, 0.9, 1.1, 1.3, 4.0, 10.0])
    y = torch.relu(x)
    best = None
    for i in range(100, 0, -1):  # widest first: ties keep the least clipping
        a = float(y.max()) * i / 100
        err = float(((torch.round(torch.clamp(y, 0, a) * 3 / a) * a / 3 - y) ** 2).mean())
        if best is None or err < best[0] - 1e-12:
            best = (err, a)
    pact = PACTActivation(2, "mse")
    assert not bool(pact.initialized)
    out = pact(x)
    assert bool(pact.initialized) and float(pact.clip_val.detach()) == pytest.approx(best[1], rel=1e-5)
    a = best[1]
    assert torch.allclose(out, torch.round(torch.clamp(y, 0, a) * 3 / a) * a / 3, atol=1e-5)
    pact(x * 100)  # later batches no longer re-initialise: alpha is learned from here on
    assert float(pact.clip_val.detach()) == pytest.approx(best[1], rel=1e-5)


def test_pact_defaults_and_harness_init():
    assert DistillerPACT.Config().act_clip_init_val == 8.0  # Distiller's constructor default
    assert DistillerPACT.config_for_bits(4, 4).act_clip_init_val == "mse"
    with pytest.raises(ConfigError, match="act_clip_init_val"):
        DistillerPACT(act_clip_init_val=-1.0)
    q = DistillerPACT(bits_weights=4, bits_activations=4, act_clip_init_val="mse")
    prepared = q.prepare(_toy())
    with pytest.raises(NotCalibratedError, match="never initialised"):
        q.convert(prepared)
    q.calibrate(prepared, [torch.randn(8, 2)])
    assert bool(prepared[1].initialized) and float(prepared[1].clip_val.detach()) != 8.0
