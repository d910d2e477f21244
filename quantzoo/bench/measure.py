"""What the harness measures on a model besides its task metric (:mod:`quantzoo.metrics`): latency (with its
spread), degeneracy, memory, the CPU."""

from __future__ import annotations

import functools
import resource
import statistics
import time

import torch
from torch import nn

from ..cpu_flags import cpu_flags
from ..quantized_weights import find_quantized_weights

#: A speedup whose relative spread (half the interquartile range of the per-run ratios over their median)
#: exceeds this is flagged noisy on the leaderboard.
NOISY_SPREAD = 0.15


@torch.no_grad()
def paired_times(models: list[nn.Module], x: torch.Tensor, *, budget_s: float = 0.4, min_runs: int = 7,
                 max_runs: int = 200) -> list[list[float]]:
    """Forward times (s) of each model on ``x``, the models timed in alternation, run by run.

    Interleaving keeps a ratio such as int8-vs-FP32 honest on a shared machine: a burst of load from another
    process slows both contenders alike instead of whichever happened to be running.
    """
    for m in models:
        m.eval()
        for _ in range(3):
            m(x)
    times: list[list[float]] = [[] for _ in models]
    start = time.perf_counter()
    while len(times[0]) < min_runs or (time.perf_counter() - start < budget_s and len(times[0]) < max_runs):
        for m, ts in zip(models, times):
            t = time.perf_counter()
            m(x)
            ts.append(time.perf_counter() - t)
    return times


def latency_ms(model: nn.Module, x: torch.Tensor) -> float:
    """Median forward time of one model in milliseconds."""
    return 1000.0 * statistics.median(paired_times([model], x)[0])


def speedup(model: nn.Module, reference: nn.Module, x: torch.Tensor) -> dict:
    """``{"ms", "fp_ms", "speedup", "spread", "runs", "noisy"}``: medians of interleaved runs, the median of
    the per-run ratios reference/model and its relative spread (half the IQR over the median)."""
    q, fp = paired_times([model, reference], x)
    ratios = sorted(f / t for f, t in zip(fp, q))
    med = statistics.median(ratios)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [med, med, med]
    spread = (quartiles[2] - quartiles[0]) / 2 / med if med else 0.0
    return {"ms": 1000.0 * statistics.median(q), "fp_ms": 1000.0 * statistics.median(fp), "speedup": med,
            "spread": spread, "runs": len(ratios), "noisy": spread > NOISY_SPREAD}


@torch.no_grad()
def degeneracy(converted: nn.Module, x: torch.Tensor) -> str | None:
    """Why a converted model is degenerate (not to be ranked), or None: a quantized layer whose weights are
    all one value, or outputs that do not depend on the input."""
    for name, w, _, _ in find_quantized_weights(converted):
        if w.numel() > 1 and torch.unique(w).numel() == 1:
            return f"every weight of quantized layer {name!r} is {w.flatten()[0].item():g}"
    out = converted.eval()(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    if torch.is_tensor(out) and out.shape[0] > 1 and torch.equal(out.amax(dim=0), out.amin(dim=0)):
        return "the output is the same for every input"
    return None


@functools.lru_cache(maxsize=1)
def cpu_isa() -> str:
    """The vector ISA torch's CPU kernels use, plus the int8 extensions the CPU reports (e.g.
    ``"AVX512 +avx512_vnni +amx_int8"``): recorded beside every timing."""
    cap = torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    extra = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_vpopcntdq") if f in flags]
    return " ".join([cap, *(f"+{f}" for f in extra)])


def reset_peak_rss() -> bool:
    """Reset this process's resident-memory high-water mark (Linux ≥ 4.0: ``5`` → ``/proc/self/clear_refs``),
    so that :func:`peak_rss_mb` measures one cell, not the whole sweep. False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory in MiB since the last :func:`reset_peak_rss`
    (``VmHWM``), else since the process started (``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
