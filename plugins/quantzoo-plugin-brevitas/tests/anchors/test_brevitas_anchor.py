"""The plugin against the real Brevitas 0.13.4 (torch 2.13.0): the cases of ``brevitas_cases.py`` run on the
plugin and compared with what ``make_brevitas_refs.py`` recorded from Brevitas on the same inputs.

Tolerances (the issue's): quantized values equal (0 LSB: the integer codes ``round(x̂/s)`` of both sides; no
case needs the 1-LSB allowance for exact ties, because both sides compute ``round(x / s)`` with the same float
operations); scales to float32 rounding (relative 2^-22); gradients to 1e-5 relative; training trajectories
(run in float64 on both sides, see ``brevitas_cases.TRAJECTORY_DTYPE``) to 1e-5 relative. Relative means
relative to the largest magnitude of the reference quantity. Float outputs of layers without an output
quantizer are compared relative too. The float32 fixtures were made with one thread on an x86-64 AVX2 CPU;
a CPU whose kernels sum in another order (AVX-512) flips codes that lie within an ulp of a rounding tie,
so the repository's ``conftest.py`` pins torch's kernels to AVX2 for the test run.

``python plugins/quantzoo-plugin-brevitas/tests/anchors/test_brevitas_anchor.py`` prints every check as the
markdown table of the plugin's README.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import quantzoo_plugin_brevitas as qb
from quantzoo_plugin_brevitas import BrevitasPTQ, BrevitasQAT
from quantzoo_plugin_brevitas.graph import merge_batch_norm
from quantzoo_plugin_brevitas.tensor_quant import abs_percentile

torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent
SCALE_RTOL = 2.0**-22  # float32 rounding (2 ulp)
GRAD_RTOL = 1e-5
TRAJ_RTOL = 1e-5


def _load_cases():
    spec = importlib.util.spec_from_file_location("brevitas_anchor_cases", HERE / "brevitas_cases.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cases = _load_cases()


class PluginLib:
    """The adapter of ``brevitas_cases`` for this plugin (the generator has the one for Brevitas)."""

    nn = qb
    calibration_mode = staticmethod(qb.calibration_mode)
    bias_correction_mode = staticmethod(qb.bias_correction_mode)
    merge_bn = staticmethod(merge_batch_norm)

    @staticmethod
    def preset(name, **settings):
        preset = qb.PRESETS[name]
        return preset.let(**settings) if settings else preset

    @staticmethod
    def quant_weight(layer):
        return layer.quantized_weight(), layer.weight_quantizer.qparams(layer.weight)[0]

    @staticmethod
    def act_quant(module, role):
        if role == "act":
            return getattr(module, "act_quant", None)
        return getattr(module, f"{role}_quantizer", None) or getattr(module, f"{role}_quant", None)

    @staticmethod
    def act_param(q):
        return q.value

    @staticmethod
    def act_scale(q):
        return q.qparams()[0]


@dataclass
class Row:
    check: str
    quantity: str
    delta: float
    unit: str  # "LSB" (quantized values, in steps of the scale used) or "rel" (relative to max |ref|)
    tol: float

    @property
    def ok(self) -> bool:
        return self.delta <= self.tol


def _rel(ours, ref) -> float:
    ours, ref = ours.detach().float(), ref.detach().float()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    nan = torch.isnan(ref)
    assert torch.equal(nan, torch.isnan(ours)), "gradient present on one side only (None vs a tensor)"
    if nan.all():
        return 0.0
    ours, ref = ours[~nan], ref[~nan]
    denom = ref.abs().max().clamp_min(1e-30)
    return float((ours - ref).abs().max() / denom)


def _lsb(ours, ref, step_ours, step_ref) -> float:
    """The largest difference of the integer codes ``round(x̂ / s)``, each side with its own scale (the scales
    are compared on their own, to float32 rounding)."""
    ours, ref = ours.detach(), ref.detach()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float((torch.round(ours / step_ours) - torch.round(ref / step_ref)).abs().max())


def _steps(scale, like):
    """A per-step (or per-channel) scale vector shaped to broadcast against ``like``'s leading dimension."""
    return scale.reshape(-1, *[1] * (like.dim() - 1)) if scale.numel() > 1 else scale


