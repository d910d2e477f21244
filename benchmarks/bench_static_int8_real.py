"""torch-static int8 against the BN-folded FP32 model on the zoo's ResNet-8 and MobileNetV2 (digits, 8x8).

    .venv/bin/python benchmarks/bench_static_int8_real.py [--batch 16] [--rounds 300] [--threads 1]
                                                          [--models resnet8,mobilenetv2-tiny] [--pt2e]

Each model is the cached FP32 baseline (trained on first use, ``quantzoo.bench.get_baseline``, seed 0). The
FP32 reference is ``fold_batch_norms`` of it (what the harness times). ``torch-static`` is calibrated on the
harness's 512 calibration samples and lowered on ``torch-x86``. ``--pt2e`` adds ``torchao-pt2e`` lowered on
``torchao-cpu`` (inductor with freezing, torchao's recipe) beside ``torch.compile`` of the FP32 model with
the same settings, so compiled is compared with compiled.

Timing: one process, one input batch of test images, models timed in turn within each round (the order
alternates every round) after warm-up, so all see the same background load. Printed per model: median ms and
inter-quartile range of each, and the speedup as the median and IQR of the per-round ratios FP32/int8. Top-1
on the test split is printed for both (the int8 model must be the same classifier, not only fast). The CPU's
ISA (``torch.backends.cpu.get_cpu_capability()``, VNNI/AMX flags), the thread count and the load average
before and after go beside the numbers: on a shared machine, load above the core count makes them noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch
from torch import nn

import quantzoo
from quantzoo.bench import get_baseline
from quantzoo.bench.data import load_splits
from quantzoo.metrics import accuracy
from quantzoo.nn import fold_batch_norms

from bench_int8_latency import cpu_int8_features  # this directory is on sys.path when run as a script

DATASET = "digits"


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return q1, q2, q3


@torch.no_grad()
def paired_rounds(models: dict[str, nn.Module], x: torch.Tensor, rounds: int, warmup: int = 20) -> dict[str, list]:
    """Seconds per call of every model, ``rounds`` times, all models once per round (order alternating)."""
    names = list(models)
    for _ in range(warmup):
        for n in names:
            models[n](x)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else reversed(names)):
            t = time.perf_counter()
            models[n](x)
            times[n].append(time.perf_counter() - t)
    return times


def build(model_name: str, splits, pt2e: bool) -> tuple[dict[str, nn.Module], dict[str, float]]:
    """The models to time (``fp32``, ``int8`` and, with pt2e, ``fp32 compiled`` / ``int8 pt2e``) and top-1."""
    base = get_baseline(model_name, DATASET, 0).model
    calib = [x for x, _ in splits.calibration_batches(512, 0)]
    fp = fold_batch_norms(base).eval()
    static = quantzoo.quantize(base, "torch-static", calibration=calib)
    models = {"fp32": fp, "int8": quantzoo.get_backend("torch-x86").lower(static)}
    if pt2e:
        from quantzoo_plugin_torch.torchao_methods import FrozenInductor

        converted = quantzoo.quantize(base, "torchao-pt2e", calibration=calib)
        models["fp32 compiled"] = FrozenInductor(fold_batch_norms(base).eval())
        models["int8 pt2e"] = quantzoo.get_backend("torchao-cpu").lower(converted)
    top1 = {name: accuracy(m, splits.test_batches()) for name, m in models.items()}
    return models, top1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="resnet8,mobilenetv2-tiny")
    ap.add_argument("--pt2e", action="store_true", help="also time torchao-pt2e against compiled FP32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    splits = load_splits(DATASET, None)
    x = splits.test_x[: args.batch]
    print(f"torch {torch.__version__}; threads={torch.get_num_threads()}; ISA: "
          f"{torch.backends.cpu.get_cpu_capability()} ({cpu_int8_features()}); oneDNN available="
          f"{torch.backends.mkldnn.is_available()}; quantized engine for int8: x86 (fbgemm/oneDNN)")
    print(f"input: {DATASET} test images, batch {args.batch} x {tuple(x.shape[1:])}; {args.rounds} rounds; "
          f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    for name in args.models.split(","):
        models, top1 = build(name, splits, args.pt2e)
        times = paired_rounds(models, x, args.rounds)
        print(f"\n{name}: top-1 on the {len(splits.test_y)} test images: "
              + ", ".join(f"{k} {v:.2f}%" for k, v in top1.items()))
        for k, t in times.items():
            q1, q2, q3 = quartiles([1000 * s for s in t])
            print(f"  {k:<14} median {q2:8.3f} ms  IQR [{q1:.3f}, {q3:.3f}]")
        pairs = [("fp32", "int8")] + ([("fp32 compiled", "int8 pt2e"), ("fp32", "int8 pt2e")] if args.pt2e else [])
        for ref, fast in pairs:
            ratios = [a / b for a, b in zip(times[ref], times[fast])]
            q1, q2, q3 = quartiles(ratios)
            print(f"  speedup {fast} vs {ref}: median {q2:.2f}x  IQR [{q1:.2f}, {q3:.2f}] (per-round ratios)")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
