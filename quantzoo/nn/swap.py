"""Finding and replacing layers: which modules a method quantizes, and the first/last-layer policy."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Literal

from torch import nn

from .layers import QUANT_LAYERS

#: What happens to the first and last compute layers (MQBench/BiBench report this with every row).
LayerPolicy = Literal["fp", "int8", "same"]


def compute_layers(model: nn.Module, types: Iterable[type] = tuple(QUANT_LAYERS)) -> list[str]:
    """Names of the quantizable compute layers (Linear/Conv) in registration order."""
    types = tuple(types)
    return [name for name, m in model.named_modules() if type(m) in types and name]


def first_last(model: nn.Module) -> tuple[str | None, str | None]:
    """Names of the first and last compute layers (registration order, which is forward order in the zoo)."""
    names = compute_layers(model)
    return (names[0], names[-1]) if names else (None, None)


def matches(name: str, patterns: Iterable[str] | None) -> bool:
    """fnmatch ``name`` against any of ``patterns`` (``None`` or empty matches nothing)."""
    return any(fnmatch.fnmatchcase(name, p) for p in (patterns or ()))


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path) by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def replace_layers(
    model: nn.Module,
    make: Callable[[str, nn.Module, str], nn.Module | None],
    *,
    first_layer: LayerPolicy = "same",
    last_layer: LayerPolicy = "same",
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    types: Iterable[type] = tuple(QUANT_LAYERS),
) -> list[str]:
    """Replace every selected compute layer by ``make(name, module, role)`` (in place).

    ``role`` is ``"first"``, ``"last"`` or ``"body"``; with policy ``"fp"`` the first/last layer is left alone,
    with ``"int8"`` ``make`` is called with role ``"first"``/``"last"`` and must build an 8-bit layer, and
    ``"same"`` treats it like the body. ``include``/``exclude`` are fnmatch patterns on module names.
    ``make`` returning ``None`` keeps the layer. Returns the names that were replaced.
    """
    names = compute_layers(model, types)
    first, last = (names[0], names[-1]) if names else (None, None)
    done = []
    for name in names:
        if include and not matches(name, include):
            continue
        if matches(name, exclude):
            continue
        role = "first" if name == first else "last" if name == last else "body"
        policy = first_layer if role == "first" else last_layer if role == "last" else "same"
        if policy == "fp":
            continue
        if policy == "same":
            role = "body"
        new = make(name, model.get_submodule(name), role)
        if new is not None:
            set_submodule(model, name, new)
            done.append(name)
    return done
