"""The PTQ trend of MQBench/BRECQ/QDrop at small scale: min-max < bias correction < AdaRound <= BRECQ <= QDrop.

Every cell goes through the harness (``quantzoo.bench.run_cell``: the cached FP baseline of the seed, the
protocol's shared calibration set, int8 first/last layers), so the methods compare like with like. Per
(model, W/A) and method it prints the mean, sd and 95 % t-interval of the accuracy over the seeds, the
paired difference to min-max (``uniform``) on the same seeds (same FP model, same calibration samples), and
the mean wall and calibration time per cell (1 torch thread, shared machine: indicative only).

    .venv/bin/python plugins/quantzoo-plugin-reconstruct/bench/trend.py                 # the trend table
    .venv/bin/python plugins/quantzoo-plugin-reconstruct/bench/trend.py --convergence   # budget sweep + curves
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import torch

torch.set_num_threads(1)

METHODS = ["uniform", "bias-correction", "adaround", "brecq", "qdrop"]
# two-sided 95 % Student t quantiles by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def interval(xs: list[float]) -> tuple[float, float, float]:
    """Mean, sample sd and the half-width of the 95 % t-interval of the mean."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, float("nan"), float("nan")
    sd = statistics.stdev(xs)
    return m, sd, T95.get(len(xs) - 1, 1.96) * sd / math.sqrt(len(xs))