def _refs(name):
    return torch.load(HERE / name, weights_only=True)


# ---------------------------------------------------------------------------------------------------------
def check_weight(name) -> list[Row]:
    ref = _refs("refs_weights.pt")[name]
    out = cases.run_weight(PluginLib, ref["data"], name)
    r = ref["out"]
    c = f"weight {name}"
    return [Row(c, "quantized weight", _lsb(out["qw"], r["qw"], _steps(out["scale"], out["qw"]),
                                            _steps(r["scale"], r["qw"])), "LSB", 0),
            Row(c, "scale", _rel(out["scale"], r["scale"]), "rel", SCALE_RTOL),
            Row(c, "layer output", _rel(out["y"], r["y"]), "rel", SCALE_RTOL),
            Row(c, "weight after the call", _rel(out["w_after"], r["w_after"]), "rel", 0),
            *[Row(c, f"grad {k}", _rel(out[k], r[k]), "rel", GRAD_RTOL) for k in ("gx", "gw", "gb")]]


def check_act(name) -> list[Row]:
    ref = _refs("refs_acts.pt")[name]
    out = cases.run_act(PluginLib, ref["data"], name)
    r = ref["out"]
    c = f"act {name}"
    return [Row(c, "eval before statistics", _lsb(out["pre_value"], r["pre_value"], out["pre_scale"],
                                                  r["pre_scale"]), "LSB", 0),
            Row(c, "scale before statistics", _rel(out["pre_scale"], r["pre_scale"]), "rel", SCALE_RTOL),
            Row(c, "values per step", _lsb(out["value"], r["value"], _steps(out["scale"], out["value"]),
                                           _steps(r["scale"], r["value"])), "LSB", 0),
            Row(c, "QuantTensor scale per step", _rel(out["scale"], r["scale"]), "rel", SCALE_RTOL),
            Row(c, "grad input per step", _rel(out["gx"], r["gx"]), "rel", GRAD_RTOL),
            Row(c, "grad scale parameter per step", _rel(out["gparam"], r["gparam"]), "rel", GRAD_RTOL),
            Row(c, "scale parameter per step", _rel(out["param"], r["param"]), "rel", TRAJ_RTOL),
            Row(c, "eval after training", _lsb(out["eval_value"], r["eval_value"], out["eval_scale"],
                                               r["eval_scale"]), "LSB", 0),
            Row(c, "eval scale after training", _rel(out["eval_scale"], r["eval_scale"]), "rel", SCALE_RTOL)]


def check_layer(name) -> list[Row]:
    ref = _refs("refs_layers.pt")[name]
    out = cases.run_layer(PluginLib, ref["data"], name)
    r = ref["out"]
    c = f"layer {name}"
    rows = []
    if "scale" in r:
        rows += [Row(c, "outputs per step", _lsb(out["y"], r["y"], _steps(out["scale"], out["y"]),
                                                 _steps(r["scale"], r["y"])), "LSB", 0),
                 Row(c, "QuantTensor scale per step", _rel(out["scale"], r["scale"]), "rel", SCALE_RTOL)]
    else:
        rows.append(Row(c, "outputs per step", _rel(out["y"], r["y"]), "rel", SCALE_RTOL))
    rows += [Row(c, f"grad {k} per step", _rel(out[k], r[k]), "rel", GRAD_RTOL) for k in r if k.startswith("g")]
    rows += [Row(c, f"parameter {k} after the steps", _rel(out[k], r[k]), "rel", TRAJ_RTOL)
             for k in r if k.startswith("p")]
    rows.append(Row(c, "eval output", _rel(out["eval_y"], r["eval_y"]), "rel", SCALE_RTOL))
    return rows


