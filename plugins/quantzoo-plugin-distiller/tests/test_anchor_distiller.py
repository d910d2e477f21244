"""The plugin against the real Distiller (d859fc8): fixtures written by ``tests/anchors/make_distiller_refs.py``
(tensor quantizers, 6-step SGD trajectories through Distiller's quantizer classes, schedule files through its
CompressionScheduler). Values are compared to the bit, gradients to 1e-5 relative, trajectories to float
tolerance; the README's "Checked against Distiller" table lists each check."""

from __future__ import annotations

import copy
import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from quantzoo import QuantzooWarning
from quantzoo.nn import QuantLayerMixin
from quantzoo.training import TrainConfig, fit
from quantzoo_plugin_distiller import CLASS_TO_METHOD, QUANTIZERS
from quantzoo_plugin_distiller.modules import (ClippedActivation, DorefaWeight, EMAActivation, PACTActivation,
                                               RangeLinearQATWeight, ScheduledWeight, WRPNWeight)

torch.set_num_threads(1)
#: the plugin's quantizers by method name (without building the whole registry)
METHODS = {q.name: q for q in QUANTIZERS}
ANCHORS = Path(__file__).parent / "anchors"
REFS = torch.load(ANCHORS / "distiller_refs.pt", weights_only=True)
META = json.loads((ANCHORS / "distiller_refs.json").read_text())
T = REFS["tensors"]
_spec = importlib.util.spec_from_file_location("distiller_anchor_nets", ANCHORS / "nets.py")
nets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nets)


def _value_and_grad(module, x, upstream):
    x = x.clone().requires_grad_()
    out = module(x)
    out.backward(upstream)
    return out.detach(), x.grad


