"""Descriptors of the zoo's models and data sets, the objects `register_models` / `register_datasets` take."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class DatasetDef:
    """A data set: ``load(root, seed)`` returns a :class:`quantzoo.datasets.Splits`-like object.

    ``metric`` names what the harness scores it by (:func:`quantzoo.bench.scoring.evaluate`): ``"top1"`` (accuracy
    in percent) or ``"map50"`` (detection, COCO mAP@0.5; needs a model with a ``decode``).
    """

    name: str
    load: Callable[..., Any]
    description: str = ""
    input_shape: tuple[int, ...] = ()
    num_classes: int = 0
    aliases: tuple[str, ...] = ()
    metric: str = "top1"


@dataclass(frozen=True)
class ModelDef:
    """A model family: ``build(input_shape, num_classes)`` returns a fresh ``nn.Module``.

    ``loss(output, target)`` is its training loss (``None``: cross-entropy on class labels);
    ``decode(output)`` turns a batch of raw outputs into per-image
    :class:`quantzoo.metrics.Detections` (detectors only).
    """

    name: str
    build: Callable[..., nn.Module]
    datasets: tuple[str, ...]
    description: str = ""
    aliases: tuple[str, ...] = field(default=())
    loss: Callable[..., Any] | None = None
    decode: Callable[..., Any] | None = None
