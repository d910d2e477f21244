"""Activation statistics in Distiller's ``QuantCalibrationStatsCollector`` format, and their YAML files.

Per layer: ``{"inputs": {0: record}, "output": record}``; a record holds ``min``, ``max``, ``avg_min``,
``avg_max``, ``mean``, ``std``, ``b`` and ``shape``. Collection takes two passes over the calibration data
(``data_loggers/collector.py``): the first gathers min/max/avg_min/avg_max/mean, the second the standard
deviation and the Laplace ``b = E|x−μ|`` around the final mean.

Reproduced quirk: every running mean is weighted by ``total_numel`` (elements seen so far), also for the
per-sample extremes, so ``avg_min``/``avg_max`` of later batches get the weight of ``batch_size`` values
against ``total_numel`` earlier *elements* — in practice the first batch dominates them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import yaml

from quantzoo.errors import ConfigError, DataError

_FLOAT_MAX = torch.finfo(torch.float32).max


def new_record() -> dict:
    """An empty record (Distiller's ``_QuantStatsRecord.create_records_dict``)."""
    return {"min": _FLOAT_MAX, "max": -_FLOAT_MAX, "avg_min": 0.0, "avg_max": 0.0, "mean": 0.0, "std": 0.0,
            "b": 0.0, "shape": "", "total_numel": 0}


def _running_mean(values: torch.Tensor, prev_mean: float, total_so_far: int) -> float:
    n = values.numel()
    return (total_so_far * prev_mean + values.sum().item()) / (total_so_far + n)


@torch.no_grad()
def update_first_pass(record: dict, tensor: torch.Tensor) -> None:
    """min, max, avg of per-sample min/max, mean (collector pass 1)."""
    act = tensor.detach().float().reshape(tensor.shape[0], -1) if tensor.dim() > 0 else tensor.reshape(1, 1)
    numel = act.numel()
    # One value per sample: per-sample extremes would equal each other, so Distiller reduces over the batch.
    dim = 0 if numel == act.shape[0] else 1
    mins, maxs = act.min(dim=dim).values, act.max(dim=dim).values
    record["min"] = min(record["min"], mins.min().item())
    record["max"] = max(record["max"], maxs.max().item())
    record["avg_min"] = _running_mean(mins, record["avg_min"], record["total_numel"])
    record["avg_max"] = _running_mean(maxs, record["avg_max"], record["total_numel"])
    record["mean"] = _running_mean(act, record["mean"], record["total_numel"])
    record["total_numel"] += numel
    if not record["shape"]:
        record["shape"] = "(" + ", ".join(str(d) for d in tensor.shape) + ")"


@torch.no_grad()
def update_second_pass(record: dict, tensor: torch.Tensor) -> None:
    """Population std and Laplace b around the pass-1 mean (collector pass 2)."""
    act = tensor.detach().float().reshape(tensor.shape[0], -1) if tensor.dim() > 0 else tensor.reshape(1, 1)
    mean = record["mean"]
    record["b"] = _running_mean((act - mean).abs(), record["b"], record["total_numel"])
    var = _running_mean((act - mean) ** 2, record["std"] ** 2, record["total_numel"])
    record["std"] = math.sqrt(var)
    record["total_numel"] += act.numel()


def public(record: dict) -> dict:
    """The record as written to YAML (without the element counter)."""
    return {k: v for k, v in record.items() if k != "total_numel"}


def save_stats(stats: dict, path: str | Path) -> None:
    """Write ``{layer: {"inputs": {0: rec}, "output": rec}}`` as Distiller's stats YAML."""
    clean = {layer: {"inputs": {int(i): public(r) for i, r in d.get("inputs", {}).items()},
                     "output": public(d["output"])} for layer, d in stats.items()}
    Path(path).write_text(yaml.safe_dump(clean, sort_keys=False))


def load_stats(source: str | Path | dict) -> dict:
    """Read a Distiller stats YAML (path) or dict; input indices become ints; values are checked to be numbers."""
    if isinstance(source, dict):
        data = source
    else:
        p = Path(source)
        if not p.is_file():
            raise ConfigError(f"model_activation_stats: no such file {str(p)!r}; collect stats with calibrate() "
                              "and stats_out, or give Distiller's quant_stats YAML")
        try:  # safe_load: a python/* tag is refused, never constructed
            data = yaml.safe_load(p.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"model_activation_stats: {str(p)!r} is not a Distiller stats YAML: "
                              f"{' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise DataError("model_activation_stats: expected a mapping {layer: {inputs: {0: {...}}, output: {...}}}")
    out = {}
    for layer, entry in data.items():
        if not isinstance(entry, dict) or "output" not in entry:
            raise DataError(f"model_activation_stats: layer {layer!r} has no 'output' record")
        inputs = {int(k): v for k, v in (entry.get("inputs") or {}).items()}
        out[str(layer)] = {"inputs": inputs, "output": entry["output"]}
        for rec in [entry["output"], *inputs.values()]:
            for k, v in rec.items():
                if k != "shape" and not isinstance(v, (int, float)):
                    raise DataError(f"model_activation_stats: {layer}.{k} = {v!r} is not a number")
    return out