def check_calibration(which) -> list[Row]:
    refs = _refs("refs_calibration.pt")
    r, d = refs[which], refs["data"]
    if which == "no_cap":
        out = cases.run_calibration(PluginLib, d, collect_stats_steps=3, bias_correction=True)
    else:
        out = cases.run_calibration(PluginLib, d, collect_stats_steps=300, batches=3)
    c = f"calibration_mode ({which})"
    rows = [Row(c, f"{k} (float during calibration)", _rel(out[k], r[k]), "rel", SCALE_RTOL)
            for k in r if k.startswith("calib_y")]
    rows += [Row(c, "scales after calibration", _rel(out["scales"], r["scales"]), "rel", SCALE_RTOL),
             Row(c, "eval output", _lsb(out["eval_y"], r["eval_y"], out["scales"][2], r["scales"][2]), "LSB", 0),
             Row(c, "train-mode output after calibration",
                 _lsb(out["train_y"], r["train_y"], out["scales"][2], r["scales"][2]), "LSB", 0)]
    if "conv_bias" in r:
        b = "bias_correction_mode"
        rows += [Row(b, f"{k} (float outputs passed on)", _rel(out[k], r[k]), "rel", SCALE_RTOL)
                 for k in r if k.startswith("bc_y")]
        rows += [Row(b, "created conv bias", _rel(out["conv_bias"], r["conv_bias"]), "rel", SCALE_RTOL),
                 Row(b, "corrected linear bias", _rel(out["lin_bias"], r["lin_bias"]), "rel", SCALE_RTOL),
                 Row(b, "eval output", _lsb(out["bc_eval_y"], r["bc_eval_y"], out["scales"][2], r["scales"][2]),
                     "LSB", 0)]
    return rows


def _quantizer_cfg(cfg):
    return {k: v for k, v in cfg.items() if k != "store_weights"}


def _state_rows(c, out, r) -> list[Row]:
    rows = []
    for k in r:
        if k in ("eval_y", "losses"):
            continue
        tol = SCALE_RTOL if k.endswith((".scale", ".value", "bias")) or "running" in k else SCALE_RTOL
        rows.append(Row(c, k, _rel(out[k], r[k]), "rel", tol))
    return rows


def run_ptq_plugin(name):
    d, cfg = _refs("refs_flow_data.pt")["data"], cases.PTQ_CONFIGS[name]
    q = BrevitasPTQ(**_quantizer_cfg(cfg))
    prepared = q.calibrate(q.prepare(cases.load_float_cnn(d).eval()), list(d["calib"]))
    converted = q.convert(prepared)
    with torch.no_grad():
        y = converted(d["x_eval"])
    return d, converted, {"eval_y": y, **cases.flow_state(PluginLib, prepared,
                                                           weights=cfg.get("store_weights", False))}


def check_ptq(name) -> list[Row]:
    d, _, out = run_ptq_plugin(name)
    r = _refs("refs_ptq.pt")[name]
    c = f"brevitas-ptq {name}"
    mirrored, _ = cases.run_ptq_mirror(PluginLib, d, cases.PTQ_CONFIGS[name])
    return [Row(c, "converted model output", _rel(out["eval_y"], r["eval_y"]), "rel", SCALE_RTOL),
            Row(c, "layer swap = the mirrored Brevitas model", _rel(out["eval_y"], mirrored["eval_y"]), "rel", 0),
            *_state_rows(c, out, r)]


