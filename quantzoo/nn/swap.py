"""Replacing submodules by name (the layer swap every method's prepare step does)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path) by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def swap_layers(model: nn.Module, names: Iterable[str], make: Callable[[str, nn.Module], nn.Module | None],
                ) -> list[str]:
    """Replace each named layer by ``make(name, module)`` (in place; ``None`` keeps the layer). Returns the
    names replaced. Which layers to pass is the layer plan's job (``plan.method_layers()``)."""
    done = []
    for name in names:
        new = make(name, model.get_submodule(name))
        if new is not None:
            set_submodule(model, name, new)
            done.append(name)
    return done
