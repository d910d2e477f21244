"""Print the README's anchor table: per check, the largest difference from the real NNI 3.0 in LSB.

    .venv/bin/python plugins/quantzoo-plugin-nni/tests/anchors/report_nni_anchor.py

Uses the fixtures and the helpers of ``test_nni_anchor.py`` (the tests assert the tolerances; this prints the
figures). "max |Δ| in LSB": the largest absolute difference of an output, a weight after the last step or a
tracked range, divided by the smallest scale of the case's targets (one quantization step), and the largest
zero-point difference in codes; gradients and scales are also given relative to their largest value.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch

warnings.simplefilter("ignore")
torch.set_num_threads(1)
_spec = importlib.util.spec_from_file_location("nni_anchor", Path(__file__).with_name("test_nni_anchor.py"))
T = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(T)

TITLES = {"qat": "QATQuantizer, 8 SGD steps (EMA ranges, mask on zp + x/s, bias and ReLU-output targets)",
          "qat_start": "QATQuantizer quant_start_step=2, 5 steps",
          "qat_fused": "QATQuantizer fuse_names (conv, bn, relu) and (linear, bn), 5 steps",
          "qat_granularity": "QATQuantizer out_channel / in_channel / per_channel, merged entries, 3 steps",
          "lsq": "LsqQuantizer, 8 steps (step and its gradient)",
          "lsqplus": "LsqPlusQuantizer, 8 steps (step, offset and their gradients)",
          "dorefa": "DoReFaQuantizer, 4 steps (quantized gradients with NNI's noise)",
          "bnn": "BNNQuantizer, 5 steps (Hardtanh outputs, an input target, weight clipping)",
          "ptq": "PtqQuantizer calibration (weights float during calibration)",
          "ptq_bias_correction": "PtqQuantizer bias correction (Linear, output targets, bias target)",
          "ptq_bias_correction_conv": "PtqQuantizer bias correction, Conv with width = channels"}


def min_scale(qparams: dict) -> float:
    scales = [float(v.abs().min()) for k, v in qparams.items() if k.endswith("/scale") and v.numel()]
    return min(scales) if scales else 1.0


def training_row(case: str) -> tuple[float, float, list[float]]:
    ref, rec = T.REFS[case], T.run_training(case)
    lsb = min_scale({k: v for k, v in ref["qparams"].items()})
    worst, per_step = 0.0, []
    for i, d in enumerate(T.step_deltas(case, rec)):
        per_step.append(d["output"])
        worst = max(worst, d["output"] / lsb, d["zero_point"])
        for k, v in ref["qparams"].items():
            if "tracked" in k:
                worst = max(worst, float((rec["qparams"][i][k].reshape(v[i].shape) - v[i]).abs().max()) / lsb)
    for k, v in ref["params"].items():
        if k not in T.NNI_ONLY.get(case, ()):
            worst = max(worst, float((T.plugin_param(rec["model"], k).detach().reshape(v.shape) - v).abs().max()) / lsb)
    grad = max(max(d["grad"], d["qparam"]) for d in T.step_deltas(case, rec))
    return worst, grad, per_step


def ptq_row(case: str) -> tuple[float, float]:
    ref = T.REFS[case]
    model, out = T.ptq_result(case)
    lsb = min_scale(ref["qparams"])
    worst = float((out - ref["output"]).abs().max()) / lsb
    rel = 0.0
    for k, v in ref["qparams"].items():
        mine = T.plugin_value(model, k).reshape(v.shape)
        if k.endswith("zero_point"):
            worst = max(worst, float((mine - v).abs().max()))
        else:
            rel = max(rel, T.rel(mine, v))
    for k, v in ref["params"].items():
        worst = max(worst, float((T.plugin_param(model, k).detach() - v).abs().max()) / lsb)
    return worst, rel


def main():
    print("| check | max \\|Δ\\| in LSB | grad / scale rel. | pass |")
    print("|---|---|---|---|")
    steps = {}
    for case in ("qat", "qat_start", "qat_fused", "qat_granularity", "lsq", "lsqplus", "dorefa", "bnn"):
        worst, grad, per_step = training_row(case)
        steps[case] = per_step
        print(f"| {TITLES[case]} | {worst:.3g} | {grad:.3g} | {'yes' if worst == 0 and grad <= 1e-5 else 'NO'} |")
    for case in ("ptq", "ptq_bias_correction", "ptq_bias_correction_conv"):
        worst, rel = ptq_row(case)
        print(f"| {TITLES[case]} | {worst:.3g} | {rel:.3g} | {'yes' if worst == 0 and rel <= T.RTOL_SCALE else 'NO'} |")
    names = [k for k in T.SEMANTICS if k != "versions" and not k.startswith(("ptq_", "dorefa_", "bnn_"))]
    same = [n for n in names if T.SEMANTICS[n].get("error") is None
            and T.plugin_targets(T.SEMANTICS[n]["config_list"]) == T.effective(T.SEMANTICS[n]["targets"])]
    print(f"| config_list semantics: {len(same)} config_lists NNI accepts, same targets and settings | 0 | - | "
          f"{'yes' if len(same) == sum(T.SEMANTICS[n].get('error') is None for n in names) else 'NO'} |")
    print("\n8-step trajectories, max |Δ output| per step (steps 0..7):")
    for case in ("qat", "lsq", "lsqplus"):
        print(f"  {case}: " + ", ".join(f"{v:.3g}" for v in steps[case]))


if __name__ == "__main__":
    main()
