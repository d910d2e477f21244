"""The data and FP baselines every cell shares: one split per data set, one trained FP checkpoint per
(model, data set, seed, recipe), cached on disk (:mod:`quantzoo.bench.cache`)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UnsupportedError
from ..registry import get_registry
from .cache import BaselineCache
from .protocol import Budget, baseline_key, default_baseline, hash_of


def load_dataset(name: str, root: str | None = None, seed: int = 0, *, registry=None):
    """The :class:`~quantzoo.datasets.Splits` of the data set registered as ``name`` (``root``: where
    MNIST-like files live)."""
    return (registry or get_registry()).get("dataset", name).load(root, seed)


def build_model(name: str, dataset: str, *, registry=None) -> nn.Module:
    """A fresh float model ``name`` for ``dataset`` (the model must declare that it fits the data set)."""
    reg = registry or get_registry()
    mdef, ddef = reg.get("model", name), reg.get("dataset", dataset)
    if ddef.name not in mdef.datasets:
        raise UnsupportedError(f"model {mdef.name!r} does not fit data set {ddef.name!r}; it fits: "
                               f"{', '.join(mdef.datasets)}")
    return mdef.build(tuple(ddef.input_shape), int(ddef.num_classes))


@functools.lru_cache(maxsize=4)
def load_splits(dataset: str, data_root: str | None):
    """The train/test splits of a registered data set (loaded once per process)."""
    return load_dataset(dataset, data_root)


@dataclass
class Baseline:
    model: nn.Module
    accuracy: float
    key: str
    train_s: float
    cached: bool
    #: the data set's metrics of the FP model beside accuracy (:func:`quantzoo.bench.scoring.evaluate`), e.g. map50
    task_metrics: dict[str, float] = field(default_factory=dict)


def train_config(budget: Budget):
    """The :class:`~quantzoo.training.TrainConfig` part of a budget (its batch size and subset go to the loader)."""
    from ..training import TrainConfig

    return TrainConfig(**budget.model_dump(exclude={"batch_size", "samples"}))


def get_baseline(model: str, dataset: str, seed: int, budget: Budget | dict | None = None, *,
                 data_root: str | None = None, cache_dir=None) -> Baseline:
    """The FP32 baseline for (model, data set, seed): loaded from the cache when a verified entry exists,
    otherwise trained with ``budget`` (default: :data:`~quantzoo.bench.protocol.DEFAULT_BASELINES`) and cached.
    """
    budget = Budget.model_validate(budget) if budget is not None else default_baseline(model, dataset)
    splits = load_splits(dataset, data_root)
    net = build_model(model, dataset)  # validates model/data set names and fit before any work
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
                                dict(record.get("task_metrics", {})))
            except (RuntimeError, KeyError, TypeError, ValueError) as e:
                cache._reject(key, f"it does not fit the model ({e})")
        from .scoring import evaluate, loss_for
        from ..training import fit

        torch.manual_seed(seed)
        net = build_model(model, dataset)
        t0 = time.perf_counter()
        fit(None, net, splits.train_batches(budget.batch_size, seed, samples=budget.samples), train_config(budget),
            loss_fn=loss_for(model, dataset))
        train_s = time.perf_counter() - t0
        scores = evaluate(net, splits.test_batches(), model=model, dataset=dataset)
        acc = scores.pop("accuracy")
        cache.save(key, net.state_dict(), {"config": baseline_key(model, dataset, seed, budget, splits.input_shape,
                                                                   splits.num_classes),
                                           "accuracy": acc, "task_metrics": scores, "train_s": train_s,
                                           "torch": torch.__version__})
        net.eval()
        return Baseline(net, acc, key, train_s, False, scores)
