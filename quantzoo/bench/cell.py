"""One cell of a benchmark: a method at one W/A setting on one (model, data set, seed), run under the
protocol. :func:`execute_cell` is what every executor runs (in-process, in a pool worker or a Ray task)."""

from __future__ import annotations

import functools
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import QuantzooError
from .cache import BaselineCache
from .protocol import Budget, Protocol, baseline_key, default_baseline, hash_of

FP_METHOD = "fp32"
FLOAT_BITS = 32  # a_bits/w_bits value stored for "float" (a_bits=None in config_for_bits)


class NonFiniteOutputError(QuantzooError):
    """A model produced NaN or Inf logits on the evaluation set."""


@dataclass(frozen=True)
class Cell:
    """Everything that determines one result row (JSON-serialisable, so it travels to workers as a dict)."""

    method: str
    model: str
    dataset: str
    seed: int
    w_bits: int
    a_bits: int
    mode: str  # "ptq", "qat" or "fp" (the baseline row)
    config: dict = field(default_factory=dict)  # the method's full, validated config (model_dump, JSON mode)
    config_version: int = 1
    protocol: dict = field(default_factory=dict)  # Protocol.model_dump(mode="json")
    baseline: dict = field(default_factory=dict)  # Budget.model_dump(mode="json")
    #: versions of quantzoo and of the method's plugin distribution: part of the key, so that a release
    #: that changes a method's results recomputes its cells instead of reusing the old rows
    code: dict = field(default_factory=dict)
    data_root: str | None = None  # where the data lies: not part of the key
    paper: dict | None = None  # the published number to print beside ours: not part of the key

    def identity(self) -> dict:
        proto = Protocol.model_validate(self.protocol).semantic()
        return {"method": self.method, "model": self.model, "dataset": self.dataset, "seed": self.seed,
                "w_bits": self.w_bits, "a_bits": self.a_bits, "mode": self.mode, "config": self.config,
                "config_version": self.config_version, "protocol": proto, "baseline": self.baseline,
                "code": self.code}

    @property
    def key(self) -> str:
        """sha256 of the full configuration: the primary key of the results database."""
        return hash_of(self.identity())

    @property
    def config_hash(self) -> str:
        return hash_of({"method": self.method, "version": self.config_version, "config": self.config})

    @property
    def bits_label(self) -> str:
        if self.mode == "fp":
            return "FP32"
        a = "32" if self.a_bits == FLOAT_BITS else str(self.a_bits)
        return f"W{self.w_bits}A{a}"

    @property
    def label(self) -> str:
        return f"{self.method}[{self.mode}] {self.bits_label} {self.model}/{self.dataset} seed {self.seed}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        return cls(**d)


# -- data and baselines ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def load_splits(dataset: str, data_root: str | None):
    from ..datasets import load_dataset

    return load_dataset(dataset, data_root)


def build_fp_model(model: str, dataset: str) -> nn.Module:
    from ..models import build_model

    return build_model(model, dataset)


@dataclass
class Baseline:
    model: nn.Module
    accuracy: float
    key: str
    train_s: float
    cached: bool
    #: the data set's metrics of the FP model (:func:`quantzoo.metrics.evaluate`), e.g. map50 for detection
    metrics: dict = field(default_factory=dict)


