"""yolo-tiny/shapes through ``quantzoo.bench.run_cell``: every installed method at W8A8 and W4A4, plus ``uniform``
under the pow2 scheme (Vitis AI / TVM power2: BN folded first, every layer at the body's width,
max-calibrated). One JSON line per cell, appended to OUT (a re-run skips the cells already there); refusals
are recorded with their error.

    python benchmarks/detection/sweep.py OUT.jsonl SEEDS [METHODS]    # e.g. results.jsonl 0,1,2 uniform,pow2
    python benchmarks/detection/report.py OUT.jsonl                    # the markdown table

Protocol: the standard suite's (512 calibration samples, first/last layer int8, BN as the method does it),
QAT 3 epochs Adam lr 1e-3 cosine, batch 64, over a fixed 1024-sample subset (the quick suite's budget); no
latency (the cells ran on a shared machine). The FP baseline is DEFAULT_BASELINES' recipe, cached in
$QUANTZOO_CACHE (default .quantzoo/cache).
"""

import json
import sys
import time
import traceback

import torch

torch.set_num_threads(1)

import quantzoo  # noqa: E402
from quantzoo.bench import run_cell  # noqa: E402

PROTOCOL = {"calibration_samples": 512, "first_layer": "int8", "last_layer": "int8", "bn_fold": "method",
            "latency": False, "qat": {"epochs": 3, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine",
                                      "batch_size": 64, "samples": 1024}}
#: the pow2 rows: the scheme's protocol, ranges from the largest |x| seen (Vitis AI's DPU scheme, plain max)
POW2_PROTOCOL = {"scheme": "pow2", "bn_fold": "before", "first_layer": "same", "last_layer": "same"}
POW2_CONFIG = {"weight_observer": "minmax", "activation_observer": "minmax"}
KEEP = ("accuracy", "fakequant_accuracy", "real_accuracy", "backend",
        "backend_error", "wall_s", "calib_s", "train_s", "eval_s", "baseline_cached", "baseline_train_s", "warnings",
        "first_layer", "last_layer", "bn_fold", "qat_epochs")


def plan(seeds, only):
    for seed in seeds:
        yield "fp", "fp32", None, None, None, PROTOCOL, seed
        for m in quantzoo.list_quantizers():
            if not only or m in only:
                for w, a in ((8, 8), (4, 4)):
                    yield m, m, w, a, None, PROTOCOL, seed
        if not only or "pow2" in only:
            for w, a in ((8, 8), (4, 4)):
                yield "pow2", "uniform", w, a, POW2_CONFIG, {**PROTOCOL, **POW2_PROTOCOL}, seed


def main(out, seeds, only):
    done = set()
    try:
        with open(out) as f:
            done = {(r["label"], r["w"], r["a"], r["seed"]) for r in map(json.loads, f)}
    except FileNotFoundError:
        pass
    for label, method, w, a, cfg, proto, seed in plan(seeds, only):
        if (label, w, a, seed) in done:
            continue
        rec = {"label": label, "method": method, "w": w, "a": a, "seed": seed}
        t = time.perf_counter()
        try:
            m = run_cell(method, "yolo-tiny", "shapes", w, a, seed=seed, config=cfg, protocol=proto)
            rec.update(ok=True, mode="fp" if method == "fp32" else "qat" if m.get("qat_epochs") else "ptq",
                       **{k: m.get(k) for k in KEEP}, **m["task_metrics"],
                       **{f"fp_{k}": v for k, v in m["fp_task_metrics"].items()})
        except Exception as e:  # noqa: BLE001 - a refusal is a result here
            rec.update(ok=False, error=f"{type(e).__module__}.{type(e).__name__}: {e}",
                       quantzoo_error=isinstance(e, quantzoo.QuantzooError), tb=traceback.format_exc(limit=4)[-1500:])
        rec["cell_s"] = time.perf_counter() - t
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(label, w, a, seed, rec["map50"] if rec["ok"] else rec["error"][:100], round(rec["cell_s"], 1), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2].split(",")], sys.argv[3].split(",") if len(sys.argv) > 3 else None)
