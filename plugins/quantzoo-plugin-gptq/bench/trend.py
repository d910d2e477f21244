"""The trends of issue 16 (second half) through the harness, with mean / sd / 95 % CI over seeds.

    .venv/bin/python plugins/quantzoo-plugin-gptq/bench/trend.py --part weight      # RTN < GPTQ ~ AWQ (+ HQQ)
    .venv/bin/python plugins/quantzoo-plugin-gptq/bench/trend.py --part smoothquant # SQ W8A8 vs min-max
    .venv/bin/python plugins/quantzoo-plugin-gptq/bench/trend.py --part quantnoise  # QN vs post-hoc
    .venv/bin/python plugins/quantzoo-plugin-gptq/bench/trend.py                    # all three

Every cell is ``quantzoo.bench.run_cell`` (cached FP baseline, the shared calibration set of 512 samples drawn
by the seed, first/last layers 8-bit as the standard suite, BN left to the method). One torch thread.
Timings (``calib_s``: the method's calibration/solve; ``train_s``: QAT) are wall-clock on whatever else the
machine runs at the time: read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch

from quantzoo.bench import get_baseline, run_cell

PROTOCOL = {"calibration_samples": 512, "first_layer": "int8", "last_layer": "int8", "bn_fold": "method",
            "latency": False, "qat": {"epochs": 3, "lr": 1e-3, "batch_size": 64, "samples": 4096}}
#: the standard suite's baseline recipe for the transformers (the core default trains 25 epochs)
TRANSFORMER_BASELINE = {"epochs": 15, "lr": 2e-3}
# two-sided 95 % Student t quantiles by degrees of freedom
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def asym(bits: int, granularity: str = "per_channel") -> dict:
    """uniform's weight spec for round-to-nearest on the grid GPTQ/AWQ/HQQ use (asymmetric min-max)."""
    return {"weight": {"bits": bits, "signed": False, "symmetric": False, "granularity": granularity}}


def baseline_of(model: str):
    return TRANSFORMER_BASELINE if model.startswith("transformer") else None


def summary(values: list[float]) -> str:
    n = len(values)
    m = statistics.fmean(values)
    if n < 2:
        return f"{m:6.2f}"
    sd = statistics.stdev(values)
    h = T975.get(n - 1, 1.96) * sd / math.sqrt(n)
    return f"{m:6.2f} ± {sd:4.2f}  [{m - h:6.2f}, {m + h:6.2f}]"


def run_rows(title: str, targets, rows, seeds) -> None:
    """``rows``: (label, method, w_bits, a_bits, mode, config); one table per target (model, data set)."""
    print(f"\n## {title}\n")
    for model, dataset in targets:
        print(f"### {model}/{dataset}  (seeds {list(seeds)}; accuracy %: mean ± sd [95 % CI]; seconds: mean)")
        print("| row | accuracy | Δ vs FP | calib_s | train_s | wall_s |\n|---|---|---|---|---|---|")
        fp = [run_cell("fp32", model, dataset, seed=s, protocol=PROTOCOL, baseline=baseline_of(model))["accuracy"]
              for s in seeds]
        print(f"| FP32 | {summary(fp)} | | | | |")
        for label, method, w, a, mode, cfg in rows:
            cells = [run_cell(method, model, dataset, w, a, seed=s, config=cfg, mode=mode, protocol=PROTOCOL,
                              baseline=baseline_of(model)) for s in seeds]

            def mean(key, cells=cells):
                return statistics.fmean(c.get(key) or 0.0 for c in cells)

            print(f"| {label} | {summary([c['accuracy'] for c in cells])} | {mean('delta'):+.2f} | "
                  f"{mean('calib_s'):.2f} | {mean('train_s'):.2f} | {mean('wall_s'):.2f} |", flush=True)
        print()


