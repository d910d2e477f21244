"""Reference fixtures for the NNI plugin, made by running the real NNI 3.0 quantizers.

Run (outside the project's venv: NNI 3.0 pins filelock 3.11 and typeguard 4.1.2)::

    python3 -m venv /work/anchors/nni-venv
    /work/anchors/nni-venv/bin/pip install torch==2.13.0 -c constraints.txt
    /work/anchors/nni-venv/bin/pip install nni==3.0
    /work/anchors/nni-venv/bin/python plugins/quantzoo-plugin-nni/tests/anchors/make_nni_refs.py

NNI 3.0 imports and runs beside torch 2.13.0 as installed: no workaround, no stub (checked with
torch 2.13.0+cpu, nni 3.0, filelock 3.11.0, typeguard 4.1.2, numpy 2.4). CI does not run this script; it
writes two fixtures beside it, which ``test_nni_anchor.py`` compares the plugin with:

* ``nni_refs.pt`` (``torch.load(..., weights_only=True)``): per case the seeded initial weights, the inputs,
  and what NNI computed — outputs, losses, every gradient and every target's scale / zero point / tracked
  range at each optimizer step (QAT, LSQ, LSQ+, DoReFa, BNN), or after calibration (PTQ, with and without
  bias correction);
* ``nni_refs.json``: config_list semantics — the target settings NNI resolves for each config_list (merging,
  granularity names, the 2.x translation) or the exception it raises.

Each case drives NNI through its public API: ``Quantizer(model, config_list, TorchEvaluator(...))`` and
``compress(max_steps, None)``; the evaluator's training function below is the loop the tests repeat with the
plugin (plain SGD, one batch per step, cross entropy). DoReFa's gradient quantization draws noise from the
global RNG in the backward pass: each step seeds it (``torch.manual_seed(1000 + step)``) before ``backward``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import nni
from nni.compression.quantization import (BNNQuantizer, DoReFaQuantizer, LsqPlusQuantizer, LsqQuantizer, PtqQuantizer,
                                          QATQuantizer)
from nni.compression.utils import TorchEvaluator

torch.set_num_threads(1)
logging.getLogger("nni").setLevel(logging.ERROR)
HERE = Path(__file__).parent
FIELDS = ("scale", "zero_point", "tracked_min", "tracked_max")


def conv_net():
    """Conv(1→3, 3×3) - ReLU - Flatten - Linear(27→8) - ReLU - Linear(8→4), seeded."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 8), nn.ReLU(), nn.Linear(8, 4))


def mlp():
    """Linear(6→8) - ReLU - Linear(8→8) - ReLU - Linear(8→3), seeded."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def bnn_net():
    """NNI's BNN example layout: Linear - BN - Hardtanh blocks, the Hardtanh outputs binarized."""
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Hardtanh(), nn.Linear(8, 8), nn.BatchNorm1d(8),
                         nn.Hardtanh(), nn.Linear(8, 3))