def machine() -> str:
    return (f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{platform.machine()}, torch threads {torch.get_num_threads()}")


def trend(targets, settings, methods, seeds, overrides) -> list[dict]:
    from quantzoo.bench import run_cell

    rows = []
    for model, dataset in targets:
        for w, a in settings:
            for method in methods:
                for seed in seeds:
                    cfg = overrides.get(method)
                    r = run_cell(method, model, dataset, w, a, seed=seed, config=cfg)
                    rows.append({"model": model, "dataset": dataset, "w": w, "a": a, "method": method, "seed": seed,
                                 "accuracy": r["accuracy"], "fp_accuracy": r["fp_accuracy"], "wall_s": r["wall_s"],
                                 "calib_s": r["calib_s"]})
                    print(f"  {model}/{dataset} W{w}A{a} {method:16s} seed {seed}: {r['accuracy']:.2f} "
                          f"(FP {r['fp_accuracy']:.2f}, calib {r['calib_s']:.1f} s)", flush=True)
    return rows


def table(rows: list[dict], methods: list[str]) -> str:
    out = []
    keys = sorted({(r["model"], r["dataset"], r["w"], r["a"]) for r in rows}, key=lambda k: (k[0], k[2], k[3]))
    for model, dataset, w, a in keys:
        cell = [r for r in rows if (r["model"], r["dataset"], r["w"], r["a"]) == (model, dataset, w, a)]
        fp = interval([r["fp_accuracy"] for r in cell if r["method"] == methods[0]])
        out.append(f"\n{model}/{dataset} W{w}A{a} (FP {fp[0]:.2f} ± {fp[2]:.2f}, n = {len(cell) // len(methods)})")
        out.append("| method | accuracy mean | sd | 95 % CI | Δ vs min-max (paired, 95 % CI) | wall s | calib s |")
        out.append("|---|---|---|---|---|---|---|")
        base = {r["seed"]: r["accuracy"] for r in cell if r["method"] == "uniform"}
        for method in methods:
            mine = [r for r in cell if r["method"] == method]
            m, sd, h = interval([r["accuracy"] for r in mine])
            if base and method != "uniform":
                dm, _, dh = interval([r["accuracy"] - base[r["seed"]] for r in mine if r["seed"] in base])
                delta = f"{dm:+.2f} ± {dh:.2f}"
            else:
                delta = ""
            out.append(f"| {method} | {m:.2f} | {sd:.2f} | [{m - h:.2f}, {m + h:.2f}] | {delta} | "
                       f"{statistics.fmean(r['wall_s'] for r in mine):.1f} | "
                       f"{statistics.fmean(r['calib_s'] for r in mine):.1f} |")
    return "\n".join(out)


def convergence(model: str, dataset: str, w: int, a: int, method: str, budgets: list[int], seed: int) -> None:
    """Per budget: the summed hard reconstruction loss over units, the rounding softness and the accuracy;
    then the default budget's loss curve per unit (the optimised loss at 10 % steps of the run)."""
    from quantzoo import get_quantizer
    from quantzoo.bench.cell import accuracy, get_baseline, load_splits
    from quantzoo.bench.protocol import Protocol

    proto = Protocol()
    base = get_baseline(model, dataset, seed)
    splits = load_splits(dataset, None)
    batches = splits.calibration_batches(proto.calibration_samples, seed, proto.calibration_batch_size)
    cls = get_quantizer(method)
    print(f"\n{method} on {model}/{dataset} W{w}A{a}, seed {seed} (FP {base.accuracy:.2f}); "
          f"batch {cls.Config().batch_size}, lr {cls.Config().lr}")
    print("| iterations/unit | accuracy | Σ start loss | Σ hard loss | Σ soft loss | max softness | calib s |")
    print("|---|---|---|---|---|---|---|")
    default = cls.Config().iterations
    for it in budgets:
        q = cls(cls.config_for_bits(w, a).model_copy(update={"iterations": it, "first_layer": "int8",
                                                               "last_layer": "int8"}))
        prepared = q.prepare(base.model)
        t = time.perf_counter()
        q.calibrate(prepared, batches)
        dt = time.perf_counter() - t
        acc = accuracy(q.convert(prepared), splits.test_batches(proto.eval_batch_size))
        h = [u for u in q.history if "hard_loss" in u]
        print(f"| {it} | {acc:.2f} | {sum(u['start_loss'] for u in h):.4f} | {sum(u['hard_loss'] for u in h):.4f} | "
              f"{sum(u['soft_loss'] for u in h):.4f} | {max(u['softness'] for u in h):.3f} | {dt:.1f} |", flush=True)
        if it == default:
            curves = q.history
    print(f"\nloss curves at {default} iterations/unit (loss of the mini-batch; β; the regulariser λ·f_reg):")
    for u in curves:
        pts = [p for p in u["curve"] if p["iteration"] % max(1, default // 10) == 0]
        print(f"  {'+'.join(u['layers'])}: " + ", ".join(
            f"{p['iteration']}: {p['loss']:.4g} (β {p['beta']:.1f}, reg {p['reg']:.3g})" for p in pts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="cnn1d/mnist1d,cnn/digits", help="model/dataset pairs, comma separated")
    p.add_argument("--bits", default="4/4,4/8", help="W/A settings, comma separated")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--set", action="append", default=[], metavar="METHOD:FIELD=VALUE",
                   help="config override for one method (JSON value), e.g. qdrop:iterations=1000")
    p.add_argument("--json", help="write every cell's numbers to this file")
    p.add_argument("--convergence", action="store_true", help="budget sweep and loss curves instead")
    p.add_argument("--budgets", default="63,125,250,500,1000")
    args = p.parse_args()
    targets = [tuple(t.split("/")) for t in args.targets.split(",")]
    settings = [tuple(int(b) for b in s.split("/")) for s in args.bits.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    print(machine())
    if args.convergence:
        for model, dataset in targets:
            for w, a in settings:
                for method in methods:
                    convergence(model, dataset, w, a, method, [int(b) for b in args.budgets.split(",")], seeds[0])
        return
    overrides: dict[str, dict] = {}
    for item in args.set:
        method, _, assignment = item.partition(":")
        field, _, value = assignment.partition("=")
        overrides.setdefault(method, {})[field] = json.loads(value)
    t = time.perf_counter()
    rows = trend(targets, settings, methods, seeds, overrides)
    print(table(rows, methods))
    print(f"\n{len(rows)} cells in {time.perf_counter() - t:.0f} s; overrides: {overrides or 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "overrides": overrides, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