def check_qat(name, *, bn_rows: bool = True) -> list[Row]:
    d = _refs("refs_flow_data.pt")["data"]
    cfg, steps = cases.QAT_CONFIGS[name]
    with cases.default_dtype(cases.TRAJECTORY_DTYPE):
        q = BrevitasQAT(**cfg)
        prepared = q.prepare(cases.load_float_cnn(d))
        losses = cases.train_flow(prepared, d, steps)
        prepared.eval()
        with torch.no_grad():
            y = prepared(d["x_eval"].to(cases.TRAJECTORY_DTYPE))
        out = {"losses": losses, "eval_y": y, **cases.flow_state(PluginLib, prepared)}
    r = _refs("refs_qat.pt")[name]
    c = f"brevitas-qat {name} ({steps} SGD steps)"
    return [Row(c, "loss per step", _rel(out["losses"], r["losses"]), "rel", TRAJ_RTOL),
            Row(c, "eval output after training", _rel(out["eval_y"], r["eval_y"]), "rel", TRAJ_RTOL),
            *[Row(c, k, _rel(out[k], r[k]), "rel", TRAJ_RTOL) for k in r if k not in ("losses", "eval_y")]]


def check_layer_cnn() -> list[Row]:
    out = cases.run_layer_cnn(PluginLib, _refs("refs_flow_data.pt")["data"])
    r = _refs("refs_qat.pt")["layer_cnn"]
    c = f"QuantConv2d/QuantReLU CNN ({cases.QAT_LONG_STEPS} SGD steps)"
    return [Row(c, k, _rel(out[k], r[k]), "rel", TRAJ_RTOL) for k in r]