def get_baseline(model: str, dataset: str, seed: int, budget: Budget | dict | None = None, *,
                 data_root: str | None = None, cache_dir=None) -> Baseline:
    """The FP32 baseline for (model, data set, seed): loaded from the cache when a verified entry exists,
    otherwise trained with ``budget`` (default: :data:`~quantzoo.bench.protocol.DEFAULT_BASELINES`) and cached.
    """
    budget = Budget.model_validate(budget) if budget is not None else default_baseline(model, dataset)
    splits = load_splits(dataset, data_root)
    net = build_fp_model(model, dataset)  # validates model/data set names and fit before any work
    key = hash_of(baseline_key(model, dataset, seed, budget, splits.input_shape, splits.num_classes))
    cache = BaselineCache(cache_dir)
    with cache.lock(key):
        hit = cache.load(key)
        if hit is not None:
            state, record = hit
            try:
                net.load_state_dict(state)
                net.eval()
                return Baseline(net, float(record["accuracy"]), key, float(record.get("train_s", 0.0)), True,
                                dict(record.get("metrics", {})))
            except (RuntimeError, KeyError, TypeError, ValueError) as e:
                cache._reject(key, f"it does not fit the model ({e})")
        from ..metrics import evaluate, loss_for
        from ..training import fit

        torch.manual_seed(seed)
        net = build_fp_model(model, dataset)
        t0 = time.perf_counter()
        fit(None, net, splits.train_batches(budget.batch_size, seed, samples=budget.samples), _train_config(budget),
            loss_fn=loss_for(model, dataset))
        train_s = time.perf_counter() - t0
        metrics = evaluate(net, splits.test_batches(), model=model, dataset=dataset)
        acc = metrics["accuracy"]
        cache.save(key, net.state_dict(), {"config": baseline_key(model, dataset, seed, budget, splits.input_shape,
                                                                   splits.num_classes),
                                           "accuracy": acc, "metrics": metrics, "train_s": train_s,
                                           "torch": torch.__version__})
        net.eval()
        return Baseline(net, acc, key, train_s, False, metrics)


def _train_config(budget: Budget):
    from ..training import TrainConfig

    return TrainConfig(**budget.model_dump(exclude={"batch_size", "samples"}))


# -- measurements ------------------------------------------------------------------------------------------
@torch.no_grad()
def accuracy(model: nn.Module, batches) -> float:
    """Top-1 in percent; :class:`NonFiniteOutputError` if any logit is NaN/Inf (a quantized path that blew up
    must fail its cell, not score as chance)."""
    model.eval()
    correct = total = 0
    for x, y in batches:
        out = model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not torch.isfinite(out).all():
            raise NonFiniteOutputError(f"the model produced non-finite outputs (NaN/Inf) on batch {total // len(x)}")
        correct += (out.argmax(dim=1) == y).sum().item()
        total += y.numel()
    return 100.0 * correct / max(total, 1)


@torch.no_grad()
def latency_ms(model: nn.Module, x: torch.Tensor, *, budget_s: float = 0.2, max_runs: int = 200) -> float:
    """Median wall time of one forward pass in milliseconds (3 warm-up runs, then up to ``budget_s``)."""
    return paired_latency_ms([model], x, budget_s=budget_s, max_runs=max_runs)[0]


@torch.no_grad()
def paired_latency_ms(models: list[nn.Module], x: torch.Tensor, *, budget_s: float = 0.4,
                      max_runs: int = 200) -> list[float]:
    """Median forward time (ms) of each model on ``x``, the models timed in alternation, run by run.

    Interleaving keeps a ratio such as int8-vs-FP32 honest on a shared machine: a burst of load from another
    process slows both contenders alike instead of whichever happened to be running.
    """
    for m in models:
        m.eval()
        for _ in range(3):
            m(x)
    times: list[list[float]] = [[] for _ in models]
    start = time.perf_counter()
    while len(times[0]) < 5 or (time.perf_counter() - start < budget_s and len(times[0]) < max_runs):
        for m, ts in zip(models, times):
            t = time.perf_counter()
            m(x)
            ts.append(time.perf_counter() - t)
    return [1000.0 * statistics.median(ts) for ts in times]


def ideal_size_bytes(model: nn.Module, fp_param_count: int | None = None) -> float | None:
    """Bytes of the parameters stored at their quantized width: a layer whose weight was baked on a b-bit grid
    (``weight_bits`` set at convert) counts b/8 bytes per weight, every other parameter 4 bytes.

    ``None`` where the converted model no longer holds most weights as parameters (torch's int8 modules and
    pt2e graphs keep packed weights outside ``parameters()``): counting what is left would overstate the
    compression. Such rows report their measured size only.
    """
    total = 0.0
    count = 0
    for mod in model.modules():
        bits = getattr(mod, "weight_bits", None)
        for name, p in mod.named_parameters(recurse=False):
            width = bits if (name == "weight" and isinstance(bits, int) and 0 < bits < 32) else 32
            total += p.numel() * width / 8
            count += p.numel()
    # BN folding removes a few parameters; losing most of them means the weights moved out of parameters().
    if fp_param_count is not None and count < fp_param_count / 2:
        return None
    return total


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