def _lsb(a, b, step):
    """max |a − b| in units of the quantization step."""
    return float(((a - b).abs() / step).max())


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_dorefa_weights_bit_exact(bits):
    c = T[f"dorefa_w{bits}"]
    out, grad = _value_and_grad(DorefaWeight(bits), c["w"], c["upstream"])
    assert torch.equal(out, c["out"])  # w = 0 included: +1/n, Distiller's round(n·½) half to even
    torch.testing.assert_close(grad, c["grad"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_wrpn_weights_bit_exact(bits):
    # unit-Gaussian weights: a third saturate at ±1, where n·w = ±(2^b − 1)/2 is a tie that rounds to ±2^(b−1)
    c = T[f"wrpn_w{bits}"]
    out, grad = _value_and_grad(WRPNWeight(bits), c["w"], c["upstream"])
    assert torch.equal(out, c["out"])
    assert torch.equal(grad, c["grad"])  # identity inside the clamp, 0 outside
    assert (c["w"].abs() >= 1).float().mean() > 0.3 and out.abs().max() * (2**bits - 1) / 2 == 2 ** (bits - 1)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_clipped_activation_bit_exact(bits):
    c = T[f"clip_a{bits}"]
    out, grad = _value_and_grad(ClippedActivation(bits), c["x"], c["upstream"])
    assert torch.equal(out, c["out"])  # x = ½ included: a tie, rounded up to 2^(b−1)/(2^b − 1)
    assert torch.equal(grad, c["grad"])


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("alpha", [8.0, 1.3])
def test_pact_bit_exact(bits, alpha):
    c = T[f"pact_a{bits}_alpha{alpha}"]
    pact = PACTActivation(bits, alpha)
    out, grad = _value_and_grad(pact, c["x"], c["upstream"])
    assert torch.equal(out, c["out"])
    assert torch.equal(grad, c["grad"])
    torch.testing.assert_close(pact.clip_val.grad, c["grad_alpha"], rtol=1e-5, atol=1e-6)


MODES = ["SYMMETRIC", "SYMMETRIC_RESTRICTED", "ASYMMETRIC_UNSIGNED", "ASYMMETRIC_SIGNED"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("per_channel", [0, 1])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_range_linear_qat_weights_bit_exact(mode, per_channel, bits):
    c = T[f"qatw_{mode}_pc{per_channel}_w{bits}"]
    wq = RangeLinearQATWeight(bits, mode, bool(per_channel))
    out, grad = _value_and_grad(wq, c["w"], c["upstream"])
    assert torch.equal(out, c["out"])
    assert torch.equal(grad, c["grad"])
    torch.testing.assert_close(wq.scale.reshape(-1), c["scale"].reshape(-1), rtol=0, atol=0)
    torch.testing.assert_close(wq.zero_point.reshape(-1), c["zero_point"].reshape(-1), rtol=0, atol=0)
    # Distiller's ModuleQuantMode namedtuple never equals a LinearQuantMode: every mode is asymmetric unsigned
    assert torch.equal(c["out"], T[f"qatw_ASYMMETRIC_UNSIGNED_pc{per_channel}_w{bits}"]["out"])


@pytest.mark.parametrize("mode", MODES)
def test_ema_activation_float32_and_eval(mode):
    c = T[f"ema_{mode}"]
    ema = EMAActivation(4, mode, 0.9).train()
    for i, x in enumerate(c["batches"]):
        assert torch.equal(ema(x), c["out"][i])
        for k in ("tracked_min", "tracked_max", "scale", "zero_point"):
            assert torch.equal(getattr(ema, k).reshape(1), c[k][i].reshape(1)), (i, k)
    ema.eval()
    assert torch.equal(ema(c["probe"]), c["eval_out"])  # eval: no update, the last training range
    fresh = EMAActivation(4, mode, 0.9).eval()
    with pytest.warns(QuantzooWarning, match="never observed"):
        out = fresh(c["probe"])
    assert torch.equal(out, c["untrained_eval_out"]) and not out.any()  # Distiller: range [0, 0], all zeros


# -- training trajectories ----------------------------------------------------------------------------------
def _plugin_name(key: str) -> str:
    """The Distiller state-dict key of a plugin key (the model-input EMA is ``inputs_quant`` there)."""
    if ".input_quantizer." in key:
        return "inputs_quant." + key.split(".input_quantizer.", 1)[1]
    return key.replace(".weight_quantizer.", ".").replace(".parametrizations.bias.original", ".bias")


def _run_plugin(method: str, kwargs: dict, net: str, epochs: int, steps: int, data, lr, momentum, wd):
    """The plugin through quantzoo's training loop (SGD, constant lr): the gradients of the first step, the
    losses of each epoch's last step, the trained model."""
    q = METHODS[method](**kwargs)
    model = nets.conv_net(0) if net == "conv" else nets.conv1d_net(0)
    prepared = q.prepare(model)
    probe = copy.deepcopy(prepared).train()
    q.on_epoch_start(probe, 0, epochs)
    F.cross_entropy(probe(data[0][0]), data[0][1]).backward()
    grads0 = {n: p.grad for n, p in probe.named_parameters() if p.grad is not None}
    last = []
    fit(q, prepared, data[:steps], TrainConfig(epochs=epochs, optimizer="sgd", lr=lr, momentum=momentum,
                                               weight_decay=wd, schedule="constant"),
        progress=lambda epoch, n, loss: last.append(loss))
    return q, model, prepared, torch.tensor(last), grads0


def _compare_state(prepared, ref: dict, rtol: float, atol: float) -> float:
    """Every trained parameter, BN statistic and tracked EMA range against Distiller's; the worst |Δ|."""
    worst = 0.0
    state = prepared.state_dict()
    keys = [n for n, _ in prepared.named_parameters()]
    keys += [k for k in state if k.endswith(("running_mean", "running_var", "tracked_min", "tracked_max"))]
    for k in keys:
        ref_t = ref[_plugin_name(k)]
        mine = state[k].reshape(ref_t.shape)
        torch.testing.assert_close(mine, ref_t, rtol=rtol, atol=atol, msg=lambda m, k=k: f"{k}: {m}")
        worst = max(worst, float((mine - ref_t).abs().max()))
    return worst


@pytest.mark.parametrize("name", sorted(REFS["trajectories"]))
def test_training_trajectory(name):
    spec, ref = META["trajectories"][name], REFS["trajectories"][name]
    tr = META["training"]
    method = CLASS_TO_METHOD[spec["class"]]
    data = nets.batches(tr["steps"] + 1) if spec["net"] == "conv" else nets.batches(tr["steps"] + 1, (1, 12), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantzooWarning)
        q, model, prepared, losses, grads0 = _run_plugin(method, spec["kwargs"], spec["net"], 1, tr["steps"], data,
                                                         tr["lr"], tr["momentum"], tr["weight_decay"])
    for k, v in ref["init"].items():  # the same starting point
        assert torch.equal(model.state_dict()[k], v)
    quantized = sorted(n for n, m in prepared.named_modules()
                       if isinstance(m, QuantLayerMixin) and m.weight_quantizer is not None)
    assert quantized == ref["quantized_weights"]  # Linear/Conv2d only: Distiller leaves Conv1d weights FP
    for n, g in grads0.items():
        torch.testing.assert_close(g, ref["grads_step0"][_plugin_name(n)], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses, ref["losses"][-1:], rtol=1e-5, atol=1e-6)
    _compare_state(prepared, ref["final"], rtol=1e-5, atol=1e-6)
    prepared.eval()
    with torch.no_grad():
        torch.testing.assert_close(prepared(data[tr["steps"]][0]), ref["eval_out"], rtol=1e-5, atol=1e-5)


# -- schedule files -----------------------------------------------------------------------------------------
def _bits_of(prepared):
    weights, acts = {}, {}
    for n, m in prepared.named_children():
        wq = getattr(m, "weight_quantizer", None)
        if wq is not None:
            weights[n] = getattr(wq, "nominal_bits", wq.bits)
        if isinstance(m, (ClippedActivation, PACTActivation)) or hasattr(m, "fake_q"):
            acts[n] = m.bits
        if isinstance(getattr(m, "input_quantizer", None), EMAActivation):  # Distiller's model-input quantizer
            acts["inputs_quant"] = m.input_quantizer.bits
    return weights, acts


@pytest.mark.parametrize("name", sorted(META["schedules"]))
def test_schedule_file(name):
    ref = META["schedules"][name]
    data = yaml.safe_load(ref["yaml"])
    method = METHODS[CLASS_TO_METHOD[next(iter(data["quantizers"].values()))["class"]]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantzooWarning)  # lr_scheduler policies are ignored (with a warning)
        cfg = method.config_from_file(data)
    prepared = method(cfg).prepare(nets.conv_net(0))
    weights, acts = _bits_of(prepared)
    assert weights == ref["weight_bits"]  # regex overrides; a key equal to the module name wins
    assert acts == {n: b for n, b in ref["activation_bits"].items() if b is not None}
    assert all(ref["modules"][n] == "ReLU" for n in ("relu1", "relu2") if n not in acts)
    tr = META["training"]
    loader = nets.batches(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantzooWarning)
        q, _, trained, losses, _ = _run_plugin(method.name, cfg.model_dump(), "conv", tr["schedule_epochs"], 3,
                                               loader, tr["lr"], tr["momentum"], 0.0)
    per_epoch = torch.tensor(ref["losses"])[2::3]  # the last of each epoch's three minibatches
    if ref["error"] is None:
        torch.testing.assert_close(losses, per_epoch, rtol=1e-5, atol=1e-6)
        _compare_state(trained, REFS["schedules"][name]["final"], rtol=1e-5, atol=1e-6)
        trained.eval()
        with torch.no_grad():
            out = trained(nets.batches(1, seed=2)[0][0])
        torch.testing.assert_close(out, REFS["schedules"][name]["eval_out"], rtol=1e-5, atol=1e-5)
    else:
        # Listed deviation: Distiller back-propagates twice through the graph of weights it quantized before an
        # epoch outside the policy and crashes; quantzoo keeps those weights with a straight-through gradient.
        assert "backward through the graph a second time" in ref["error"]
        torch.testing.assert_close(losses[: len(per_epoch)], per_epoch, rtol=1e-5, atol=1e-6)  # up to the crash
        assert torch.isfinite(losses).all()


def test_weights_outside_the_policy_keep_the_last_quantized_values():
    # qat_late_start: policy epochs 1-2. In epoch 0 the forward uses the weights quantized at prepare time, and
    # the float weights still train (identity gradient) — what Distiller's stale q-weights do.
    q = METHODS["distiller-qat"](bits_weights=8, bits_activations=8, starting_epoch=1, ending_epoch=3)
    prepared = q.prepare(nets.conv_net(0))
    wq = prepared.conv1.weight_quantizer
    assert isinstance(wq, ScheduledWeight)
    q.on_epoch_start(prepared, 0, 3)
    frozen = prepared.conv1.quantized_weight().detach().clone()
    with torch.no_grad():
        prepared.conv1.weight.add_(0.1)  # an optimizer step of epoch 0
    q.after_optimizer_step(prepared)
    assert torch.equal(prepared.conv1.quantized_weight(), frozen)
    q.on_epoch_start(prepared, 1, 3)
    assert torch.equal(prepared.conv1.quantized_weight(), frozen)  # epoch 1's first minibatch: still the old ones
    q.after_optimizer_step(prepared)
    assert not torch.equal(prepared.conv1.quantized_weight(), frozen)
    assert [q.policy_active(e) for e in range(5)] == [False, True, True, False, False]
    q2 = METHODS["distiller-dorefa"](starting_epoch=0, ending_epoch=4, frequency=2)
    assert [q2.policy_active(e) for e in range(5)] == [True, False, True, False, False]


# -- post-training quantization -------------------------------------------------------------------------------
P = REFS["ptq"]
STATS = META["ptq"]["stats"]


def _ptq_model():
    model = nets.conv_net(0)
    model.load_state_dict(P["state"])
    return model.eval()


def test_ptq_statistics_collector():
    # Distiller collects on the unfolded model and moves bn1's output record to conv1 when it folds BN; quantzoo
    # folds first, so conv1's output here is bn1's there (equal up to the float rounding of the folding)
    q = METHODS["distiller-ptq"]()
    prepared = q.prepare(_ptq_model())
    q.calibrate(prepared, P["calib"])
    mine = prepared._distiller_stats
    pairs = {("conv1", "inputs"): ("conv1", "inputs"), ("conv1", "output"): ("bn1", "output"),
             ("conv2", "inputs"): ("conv2", "inputs"), ("conv2", "output"): ("conv2", "output"),
             ("fc", "inputs"): ("fc", "inputs"), ("fc", "output"): ("fc", "output")}
    for (layer, kind), (ref_layer, ref_kind) in pairs.items():
        rec = mine[layer][kind][0] if kind == "inputs" else mine[layer][kind]
        ref = STATS[ref_layer][ref_kind]["0"] if ref_kind == "inputs" else STATS[ref_layer][ref_kind]
        for k in ("min", "max", "avg_min", "avg_max", "mean", "std", "b"):
            exact = (layer, kind) == ("conv1", "inputs")  # the model input: to the last float64 digit
            assert rec[k] == pytest.approx(ref[k], rel=1e-12 if exact else 2e-5, abs=0 if exact else 1e-6), (
                layer, kind, k)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("clip", ["NONE", "AVG", "N_STD", "GAUSS", "LAPLACE"])
def test_ptq_qparams_from_stats(mode, clip):
    from quantzoo_plugin_distiller.linear import mode_params
    from quantzoo_plugin_distiller.ranges import saturation_from_stats

    rec = STATS["conv2"]["output"]
    for half in (0, 1):
        for bits in (4, 8):
            lo, hi = saturation_from_stats(rec, bits, mode, clip, 2.0, bool(half))
            s, zp = mode_params(bits, lo, hi, mode)
            ref_s, ref_zp = META["ptq"]["qparams"][f"{mode}_{clip}_half{half}_b{bits}"]
            assert (float(s), float(zp)) == (ref_s, ref_zp), (half, bits)  # to the bit


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("per_channel", [0, 1])
@pytest.mark.parametrize("bits", [4, 8])
def test_ptq_weights_bit_exact(mode, per_channel, bits):
    from quantzoo_plugin_distiller.modules import RangeLinearWeight

    w = P["state"]["conv2.weight"]
    assert torch.equal(RangeLinearWeight(bits, mode, bool(per_channel))(w), P["weights"][f"{mode}_pc{per_channel}_b{bits}"])


#: Known open difference (not a permitted deviation; see the README): Distiller's PTQ computes each layer in the
#: integer domain — bias rounded to the accumulator grid s_x·s_w, the accumulator requantized with s_y/(s_x·s_w) —
#: where quantzoo fake-quantizes the input, weight and output around a float layer with a float bias. The codes
#: part where the two land on different sides of a rounding boundary; measured on this model (160 outputs),
#: (max |Δ| in output LSB, fraction of outputs off): 1 LSB at 0.6%, 1.9% and 15.6% of the outputs:
PTQ_OPEN_BOUND = {"w8a8_asym_pc": (1.0, 0.01), "w8a8_sym": (1.0, 0.02), "w4a4_asym_avg": (1.0, 0.16)}


@pytest.mark.parametrize("name", sorted(META["ptq_models"]))
def test_ptq_model_output(name, tmp_path):
    kw = dict(META["ptq_models"][name])
    ref = P["models"][name]
    stats_file = tmp_path / "acts_quantization_stats.yaml"
    stats_file.write_text(yaml.safe_dump(STATS))  # Distiller's own statistics of this model
    q = METHODS["distiller-ptq"](model_activation_stats=str(stats_file), **kw)
    converted = q.convert(q.prepare(_ptq_model()))
    with torch.no_grad():
        out = converted(P["probe"])
    lsb = (out - ref["out"]).abs() * ref["fc_output_scale"]
    max_lsb, frac = PTQ_OPEN_BOUND[name]
    assert float(lsb.max()) <= max_lsb + 1e-3 and float((lsb > 0.5).float().mean()) <= frac, \
        (float(lsb.max()), float((lsb > 0.5).float().mean()))
