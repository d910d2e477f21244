"""Descriptors of the zoo's models and data sets, the objects `register_models` / `register_datasets` take."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class DatasetDef:
    """A data set: ``load(root, seed)`` returns a :class:`quantzoo.datasets.Splits`-like object."""

    name: str
    load: Callable[..., Any]
    description: str = ""
    input_shape: tuple[int, ...] = ()
    num_classes: int = 0
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelDef:
    """A model family: ``build(input_shape, num_classes)`` returns a fresh ``nn.Module``."""

    name: str
    build: Callable[..., nn.Module]
    datasets: tuple[str, ...]
    description: str = ""
    aliases: tuple[str, ...] = field(default=())