def weight_only(seeds) -> None:
    targets = [("transformer", "mnist1d"), ("cnn1d", "mnist1d"), ("cnn", "digits")]
    rows = []
    for w in (4, 3, 2):
        rows += [(f"W{w} RTN (uniform, sym per-channel)", "uniform", w, None, "ptq", None),
                 (f"W{w} RTN (uniform, asym per-channel)", "uniform", w, None, "ptq", asym(w)),
                 (f"W{w} GPTQ", "gptq", w, None, "ptq", None),
                 (f"W{w} AWQ", "awq", w, None, "ptq", None),
                 (f"W{w} HQQ (per row)", "hqq", w, None, "ptq", None)]
    run_rows("Weight-only W4/W3 (and W2): RTN < GPTQ ~ AWQ", targets, rows, seeds)


def outlier_report(seeds) -> None:
    """How large the outlier channels of the trained transformer-outlier baselines are (ln1 of block 0)."""
    from quantzoo.bench.cell import load_splits
    from quantzoo.nn.capture import capture

    splits = load_splits("mnist1d", None)
    for s in seeds:
        net = get_baseline("transformer-outlier", "mnist1d", s, TRANSFORMER_BASELINE).model
        x = capture(net, ["blocks.0.attn.q"], [splits.test_x[:256]])["blocks.0.attn.q"]
        mags = x.abs().amax(dim=(0, 1))
        print(f"seed {s}: max|x| of the q/k/v input: outlier channels {mags[[5, 37]].tolist()} vs median channel "
              f"{mags.median().item():.2f} (x{(mags[[5, 37]].min() / mags.median()).item():.0f})")


def smoothquant(seeds) -> None:
    outlier_report(seeds)
    sq_specs = {"weight": {"bits": 8, "symmetric": True, "narrow": True, "granularity": "per_channel"},
                "activation": {"bits": 8, "signed": True, "symmetric": True, "narrow": True},
                "activation_observer": "minmax"}
    rows = [("W8A8 min-max (uniform: asym act, moving-average)", "uniform", 8, 8, "ptq", None),
            ("W8A8 min-max with SmoothQuant's quantizers (absmax, static)", "uniform", 8, 8, "ptq", sq_specs)]
    rows += [(f"SmoothQuant α={a}", "smoothquant", 8, 8, "ptq", {"alpha": a}) for a in (0.25, 0.5, 0.75, 0.9)]
    run_rows("SmoothQuant W8A8 on a model with activation outlier channels", [("transformer-outlier", "mnist1d")],
             rows, seeds)
    run_rows("Negative controls (no outlier channels)", [("transformer", "mnist1d"), ("cnn1d", "mnist1d")],
             rows[:2] + [("SmoothQuant α=0.5", "smoothquant", 8, 8, "ptq", None)], seeds)


def quantnoise(seeds) -> None:
    rows = []
    for w in (4, 3, 2):
        rows += [(f"W{w} post-hoc of FP (uniform, per-tensor asym)", "uniform", w, None, "ptq",
                  asym(w, "per_tensor")),
                 (f"W{w} fine-tune p=0, then quantize", "quantnoise", w, None, "qat", {"p": 0.0}),
                 (f"W{w} Quant-Noise p=0.5", "quantnoise", w, None, "qat", None),
                 (f"W{w} full QAT (p=1)", "quantnoise", w, None, "qat", {"p": 1.0})]
    run_rows("Quant-Noise scalar intN (same size per row pair)", [("cnn1d", "mnist1d")], rows, seeds)
    rows = [("iPQ post-hoc of FP (256 centroids, block 8)", "quantnoise-ipq", 1, None, "ptq", None),
            ("fine-tune p=0, then iPQ", "quantnoise-ipq", 1, None, "qat", {"p": 0.0}),
            ("Quant-Noise p=0.1, then iPQ", "quantnoise-ipq", 1, None, "qat", None),
            ("Quant-Noise p=0.2, then iPQ", "quantnoise-ipq", 1, None, "qat", {"p": 0.2})]
    run_rows("Quant-Noise iPQ (every row the same size)", [("cnn1d", "mnist1d"), ("transformer", "mnist1d")],
             rows, seeds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["weight", "smoothquant", "quantnoise", "all"], default="all")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"# quantzoo issue 16 trends — {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {time.strftime('%Y-%m-%d %H:%M')}")
    t0 = time.time()
    for part, fn in (("weight", weight_only), ("smoothquant", smoothquant), ("quantnoise", quantnoise)):
        if args.part in (part, "all"):
            fn(args.seeds)
    print(f"\ntotal {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
