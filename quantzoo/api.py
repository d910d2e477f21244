"""The one-call Python API and the lookups most users need."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from .errors import ConfigError
from .config import QuantizerConfig
from .quantizer import Quantizer
from .registry import get_registry


def get_quantizer(name: str) -> type[Quantizer]:
    """The quantizer class registered as ``name`` (case-insensitive; aliases work)."""
    if not isinstance(name, str):
        raise ConfigError(f"method must be a quantizer name such as 'uniform' (see quantzoo.list_quantizers()), "
                          f"not {type(name).__name__}")
    return get_registry().get("quantizer", name)


def list_quantizers(pattern: str | None = None) -> list[str]:
    """Registered quantizer names matching an fnmatch ``pattern``, naturally sorted."""
    return get_registry().names("quantizer", pattern)


def get_observer(name: str):
    """The observer class registered as ``name``."""
    return get_registry().get("observer", name)


def get_backend(name: str):
    """An instance of the backend registered as ``name``."""
    return get_registry().get("backend", name)()


def load_config(data: dict) -> QuantizerConfig:
    """Rebuild a config from ``{"method": ..., "version": ..., "config": {...}}`` (from ``to_json``)."""
    if not isinstance(data, dict) or "method" not in data:
        raise ConfigError('a serialised config needs the keys "method" and "config"')
    cls = get_quantizer(data["method"])
    version = data.get("version", 1)
    if version != cls.Config().version:
        raise ConfigError(f"{cls.name}: config version {version} is not supported by the installed plugin "
                          f"(version {cls.Config().version}); re-create the config")
    return cls.make_config(data.get("config") or {})


def quantize(
    model: nn.Module,
    method: str,
    config: QuantizerConfig | dict | None = None,
    *,
    calibration: Iterable | None = None,
    train: Callable[[nn.Module, Quantizer], Any] | None = None,
    backend: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Quantize ``model`` with ``method`` in one call: prepare, calibrate and/or train, convert (and lower).

    ``calibration`` is an iterable of batches (tensors or ``(x, y)`` pairs); ``train`` is a callable
    ``train(prepared_model, quantizer)``, e.g. ``lambda m, q: quantzoo.training.fit(q, m, loader, epochs=2)``,
    which makes it QAT. ``backend`` (a registered backend name) returns the model lowered onto it instead of
    the converted fake-quant model. The steps and when to calibrate are :func:`quantzoo.pipeline.run_pipeline`'s.
    """
    from .pipeline import run_pipeline

    quantizer = get_quantizer(method)(config, registry=get_registry(), **overrides)
    result = run_pipeline(quantizer, model, calibration=calibration, train=train, backend=backend)
    result.model._quantzoo_config = quantizer.to_json()  # what quantzoo.save_quantized records
    return result.lowered if backend is not None else result.model
