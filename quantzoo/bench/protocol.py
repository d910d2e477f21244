"""The benchmark protocol: one FP baseline per (model, data set, seed), the same calibration samples and the
same training budget for every method, explicit BN-folding and first/last-layer policies.

Fairness rules from MQBench (Li et al., NeurIPS 2021 benchmarks), BiBench (Qin et al., ICML 2023) and RedBit
(docs/benchmark-protocol.md): every method starts from the same FP checkpoint and the FP row is in every
table; the same QAT budget and learning-rate grid judged on a hold-out; the same calibration set; explicit
BN-folding, layer policies and hardware scheme, reported per row; fake-quant accuracy separate from
real-backend accuracy; several seeds, with intervals.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..training import TrainConfig

#: A QAT budget counts as converged when doubling it moves no row's mean accuracy by more than this many points
#: (docs/benchmark-protocol.md, "Budgets"; checked by a suite's [budget_check]).
CONVERGED_SHIFT = 0.5

#: Version of the baseline recipe; bump it when training code changes so cached baselines are retrained.
BASELINE_RECIPE_VERSION = 1


class Budget(TrainConfig):
    """A training budget plus its batch size (the unit of the protocol's fairness rule 2)."""

    batch_size: int = Field(64, ge=1)
    #: Train on a fixed subset of this many training samples (drawn by the seed); None = the whole split.
    samples: int | None = Field(None, ge=1)


#: FP baseline recipes per (model, data set).
DEFAULT_BASELINES: dict[tuple[str, str], dict] = {
    ("mlp", "digits"): {"epochs": 15, "lr": 3e-3},
    ("cnn", "digits"): {"epochs": 8, "lr": 3e-3},
    ("resnet-tiny", "digits"): {"epochs": 10, "lr": 3e-3},
    ("transformer", "digits"): {"epochs": 20, "lr": 2e-3},
    ("mlp", "mnist1d"): {"epochs": 15, "lr": 3e-3},
    ("cnn1d", "mnist1d"): {"epochs": 10, "lr": 5e-3},
    ("gru1d", "mnist1d"): {"epochs": 30, "lr": 5e-3},
    ("transformer", "mnist1d"): {"epochs": 25, "lr": 2e-3},
    ("mlp", "mnist"): {"epochs": 3, "lr": 2e-3, "batch_size": 128, "weight_decay": 1e-4},
    ("lenet5", "mnist"): {"epochs": 3, "lr": 2e-3, "batch_size": 128, "weight_decay": 1e-4},
    ("cnn", "mnist"): {"epochs": 2, "lr": 2e-3, "batch_size": 128, "weight_decay": 1e-4},
    ("resnet-tiny", "mnist"): {"epochs": 2, "lr": 2e-3, "batch_size": 128, "weight_decay": 1e-4},
    ("transformer", "mnist"): {"epochs": 3, "lr": 1e-3, "batch_size": 128},
    # detection: mAP@0.5 0.997, mAP@[.5:.95] 0.79 after 6 epochs (132-404 s on 1 thread of a loaded, shared 2-core box)
    ("yolo-tiny", "shapes"): {"epochs": 6, "lr": 3e-3},
}


def default_baseline(model: str, dataset: str) -> Budget:
    return Budget(**DEFAULT_BASELINES.get((model, dataset), {"epochs": 10, "lr": 2e-3}))


LayerPolicyChoice = Literal["fp", "int8", "same", "method"]


class Protocol(BaseModel):
    """Everything every method shares in a run. Recorded (as JSON) with every row of the results database.

    ``first_layer``/``last_layer``: applied to methods whose config has these fields (``LayerPolicyConfig``);
    ``"method"`` leaves the method's own default. ``bn_fold``: ``"before"`` folds BN into the FP model before
    the method sees it; ``"method"`` gives the method the model with its BN layers (it may fold them itself).
    ``scheme``: the hardware scheme (:mod:`quantzoo.schemes`) methods are configured to where they can.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    calibration_samples: int = Field(512, ge=1)
    calibration_batch_size: int = Field(128, ge=1)
    qat: Budget = Budget(epochs=1, lr=1e-4)
    lr_grid: tuple[float, ...] = ()
    holdout: float = Field(0.1, gt=0, lt=1)
    bn_fold: Literal["method", "before"] = "method"
    #: The hardware scheme every method that has the knobs follows (quantzoo.schemes); "method": their own.
    scheme: Literal["method", "x86", "academic", "tensorrt", "pow2"] = "method"
    first_layer: LayerPolicyChoice = "int8"
    last_layer: LayerPolicyChoice = "int8"
    eval_batch_size: int = Field(1000, ge=1)
    latency: bool = True
    latency_batches: tuple[int, ...] = (1, 64)
    threads: int = Field(1, ge=1)

    @field_validator("lr_grid")
    @classmethod
    def _positive(cls, v):
        if any(lr <= 0 for lr in v):
            raise ValueError("every learning rate in lr_grid must be > 0")
        return v

    def semantic(self) -> dict:
        """The fields that change results (latency settings and thread count do not change accuracy)."""
        return self.model_dump(mode="json", exclude={"latency", "latency_batches", "threads", "eval_batch_size"})


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def hash_of(obj) -> str:
    """sha256 of the canonical JSON of ``obj`` (the key of cache entries and result rows)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def baseline_key(model: str, dataset: str, seed: int, budget: Budget, input_shape, num_classes) -> dict:
    """The full configuration of one FP baseline (its hash is the cache key)."""
    return {"recipe": BASELINE_RECIPE_VERSION, "model": model, "dataset": dataset, "seed": int(seed),
            "budget": budget.model_dump(mode="json"), "input_shape": list(input_shape),
            "num_classes": int(num_classes)}
