"""The hooks a quantzoo plugin implements. Each receives a ``register`` callback.

A plugin module decorates functions with :data:`hookimpl`::

    from quantzoo import hookimpl

    @hookimpl
    def register_quantizers(register):
        register(MyQuantizer)

``register(obj)`` validates the object and reads its ``name`` (and ``aliases``); the core enforces unique
names and records which plugin provided what. New keyword arguments never break existing plugins.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("quantzoo")
hookimpl = pluggy.HookimplMarker("quantzoo")


@hookspec
def register_quantizers(register):
    """Register quantization methods.

    :param register: call ``register(QuantizerSubclass)`` once per method (a subclass of
        :class:`quantzoo.Quantizer` with a slug ``name``).
    :returns: nothing.
    """


@hookspec
def register_observers(register):
    """Register observers (statistics → scale/zero-point).

    :param register: call ``register(ObserverSubclass)`` once per observer (a subclass of
        :class:`quantzoo.Observer` with a slug ``name``).
    :returns: nothing.
    """


@hookspec
def register_backends(register):
    """Register backends (where converted models run).

    :param register: call ``register(BackendSubclass)`` once per backend (a subclass of
        :class:`quantzoo.Backend` with a slug ``name``).
    :returns: nothing.
    """


@hookspec
def register_models(register):
    """Register benchmark models.

    :param register: call ``register(ModelDef(name, build, datasets))`` once per model.
    :returns: nothing.
    """


@hookspec
def register_datasets(register):
    """Register benchmark data sets.

    :param register: call ``register(DatasetDef(name, load, ...))`` once per data set.
    :returns: nothing.
    """


HOOK_KINDS = {
    "register_quantizers": "quantizer",
    "register_observers": "observer",
    "register_backends": "backend",
    "register_models": "model",
    "register_datasets": "dataset",
}
