"""`CellMetrics`: the typed record of what one cell measured (stored as JSON in the results database).

Every key the leaderboard, the plots and the CLI read is a field here, with its unit. ``accuracy`` is the data
set's primary metric in percent (``metric``: top-1, or 100 × COCO mAP@0.5 for detection, whose other scores
are in ``task_metrics``); sizes are bytes; times are seconds unless the name says ``ms``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Latency:
    """One batch size's latency: medians of interleaved runs against the BN-folded FP32 model."""

    ms: float
    fp_ms: float
    speedup: float
    spread: float  # half the interquartile range of the per-run speedups, relative to their median
    runs: int
    noisy: bool


@dataclass
class CellMetrics:
    """The outcome of one cell (the FP row uses the same record)."""

    # -- accuracy
    accuracy: float | None = None  # from the real backend where the method has one, else fake-quant
    fakequant_accuracy: float | None = None
    real_accuracy: float | None = None
    fp_accuracy: float | None = None
    delta: float | None = None  # accuracy − fp_accuracy
    metric: str = "top1"  # what accuracy measures (DatasetDef.metric)
    task_metrics: dict[str, float] = field(default_factory=dict)  # e.g. map50, map50_95 (in [0, 1])
    fp_task_metrics: dict[str, float] = field(default_factory=dict)
    # -- where it ran
    backend: str | None = None
    real_integer: bool = False
    backend_error: str | None = None
    # -- size
    size_bytes: float | None = None  # measured storage on the backend
    fp_size_bytes: float | None = None
    compression: float | None = None
    ideal_size_bytes: float | None = None  # quantized weights at their bit width
    ideal_compression: float | None = None
    # -- speed: batch size -> latency (real-integer backends, and the FP row's own latency in fp_ms)
    latency: dict[int, Latency] = field(default_factory=dict)
    threads: int | None = None
    isa: str | None = None
    # -- the protocol as applied
    bn_fold: str | None = None
    first_layer: str | None = None
    last_layer: str | None = None
    float_layers: dict[str, str] = field(default_factory=dict)  # compute layers kept float, and why
    calibration_samples: int | None = None
    qat_epochs: int | None = None
    qat_lr: float | None = None
    lr_trials: dict[str, float] = field(default_factory=dict)
    # -- trust
    degenerate: str | None = None  # why the row is not ranked (all-equal weights, constant output)
    warnings: list[str] = field(default_factory=list)
    # -- cost
    prepare_s: float = 0.0
    calib_s: float = 0.0
    train_s: float = 0.0
    convert_s: float = 0.0
    eval_s: float = 0.0
    wall_s: float = 0.0
    peak_rss_mb: float | None = None
    baseline_key: str | None = None
    baseline_cached: bool | None = None
    baseline_train_s: float | None = None
    # -- diagnostics of a failed backend
    backend_traceback: str | None = None

    def speedup(self, batch: int) -> float | None:
        lat = self.latency.get(batch)
        return lat.speedup if lat else None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency"] = {str(b): v for b, v in d["latency"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CellMetrics":
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in d.items() if k in known}
        data["latency"] = {int(b): v if isinstance(v, Latency) else Latency(**v)
                           for b, v in (d.get("latency") or {}).items()}
        return cls(**data)
