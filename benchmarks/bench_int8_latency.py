"""Real int8 latency and size against the BN-folded FP32 model, on the zoo's largest CNN.

    .venv/bin/python benchmarks/bench_int8_latency.py [--threads 1] [--engines x86,onednn] [--runs 60]

The model is the zoo CNN with the most multiply-accumulates on MNIST-sized input (chosen by counting
Conv/Linear MACs with forward hooks, printed). It is quantized with the plugin's static PTQ (``torch-static``,
or ``torch-fx`` for models with residual adds), calibrated on 512 MNIST training images (random inputs if the
MNIST files are absent: latency and size do not depend on the values), lowered on each engine's backend,
and timed against ``fold_batch_norms(fp32 model)`` at batch 64 and batch 1, in three FP32 forms: eager NCHW
(what the harness times), eager channels_last, and TorchScript-frozen with oneDNN-prepacked weights
(``optimize_for_inference``, the fastest FP32 CPU path); speedups are given against eager NCHW and
against the fastest of the three. The models run round-robin, run by run, so all see the same background
load (the machine is shared); medians are printed with the load average seen before and after.
Model size: ``torch.save(state_dict)`` bytes of each, and the weight payload alone (int8 vs fp32 values).
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
from quantzoo.backends.base import state_dict_bytes
from quantzoo.bench.data import build_model
from quantzoo.nn import fold_batch_norms
from quantzoo.testing import find_quantized_weights

CNNS = ("cnn", "lenet5", "resnet-tiny")


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of the Conv/Linear layers for one forward pass of ``x``."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


def mnist_images(n: int) -> tuple[torch.Tensor, str]:
    try:
        from quantzoo.datasets import load_dataset

        splits = load_dataset("mnist", None)
        return splits.train_x[:n].float(), "MNIST train images"
    except Exception as exc:  # noqa: BLE001 - the files are optional for a latency benchmark
        return torch.rand(n, 1, 28, 28), f"random inputs (MNIST unavailable: {type(exc).__name__})"


@torch.no_grad()
def interleaved_latency(models: list[nn.Module], inputs: list[torch.Tensor], runs: int) -> list[float]:
    """Median ms of ``models[i](inputs[i])``, measured round-robin (m0, m1, m2, m0, ...) after warm-up."""
    for _ in range(5):
        for m, x in zip(models, inputs):
            m(x)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(runs):
        for i, (m, x) in enumerate(zip(models, inputs)):
            t = time.perf_counter()
            m(x)
            times[i].append(time.perf_counter() - t)
    return [1000 * statistics.median(t) for t in times]


def cpu_int8_features() -> str:
    """The int8-relevant ISA extensions of this CPU (VNNI: 4x the FP32 MAC rate; AMX-INT8: far more)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    return ", ".join(f"{k}={'yes' if k in flags else 'no'}" for k in ("avx512_vnni", "amx_int8", "amx_bf16"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--engines", default="x86,onednn", help="comma list of x86, onednn, qnnpack")
    ap.add_argument("--runs", type=int, default=60, help="timed runs per model and batch size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warnings.simplefilter("ignore")

    probe = torch.rand(1, 1, 28, 28)
    macs = {name: count_macs(build_model(name, "mnist"), probe) for name in CNNS}
    name = max(macs, key=macs.get)
    images, source = mnist_images(512)
    model = build_model(name, "mnist").eval()
    method = "torch-fx" if name == "resnet-tiny" else "torch-static"
    fp = fold_batch_norms(model)
    # PyTorch eager FP32 convs run faster in channels_last (no per-call reorder to oneDNN's blocked layout);
    # the speedup is taken against the faster of the two FP32 layouts, so it is not inflated.
    fp_cl = fold_batch_norms(model).to(memory_format=torch.channels_last)
    # The strongest FP32 CPU baseline: TorchScript-frozen with oneDNN-prepacked weights (no per-call
    # weight reorders), so the speedup is not credited with eager FP32's layout overheads.
    with torch.no_grad():
        fp_jit = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(fp, images[:64])))

    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, cpu count={os.cpu_count()}, "
          f"load average before={os.getloadavg()[0]:.2f}")
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}; {cpu_int8_features()} (oneDNN uses AMX for int8 "
          "convolutions where present, which lifts the int8:fp32 ratio well past the ~4x of VNNI)")
    print("MACs per image on 1x28x28: " + ", ".join(f"{k}={v / 1e6:.1f}M" for k, v in macs.items())
          + f" -> largest CNN: {name}")
    print(f"method {method}, calibration: {source}; FP32 baseline: BN folded "
          f"({sum(isinstance(m, nn.BatchNorm2d) for m in fp.modules())} BN left)")
    fp_bytes = state_dict_bytes(fp)
    rows = []
    for engine in args.engines.split(","):
        q = quantzoo.get_quantizer(method)(engine=engine)
        prepared = q.prepare(model)
        q.calibrate(prepared, images.split(128))
        converted = q.convert(prepared)
        backend = quantzoo.get_backend(f"torch-{engine}")
        lowered = backend.lower(converted)
        agree = (lowered(images[:256]).argmax(1) == fp(images[:256]).argmax(1)).float().mean().item()
        for batch in (64, 1):
            x = images[:batch]
            x_cl = x.contiguous(memory_format=torch.channels_last)
            t_fp, t_cl, t_jit, t_q = interleaved_latency([fp, fp_cl, fp_jit, lowered], [x, x_cl, x, x],
                                                         args.runs if batch > 1 else 4 * args.runs)
            rows.append((engine, batch, t_fp, t_cl, t_jit, t_q))
        size = backend.model_size_bytes(lowered)
        int8_weights = sum(w.numel() for _, w, _, _ in find_quantized_weights(lowered))  # 1 byte each
        fp_weights = 4 * sum(m.weight.numel() for m in fp.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        print(f"[{engine}] top-1 agreement with FP32 on 256 images: {100 * agree:.1f}%; serialized size {size} B "
              f"vs FP32 {fp_bytes} B -> {fp_bytes / size:.2f}x smaller; weight payload {int8_weights} B vs "
              f"{fp_weights} B -> {fp_weights / int8_weights:.2f}x (the rest: fp32 biases, per-channel "
              "float64 scales and int64 zero-points, pickle headers)")
    print(f"{'engine':<7} {'batch':>5} {'fp32 NCHW':>10} {'fp32 NHWC':>10} {'fp32 jit':>9} {'int8':>8}  "
          f"{'speedup vs fp32 NCHW':>20} {'vs best fp32':>12}   (median ms)")
    for engine, batch, t_fp, t_cl, t_jit, t_q in rows:
        print(f"{engine:<7} {batch:>5} {t_fp:>10.3f} {t_cl:>10.3f} {t_jit:>9.3f} {t_q:>8.3f}  "
              f"{t_fp / t_q:>19.2f}x {min(t_fp, t_cl, t_jit) / t_q:>11.2f}x")
    print(f"load average after={os.getloadavg()[0]:.2f} (2 shared vCPUs: values above ~1 mean contention)")


if __name__ == "__main__":
    main()