def fused_net():
    """Conv(1→3, bias) - BN2d - ReLU - Flatten - Linear(27→8, no bias) - BN1d - Linear(8→4), for fuse_names."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 8, bias=False),
                         nn.BatchNorm1d(8), nn.Linear(8, 4))


def data(shape, steps, classes, seed):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(steps, *shape, generator=g)
    ys = torch.randint(0, classes, (steps, shape[0]), generator=g)
    return xs, ys


def plain(name: str) -> str:
    return name.replace("_nni_wrapper.", "")


def qparams(quantizer) -> dict:
    out = {}
    for mod, spaces in quantizer._target_spaces.items():
        for target, ts in spaces.items():
            for f in FIELDS:
                v = getattr(ts, f)
                if isinstance(v, torch.Tensor) and v.numel():
                    out[f"{mod}/{target}/{f}"] = v.detach().clone()
                    if f == "scale" and v.grad is not None:
                        out[f"{mod}/{target}/scale_grad"] = v.grad.detach().clone()
                    if f == "zero_point" and isinstance(v, nn.Parameter) and v.grad is not None:
                        out[f"{mod}/{target}/zero_point_grad"] = v.grad.detach().clone()
    return out


def train_case(cls, make_model, config_list, shape, classes, steps, lr, seed, **kwargs) -> dict:
    """Train with the real NNI quantizer for ``steps`` SGD steps; record every step."""
    model = make_model()
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    xs, ys = data(shape, steps, classes, seed)
    rec = {"outputs": [], "losses": [], "grads": [], "qparams": []}
    quantizer = None

    def training_step(batch, model):
        x, y = batch
        return F.cross_entropy(model(x), y)

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        model.train()
        for i in range(steps):
            optimizers.zero_grad()
            out = model(xs[i])
            loss = F.cross_entropy(out, ys[i])
            torch.manual_seed(1000 + i)  # DoReFa's gradient noise
            loss.backward()
            rec["outputs"].append(out.detach().clone())
            rec["losses"].append(loss.detach().clone())
            rec["grads"].append({plain(n): p.grad.detach().clone() for n, p in model.named_parameters()
                                 if p.grad is not None})
            rec["qparams"].append(qparams(quantizer))
            optimizers.step()

    opt = nni.trace(torch.optim.SGD)(model.parameters(), lr=lr)
    evaluator = TorchEvaluator(training_func, opt, training_step)
    quantizer = cls(model, config_list, evaluator, **kwargs)
    quantizer.compress(steps, None)
    model.eval()
    with torch.no_grad():
        eval_out = model(xs[0])
    # one stacked tensor per quantity (first dimension: the step) keeps the file small
    stacked = {"outputs": torch.stack(rec["outputs"]), "losses": torch.stack(rec["losses"])}
    for field in ("grads", "qparams"):
        stacked[field] = {k: torch.stack([r[k] for r in rec[field]]) for k in rec[field][-1]
                          if all(k in r for r in rec[field])}
    params = {plain(n): p.detach().clone() for n, p in model.named_parameters()}
    return {"config_list": config_list, "kwargs": kwargs, "init": init, "x": xs, "y": ys, "lr": lr,
            "steps": steps, **stacked, "params": params, "eval_output": eval_out, "eval_qparams": qparams(quantizer)}


def ptq_case(make_model, config_list, shape, batches, seed, bias_correction=False) -> dict:
    """Calibrate with the real PtqQuantizer on ``batches`` batches (eval mode); the evaluator runs the same
    batches (NNI calls it once for calibration and twice more for bias correction)."""
    model = make_model().eval()
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    xs, _ = data(shape, batches + 1, 2, seed)
    calib, test = xs[:batches], xs[batches]

    def run(model):
        model.eval()
        with torch.no_grad():
            for x in calib:
                model(x)
        return 0.0

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        run(model)

    opt = nni.trace(torch.optim.SGD)(model.parameters(), lr=0.0)
    evaluator = TorchEvaluator(training_func, opt, lambda b, m: m(b).sum(), evaluating_func=run)
    quantizer = PtqQuantizer(model, config_list, evaluator, is_bias_correction=bias_correction)
    quantizer.compress(1, None)
    # (read before the test forward: NNI's PTQ tracking never stops, though the qparams no longer change)
    state = qparams(quantizer)
    with torch.no_grad():
        out = model(test)
    params = {plain(n): p.detach().clone() for n, p in model.named_parameters()}
    return {"config_list": config_list, "bias_correction": bias_correction, "init": init, "x": calib,
            "test": test, "output": out, "qparams": state, "params": params}


def error_of(fn) -> dict:
    try:
        fn()
    except Exception as e:  # the anchor's own exception, recorded as evidence
        return {"error": type(e).__name__, "message": str(e)[:200]}
    return {"error": None}


W4_IN_U4 = [{"op_types": ["Conv2d", "Linear"], "target_names": ["_input_", "weight", "bias"], "quant_dtype": "int4",
             "target_settings": {"_input_": {"quant_dtype": "uint4", "quant_scheme": "affine"},
                                 "weight": {"quant_dtype": "int4", "quant_scheme": "symmetric"},
                                 "bias": {"quant_dtype": "int8"}}},
            {"op_names": ["4"], "target_names": ["_output_"], "quant_dtype": "uint4", "quant_scheme": "affine"}]


def tensor_cases() -> dict:
    cases = {}
    conv = dict(make_model=conv_net, shape=(8, 1, 5, 5), classes=4)
    cases["qat"] = train_case(QATQuantizer, config_list=W4_IN_U4, steps=8, lr=0.1, seed=10, **conv)
    cases["qat_start"] = train_case(QATQuantizer, config_list=W4_IN_U4, steps=5, lr=0.1, seed=11,
                                    quant_start_step=2, **conv)
    gran = [{"op_types": ["Conv2d", "Linear"], "target_names": ["weight"], "quant_dtype": "int3",
             "granularity": "out_channel"},
            {"op_names": ["3"], "target_names": ["_input_"], "quant_dtype": "uint4", "quant_scheme": "affine",
             "granularity": "per_channel"},
            {"op_names": ["5"], "target_names": ["_input_"], "quant_dtype": "int4", "quant_scheme": "symmetric"},
            {"op_names": ["5"], "target_names": ["_input_", "weight"], "quant_dtype": "int8",
             "granularity": "in_channel"}]
    fused = [{"op_names": ["0"], "target_names": ["_input_", "weight", "bias", "_output_"], "quant_dtype": "int4",
              "target_settings": {"_input_": {"quant_dtype": "int8", "quant_scheme": "affine"},
                                  "_output_": {"quant_dtype": "uint4", "quant_scheme": "affine"},
                                  "bias": {"quant_dtype": "int8"}},
              "fuse_names": [("0", "1", "2")]},
             {"op_names": ["4", "6"], "target_names": ["_input_", "weight"], "quant_dtype": "int4",
              "target_settings": {"_input_": {"quant_dtype": "uint4", "quant_scheme": "affine"}},
              "fuse_names": [("4", "5")]}]
    cases["qat_fused"] = train_case(QATQuantizer, make_model=fused_net, config_list=fused, shape=(8, 1, 5, 5),
                                    classes=4, steps=5, lr=0.1, seed=21)
    cases["qat_granularity"] = train_case(QATQuantizer, config_list=gran, steps=3, lr=0.1, seed=12, **conv)
    lsq = [{"op_types": ["Conv2d", "Linear"], "target_names": ["_input_", "weight"], "quant_dtype": "int4",
            "quant_scheme": "symmetric", "target_settings": {"_input_": {"quant_dtype": "uint4"}}},
           {"op_names": ["0"], "target_names": ["_input_"], "quant_dtype": "int8", "quant_scheme": "symmetric"}]
    cases["lsq"] = train_case(LsqQuantizer, config_list=lsq, steps=8, lr=0.1, seed=13, **conv)
    lsqp = [{"op_types": ["Conv2d", "Linear"], "target_names": ["_input_", "weight"], "quant_dtype": "uint4",
             "quant_scheme": "affine"},
            {"op_names": ["5"], "target_names": ["bias"], "quant_dtype": "int4", "quant_scheme": "affine"}]
    cases["lsqplus"] = train_case(LsqPlusQuantizer, config_list=lsqp, steps=8, lr=0.1, seed=14, **conv)
    dorefa = [{"op_types": ["Conv2d", "Linear"], "target_names": ["weight"], "quant_dtype": "uint4",
               "quant_scheme": "affine"},
              {"op_names": ["1"], "target_names": ["_output_"], "quant_dtype": "uint3", "quant_scheme": "affine"},
              {"op_names": ["5"], "target_names": ["_input_"], "quant_dtype": "int8", "quant_scheme": "affine"}]
    cases["dorefa"] = train_case(DoReFaQuantizer, config_list=dorefa, steps=4, lr=0.1, seed=20, **conv)
    # a sample whose output gradient is all zero (every ReLU unit after Linear 3 dead): NNI's gradient
    # quantization divides 0 by 0, and the NaN spreads to every earlier layer (step 2 here)
    cases["dorefa_nan"] = train_case(DoReFaQuantizer, config_list=dorefa, steps=3, lr=0.1, seed=15, **conv)
    bnn = [{"op_types": ["Linear"], "exclude_op_names": ["0"], "target_names": ["weight"], "quant_dtype": None},
           {"op_types": ["Hardtanh"], "target_names": ["_output_"], "quant_dtype": None},
           {"op_names": ["6"], "target_names": ["_input_"], "quant_dtype": None}]
    cases["bnn"] = train_case(BNNQuantizer, make_model=bnn_net, config_list=bnn, shape=(16, 6), classes=3, steps=5,
                              lr=0.5, seed=16)
    ptq = [{"op_types": ["Conv2d", "Linear"], "target_names": ["_input_", "weight", "bias"], "quant_dtype": "int4",
            "target_settings": {"_input_": {"quant_dtype": "int8", "quant_scheme": "affine"},
                                "bias": {"quant_dtype": "int8"}}},
           {"op_names": ["1"], "target_names": ["_output_"], "quant_dtype": "uint4", "quant_scheme": "affine"}]
    cases["ptq"] = ptq_case(conv_net, ptq, (8, 1, 5, 5), batches=3, seed=17)
    bc = [{"op_types": ["Linear"], "target_names": ["_input_", "weight"], "quant_dtype": "int3",
           "target_settings": {"_input_": {"quant_dtype": "uint4", "quant_scheme": "affine"}}},
          {"op_names": ["2"], "target_names": ["_output_"], "quant_dtype": "int4", "quant_scheme": "affine"},
          {"op_names": ["0"], "target_names": ["bias"], "quant_dtype": "int6"},
          {"op_names": ["4"], "target_names": ["_output_"], "quant_dtype": "int5", "quant_scheme": "affine"}]
    cases["ptq_bias_correction"] = ptq_case(mlp, bc, (16, 6), batches=3, seed=18, bias_correction=True)
    # on a Conv2d NNI averages the error over every dimension but the last (the width): with the output width
    # equal to the channel count (3 × 3 outputs, 3 channels) it runs and adds column c's error to channel c
    conv_bc = [{"op_types": ["Conv2d", "Linear"], "target_names": ["_input_", "weight"], "quant_dtype": "int3",
                "target_settings": {"_input_": {"quant_dtype": "int8", "quant_scheme": "affine"}}}]
    cases["ptq_bias_correction_conv"] = ptq_case(conv_net, conv_bc, (8, 1, 5, 5), batches=2, seed=19,
                                                 bias_correction=True)
    return cases


def resolved(config_list, make_model=conv_net) -> dict:
    model = make_model()
    opt = nni.trace(torch.optim.SGD)(model.parameters(), lr=0.1)
    evaluator = TorchEvaluator(lambda *a, **k: None, opt, lambda b, m: m(b).sum())
    try:
        q = QATQuantizer(model, config_list, evaluator)
    except Exception as e:
        return {"error": type(e).__name__, "message": str(e)[:200]}
    return {"targets": {m: {t: {"quant_dtype": ts.quant_dtype, "quant_scheme": ts.quant_scheme,
                                "granularity": ts.granularity}
                            for t, ts in sorted(spaces.items())} for m, spaces in sorted(q._target_spaces.items())}}


CONFIG_CASES = {
    "later_entry_merges_per_target": [
        {"op_types": ["Linear"], "target_names": ["weight"], "quant_dtype": "int4"},
        {"op_names": ["3"], "target_names": ["weight", "_input_"], "quant_dtype": "int8", "quant_scheme": "affine"}],
    "target_settings_over_shortcut": [
        {"op_names": ["3"], "quant_dtype": "int6", "quant_scheme": "affine",
         "target_settings": {"weight": {"quant_dtype": "int2", "quant_scheme": "symmetric"},
                             "bias": {"quant_dtype": None}}}],
    "out_channel_weight": [{"op_types": ["Linear"], "target_names": ["weight"], "quant_dtype": "int4",
                            "granularity": "out_channel"}],
    "in_channel_weight": [{"op_types": ["Conv2d"], "target_names": ["weight"], "quant_dtype": "int4",
                           "granularity": "in_channel"}],
    "per_channel_input": [{"op_types": ["Linear"], "target_names": ["_input_"], "quant_dtype": "uint4",
                           "granularity": "per_channel"}],
    "per_channel_weight": [{"op_types": ["Linear"], "target_names": ["weight"], "quant_dtype": "int4",
                            "granularity": "per_channel"}],
    "out_channel_input": [{"op_types": ["Linear"], "target_names": ["_input_"], "quant_dtype": "int4",
                           "granularity": "out_channel"}],
    "missing_quant_dtype": [{"op_types": ["Linear"], "target_names": ["weight"]}],
    "v2_with_quant_dtype": [{"quant_types": ["weight", "input"], "quant_bits": {"weight": 4, "input": 6},
                             "op_types": ["Linear"], "quant_dtype": "uint"},
                            {"exclude": True, "op_names": ["5"], "quant_dtype": "int"}],
    "v2_plain": [{"quant_types": ["weight"], "quant_bits": 4, "op_types": ["Linear"]}],
    "v2_quant_scheme": [{"quant_types": ["weight"], "quant_bits": 4, "op_types": ["Linear"], "quant_dtype": "int",
                         "quant_scheme": "per_channel_symmetric"}],
    "exclude_and_regex": [{"op_names_re": ["[35]"], "op_types": ["Linear"], "exclude_op_names_re": ["5"],
                           "target_names": ["weight"], "quant_dtype": "int8"}],
    "unregistered_type": [{"op_types": ["Flatten"], "target_names": ["_output_"], "quant_dtype": "uint8"}],
}


def config_semantics() -> dict:
    out = {name: {"config_list": cl, **resolved(cl)} for name, cl in CONFIG_CASES.items()}
    # PTQ bias correction on a Conv2d layer: NNI reduces the error over every dimension but the last
    # (output width W = 4, C = 3 channels: the per-width error does not fit the per-channel bias)
    cl = [{"op_types": ["Conv2d"], "target_names": ["weight"], "quant_dtype": "int4"}]

    def conv_only():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 3, 3))

    def conv_bc():
        ptq_case(conv_only, cl, (8, 1, 6, 6), batches=1, seed=19, bias_correction=True)
    out["ptq_bias_correction_conv_w4_c3"] = {"config_list": cl, "input_shape": [8, 1, 6, 6], **error_of(conv_bc)}
    # granularity on DoReFa and BNN
    for name, cls in (("dorefa_granularity", DoReFaQuantizer), ("bnn_granularity", BNNQuantizer)):
        cl = [{"op_types": ["Linear"], "target_names": ["weight"], "quant_dtype": "uint4", "quant_scheme": "affine",
               "granularity": "out_channel"}]
        model = conv_net()
        opt = nni.trace(torch.optim.SGD)(model.parameters(), lr=0.1)
        ev = TorchEvaluator(lambda *a, **k: None, opt, lambda b, m: m(b).sum())
        out[name] = {"config_list": cl, **error_of(lambda: cls(model, cl, ev))}
    return out


def main():
    versions = {"nni": str(nni.__version__), "torch": str(torch.__version__)}
    cases = tensor_cases()
    cases["versions"] = versions
    torch.save(cases, HERE / "nni_refs.pt")
    sem = config_semantics()
    sem["versions"] = versions
    (HERE / "nni_refs.json").write_text(json.dumps(sem, indent=1, sort_keys=True) + "\n")
    print("wrote", HERE / "nni_refs.pt", (HERE / "nni_refs.pt").stat().st_size, "bytes;", HERE / "nni_refs.json")


if __name__ == "__main__":
    main()
