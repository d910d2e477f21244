"""Speed of the bit-serial kernels (quantzoo.kernels) against torch's FP32 kernels, at one thread.

    .venv/bin/python benchmarks/bench_binary_kernels.py [--runs 40] [--isa auto] [--models cnn/digits,lenet5/mnist]

Printed, in one process, with the CPU, ISA and thread count beside every timing:

1. Kernels. The binary GEMM (Linear) and direct binary convolution — XNOR-Net's sign × sign with its
   scaling, the whole layer: packing the float input to bits, the popcounts, the epilogue — against
   ``F.linear``/``F.conv2d`` in FP32 on the same shapes and batch; and TWN's ternary × uint8 layer (W2A8) on the
   same shapes, which runs on the byte kernel (see below). Each pair is timed round-robin, run by run (a burst
   of load slows both), and reported as the median with the 10th–90th percentile spread. ``Gb/s`` counts
   bit-pair operations (one per binary multiply-accumulate) and ``of limit`` divides it by the popcount limit
   below; TWN's column gives GMAC/s.
2. Whole models: xnor W1A1 and twn W2A8 on the zoo CNNs, lowered by the packed backend (kernel_report()
   printed), against the BN-folded FP32 model at batch 1 and 64, same protocol. The QAT is short (latency
   does not depend on accuracy). twn W2A32, the harness's ternary row, has float inputs: its layers stay on
   the float path and are not timed.

The popcount throughput limit of the CPU. The kernels' inner step is one AND-popcount of a 64-bit input word
(broadcast to every lane) with one word of 4 (AVX2) or 8 (AVX-512) weight rows, accumulated per row.

* AVX2 (no popcount instruction on vectors): per 256-bit pair the kernel issues VPAND (x ∧ w), VPAND (low
  nibbles), VPSRLW + VPAND (high nibbles), two VPSHUFB (16-entry look-up of each nibble's popcount) and two
  VPADDB into byte counters = 8 vector ops (VPSADBW folds the counters into 64-bit sums once every 31 steps;
  the loads, 2 weight vectors and 4 broadcasts per 8 pairs, stay under the load ports' 2–3 per cycle). On
  Zen 3 (this project's AMD EPYC machines) 4 pipes execute vector integer ops, and VPSHUFB and VPSRLW share
  2 of them (measured with one-instruction loops: VPAND/VPADDB 4 per cycle, VPSHUFB 2, VPSRLW 2, the two
  mixed 2). Bounds: 8 ops / 4 pipes = 2 cycles; 3 shuffle/shift ops / 2 pipes = 1.5 cycles. So at best one
  pair every 2 cycles: 256/2 = 128 bit-ops per cycle. (Intel since Haswell: 3 vector ALU ports, VPSHUFB and
  VPSRLW on 1–2 of them: 8/3 cycles → 96 bit-ops/cycle.)
* AVX-512 VPOPCNTDQ: per 512-bit pair VPANDQ, VPOPCNTQ, VPADDQ = 3 ops. Ice Lake / Sapphire Rapids issue
  512-bit ops on ports 0 and 5, VPOPCNTQ on port 5 only (1 per cycle): 3 ops / 2 ports = 1.5 cycles per
  pair (port 5 holds the popcount plus half an op) → 512/1.5 = 341 bit-ops per cycle.
* FP32 for comparison: Zen 3 has 2 FMA pipes × 8 lanes = 16 multiply-accumulates per cycle (AVX-512 Intel: 2 ×
  16 = 32). So at the limits a binary MAC is 128/16 = 8× an FP32 MAC on Zen 3 (341/32 ≈ 11× on AVX-512):
  the issue's 8× goal equals the AVX2 limit ratio, reachable only where torch's FP32 runs below its peak.

Ternary × 8-bit. Bit-serially that is 8 input planes × 2 weight planes = 16 AND-popcounts per 64 MACs: at the
AVX2 limit 128/16 = 8 MACs per cycle, half of FP32's peak — too slow. The kernels therefore run k-bit codes
(planes × weight rows > 2) as bytes: VPMADDUBSW multiplies 32 unsigned codes by 32 int8 weights (−1/0/+1) and
adds pairs into int16 (exact: |2·255| < 2^15, folded to int32 every 64 steps), VPADDW accumulates. Zen 3 runs
VPMADDUBSW on 2 pipes: 2 × 32 = 64 MACs per cycle at best, 4× FP32's peak.

The limit is turned into bit-ops per second with the core clock, measured here by timing a chain of
dependent integer additions (1 cycle each); ``peak loop`` is the kernel's inner step run on registers only
(``qz_peak``), the measured form of the same limit.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from quantzoo import kernels
from quantzoo.backends.packed import PackedBackend
from quantzoo.kernels.build import ISAS
from quantzoo.nn import BinaryActivation, FakeQuant
from quantzoo.nn.packed import PackedLayer
from quantzoo.quantizers.uniform import observer_class
from quantzoo.spec import QuantSpec

#: Bit-pair operations per cycle at the limit derived in the docstring.
LIMIT_BITS_PER_CYCLE = {"avx2": 128.0, "avx512": 341.0, "portable": None}

#: (label, kind, weight shape, conv kwargs, input shape at batch 64): the zoo CNNs' binary layers, LeNet-5's
#: FC, and two larger layers where FP32 runs nearer its peak.
SHAPES = [
    ("cnn/digits conv2", "conv2d", (64, 32, 3, 3), dict(padding=1), (64, 32, 8, 8)),
    ("cnn/digits conv3", "conv2d", (64, 64, 3, 3), dict(padding=1), (64, 64, 4, 4)),
    ("cnn/mnist conv2", "conv2d", (64, 32, 3, 3), dict(padding=1), (64, 32, 28, 28)),
    ("lenet5 conv2", "conv2d", (64, 32, 5, 5), dict(), (64, 32, 12, 12)),
    ("resnet-like 128", "conv2d", (128, 128, 3, 3), dict(padding=1), (64, 128, 14, 14)),
    ("lenet5 fc1", "linear", (512, 1024), dict(), (64, 1024)),
    ("gemm 2048", "linear", (2048, 2048), dict(), (256, 2048)),
]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def clock_ghz(lib) -> float:
    """Core clock from 8·n dependent additions (best of 5)."""
    n = 20_000_000
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        lib.qz_clock_loop(n)
        best = min(best, time.perf_counter() - t)
    return 8 * n / best / 1e9


def peak_gbits(lib, isa: str) -> float:
    bits = ctypes.c_int64()
    iters = 2_000_000 if isa != "portable" else 100_000
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        lib.qz_peak(ISAS[isa], iters, ctypes.byref(bits))
        best = min(best, time.perf_counter() - t)
    return bits.value / best / 1e9


def packed_layer(kind, shape, weights, iq, **conv):
    """Random binary (±α) or ternary (α·{−1, 0, 1}) weights with per-channel α."""
    g = torch.Generator().manual_seed(0)
    binary = weights == "binary"
    codes = torch.randint(0, 2 if binary else 3, shape, generator=g)
    return PackedLayer.from_codes(kind, codes, 1 if binary else 2, torch.rand(shape[0], generator=g) + 0.5,
                                  0.5 if binary else 1.0, input_quantizer=iq, **conv)


def uint8_input(x):
    spec = QuantSpec(bits=8, signed=False, symmetric=False)
    fq = FakeQuant(spec, observer_class("minmax")(spec))
    fq(x)
    return fq.freeze()


@torch.no_grad()
def interleaved(fns, runs: int) -> list[list[float]]:
    """Wall times (ms) of each function, called round-robin ``runs`` times after 3 warm-up rounds."""
    for _ in range(3):
        for f in fns:
            f()
    times = [[] for _ in fns]
    for _ in range(runs):
        for f, ts in zip(fns, times):
            t = time.perf_counter()
            f()
            ts.append(1000 * (time.perf_counter() - t))
    return times


def summary(ts: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(ts, n=10)
    return statistics.median(ts), q[0], q[-1]


def fmt(ts) -> str:
    med, lo, hi = summary(ts)
    return f"{med:8.3f} ({lo:.3f}–{hi:.3f})"


def bench_kernels(isa: str, runs: int, limit_gbits: float | None, peak: float) -> None:
    print(f"\n## Kernels (batch as shown, {torch.get_num_threads()} thread, ISA {isa}); ms: median (p10–p90)")
    head = (f"{'layer':18} {'input':18} {'FP32 torch':>22} {'xnor (binary)':>22} {'×FP32':>6} {'Gb/s':>7} "
            f"{'of limit':>8} {'of peak':>7} | {'ternary-i8 (TWN)':>22} {'×FP32':>6} {'GMAC/s':>7}")
    print(head)
    for label, kind, wshape, conv, xshape in SHAPES:
        x = torch.randn(*xshape, generator=torch.Generator().manual_seed(1))
        if kind == "conv2d":
            x = x.contiguous(memory_format=torch.channels_last)  # what a kernel layer's output is
        xnor = packed_layer(kind, wshape, "binary", BinaryActivation(), **conv)
        twn = packed_layer(kind, wshape, "ternary", uint8_input(x.relu()), **conv)
        assert xnor.use_kernel(isa).startswith("xnor") and twn.use_kernel(isa).startswith("ternary-i8")
        w = xnor.dequantized_weight()
        xf = x.contiguous()  # FP32 in torch's default layout
        # this iteration's tensors bound as defaults (the lambdas are only called in this iteration)
        fp = ((lambda xf=xf, w=w: F.linear(xf, w)) if kind == "linear"
              else (lambda xf=xf, w=w, conv=conv: F.conv2d(xf, w, None, **conv)))
        xr = x.relu()
        t_fp, t_x, t_t = interleaved([fp, lambda xnor=xnor, x=x: xnor(x), lambda twn=twn, xr=xr: twn(xr)], runs)
        with torch.no_grad():
            out = fp()
        macs = out.numel() * (wshape[1] * (wshape[2] * wshape[3] if kind == "conv2d" else 1))
        med_fp, med_x, med_t = summary(t_fp)[0], summary(t_x)[0], summary(t_t)[0]
        gbits = macs / (med_x * 1e-3) / 1e9
        of_limit = f"{gbits / limit_gbits:8.0%}" if limit_gbits else f"{'n/a':>8}"
        shape = "x".join(map(str, xshape))
        print(f"{label:18} {shape:18} {fmt(t_fp):>22} {fmt(t_x):>22} {med_fp / med_x:6.1f} {gbits:7.1f} "
              f"{of_limit} {gbits / peak:7.0%} | {fmt(t_t):>22} {med_fp / med_t:6.1f} {macs / (med_t * 1e6):7.1f}")


def bench_models(specs: list[str], isa: str, runs: int) -> None:
    from quantzoo.bench.data import get_baseline, load_splits
    from quantzoo.bench.run import make_cell, quantize_cell
    from quantzoo.nn import fold_batch_norms

    print(f"\n## Whole models vs BN-folded FP32 ({torch.get_num_threads()} thread, ISA {isa}); ms: median (p10–p90)")
    proto = dict(qat=dict(epochs=1, lr=1e-3, batch_size=64, samples=512), latency=False)
    for spec in specs:
        model, dataset = spec.split("/")
        splits = load_splits(dataset, None)
        fp = fold_batch_norms(get_baseline(model, dataset, 0, data_root=None).model).eval()
        for method, w, a in (("xnor", 1, 1), ("twn", 2, 8)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, converted = quantize_cell(make_cell(method, model, dataset, w, a, protocol=proto, mode="qat"))
            low = PackedBackend().lower(converted, splits.test_x[:1], isa=isa)
            print(f"{spec} {method} W{w}A{a}: {low.kernel_report()}")
            for b in (1, 64):
                x = splits.test_x[:b]
                t_q, t_fp = interleaved([lambda low=low, x=x: low(x), lambda fp=fp, x=x: fp(x)], runs)
                print(f"  batch {b:2}: packed {fmt(t_q)}  FP32 {fmt(t_fp)}  speedup "
                      f"{summary(t_fp)[0] / summary(t_q)[0]:.2f}×  [{isa}, {torch.get_num_threads()} thread]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--isa", default="auto")
    ap.add_argument("--models", default="cnn/digits,cnn/mnist,lenet5/mnist")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lib = kernels.library()
    if lib is None:
        raise SystemExit(f"the kernels are unavailable: {kernels.unavailable_reason()}")
    isa = kernels.select_isa(args.isa)
    print(f"CPU {cpu_name()}; kernel ISAs here: {', '.join(kernels.cpu_isas())}; using {isa}; torch "
          f"{torch.__version__} (capability {torch.backends.cpu.get_cpu_capability()}), 1 thread; "
          f"load average {os.getloadavg()[0]:.2f}")
    ghz = clock_ghz(lib)
    peak = peak_gbits(lib, isa)
    per_cycle = LIMIT_BITS_PER_CYCLE[isa]
    limit = per_cycle * ghz if per_cycle else None
    print(f"clock {ghz:.2f} GHz (dependent adds); derived popcount limit "
          f"{f'{per_cycle:.0f} bit-ops/cycle = {limit:.0f} Gb/s' if limit else 'n/a (portable)'}; "
          f"peak loop {peak:.0f} Gb/s = {peak / ghz:.0f} bit-ops/cycle")
    bench_kernels(isa, args.runs, limit, peak)
    bench_models([s for s in args.models.split(",") if s], isa, args.runs)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