def _ort_run(data: bytes, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3  # Brevitas' dynamo export lists initializers as inputs: a warning per tensor
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return torch.cat([torch.from_numpy(sess.run(None, {name: xi[None].numpy()})[0]) for xi in x])


def check_export(name) -> list[Row]:
    pytest.importorskip("onnxruntime")
    d, converted, out = run_ptq_plugin(name)
    theirs = (HERE / f"brevitas_qcdq_{name}.onnx").read_bytes()
    ours = qb.export_onnx_qcdq(converted, d["x_eval"][:1])
    sig_t, sig_o = cases.qcdq_signature(theirs), cases.qcdq_signature(ours)
    c = f"ONNX QCDQ {name}"
    assert [s[0] for s in sig_o] == [s[0] for s in sig_t], (sig_o, sig_t)
    worst = 0.0
    for a, b in zip(sig_o, sig_t):
        if a[0] in ("QuantizeLinear", "DequantizeLinear"):
            assert a[2:] == b[2:], (a, b)  # zero-point dtype and values, axis
            worst = max(worst, _rel(torch.tensor(a[1]), torch.tensor(b[1])))
        else:
            assert a == b, (a, b)
    x = d["x_eval"]
    y_t, y_o = _ort_run(theirs, x), _ort_run(ours, x)
    return [Row(c, "node sequence, zero-points, Clip ranges", 0.0, "rel", 0),
            Row(c, "Q/DQ scales", worst, "rel", SCALE_RTOL),
            Row(c, "onnxruntime output: our graph vs Brevitas' graph", _rel(y_o, y_t), "rel", SCALE_RTOL),
            Row(c, "onnxruntime (Brevitas' graph) vs our PyTorch model", _rel(out["eval_y"], y_t), "rel", SCALE_RTOL)]


def check_deviations() -> list[Row]:
    refs = _refs("refs_acts.pt")["deviations"]
    # Brevitas' AbsPercentile with k = floor(0.01·q·N + 0.5) = 0 raises (recorded by the generator); here k ≥ 1.
    assert refs["percentile_k0"].startswith("RuntimeError: kthvalue(): selected number k out of range"), refs
    x = torch.arange(1.0, 11.0)
    got = abs_percentile(x, 1.0)  # k = floor(0.1 + 0.5) = 0 → 1: the smallest |x|
    return [Row("deviation: percentile with k = 0", "k clamped to 1 (Brevitas raises)", float(got - 1.0), "rel", 0)]


# ---------------------------------------------------------------------------------------------------------
def _assert_rows(rows: list[Row]) -> None:
    bad = [r for r in rows if not r.ok]
    assert not bad, "\n".join(f"{r.check} / {r.quantity}: {r.delta:.3g} {r.unit} > {r.tol:.3g}" for r in bad)


@pytest.mark.parametrize("name", list(cases.WEIGHT_CASES))
def test_weight_quantizers_match_brevitas(name):
    _assert_rows(check_weight(name))


@pytest.mark.parametrize("name", list(cases.ACT_CASES))
def test_activation_quantizers_match_brevitas(name):
    _assert_rows(check_act(name))


@pytest.mark.parametrize("name", cases.LAYER_CASES)
def test_quant_layers_match_brevitas(name):
    _assert_rows(check_layer(name))


@pytest.mark.parametrize("which", ["no_cap", "default_steps"])
def test_calibration_and_bias_correction_match_brevitas(which):
    _assert_rows(check_calibration(which))


@pytest.mark.parametrize("name", list(cases.PTQ_CONFIGS))
def test_brevitas_ptq_matches_brevitas(name):
    _assert_rows(check_ptq(name))


@pytest.mark.parametrize("name", [n for n, (_, steps) in cases.QAT_CONFIGS.items() if steps < 100])
def test_brevitas_qat_trajectory_matches_brevitas(name):
    _assert_rows(check_qat(name))


@pytest.mark.slow  # 310 steps of brevitas-qat (~10 s on a loaded 2-core machine); the layer CNN below runs by default
def test_brevitas_qat_trajectory_through_the_statistics_phase_matches_brevitas():
    _assert_rows(check_qat("qat_default"))


def test_quantconv_quantrelu_cnn_trajectory_matches_brevitas():
    _assert_rows(check_layer_cnn())


@pytest.mark.parametrize("name", ["ptq_default", "ptq_w4a4"])
def test_qcdq_export_matches_brevitas(name):
    _assert_rows(check_export(name))


def test_deviations():
    _assert_rows(check_deviations())


def all_rows() -> list[Row]:
    rows = []
    for name in cases.WEIGHT_CASES:
        rows += check_weight(name)
    for name in cases.ACT_CASES:
        rows += check_act(name)
    for name in cases.LAYER_CASES:
        rows += check_layer(name)
    for which in ("no_cap", "default_steps"):
        rows += check_calibration(which)
    for name in cases.PTQ_CONFIGS:
        rows += check_ptq(name)
    for name in cases.QAT_CONFIGS:
        rows += check_qat(name)
    rows += check_layer_cnn()
    for name in ("ptq_default", "ptq_w4a4"):
        rows += check_export(name)
    return rows + check_deviations()


def main() -> None:
    """Print one README row per check: the largest difference over its quantities (LSB rows and relative rows
    apart)."""
    torch.set_num_threads(1)
    meta = _refs("refs_weights.pt")["meta"]
    print(f"Against Brevitas {meta['brevitas']} (torch {meta['torch']}).\n")
    print("| check | quantities | max \\|Δ\\| in LSB | max relative \\|Δ\\| | pass |")
    print("|---|---|---|---|---|")
    groups: dict[str, list[Row]] = {}
    for r in all_rows():
        groups.setdefault(r.check, []).append(r)
    for check, rows in groups.items():
        lsb = [r.delta for r in rows if r.unit == "LSB"]
        rel = [r.delta for r in rows if r.unit == "rel"]
        ok = all(r.ok for r in rows)
        print(f"| {check} | {len(rows)} | {max(lsb):.3g} | {max(rel):.2g} | {'yes' if ok else 'NO'} |"
              if lsb else f"| {check} | {len(rows)} | – | {max(rel):.2g} | {'yes' if ok else 'NO'} |")
    if "--detail" in sys.argv:
        for r in all_rows():
            print(f"{r.check} / {r.quantity}: {r.delta:.3g} {r.unit} (tol {r.tol:.3g})")


if __name__ == "__main__":
    main()
