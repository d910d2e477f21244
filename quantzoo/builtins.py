"""The core's own components, registered through the same hooks as any plugin (the core dogfoods them)."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def register_quantizers(register):
    from .quantizers import CORE_QUANTIZERS

    for q in CORE_QUANTIZERS:
        register(q)


@hookimpl
def register_observers(register):
    from .observers import CORE_OBSERVERS

    for o in CORE_OBSERVERS:
        register(o)


@hookimpl
def register_backends(register):
    from .backends import CORE_BACKENDS

    for b in CORE_BACKENDS:
        register(b)


@hookimpl
def register_models(register):
    from .models import CORE_MODELS

    for m in CORE_MODELS:
        register(m)


@hookimpl
def register_datasets(register):
    from .datasets import CORE_DATASETS

    for d in CORE_DATASETS:
        register(d)
