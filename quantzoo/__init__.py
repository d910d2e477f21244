"""quantzoo: every well-known quantization method for PyTorch behind one registry, scored on one protocol.

The public names below are imported on first use (PEP 562): ``import quantzoo`` itself does not import
torch, so ``quantzoo --help`` and ``quantzoo list`` start in a fraction of a second; ``quantzoo.quantize``,
``from quantzoo import Quantizer`` and ``quantzoo.nn`` work as before.
"""

from __future__ import annotations

import importlib
import importlib.util

from .errors import (
    ConfigError,
    DataError,
    DuplicateNameError,
    NonFiniteOutputError,
    NotCalibratedError,
    PluginError,
    QuantzooError,
    QuantzooWarning,
    UnknownNameError,
    UnsupportedError,
)
from .hookspecs import hookimpl

__version__ = "0.1.0"

#: public name -> "submodule" or "submodule:attribute" that defines it (imported when the name is first read)
_LAZY = {
    "get_backend": "api", "get_observer": "api", "get_quantizer": "api", "list_quantizers": "api",
    "load_config": "api", "quantize": "api", "Backend": "backends", "DatasetDef": "catalog", "ModelDef": "catalog",
    "QuantizerConfig": "config", "Observer": "observers", "LayerPlan": "policy", "LayerPolicyConfig": "policy",
    "Capabilities": "quantizer", "Quantizer": "quantizer", "get_registry": "registry",
    "report": "layer_report:quantization_report", "load_quantized": "saving", "save_quantized": "saving",
    "QuantSpec": "spec",
}


def __getattr__(name: str):
    if name in _LAZY:
        module, _, attr = _LAZY[name].partition(":")
        value = getattr(importlib.import_module(f".{module}", __name__), attr or name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a submodule: quantzoo.nn, ...
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Backend",
    "Capabilities",
    "ConfigError",
    "DataError",
    "DatasetDef",
    "DuplicateNameError",
    "LayerPlan",
    "LayerPolicyConfig",
    "ModelDef",
    "NonFiniteOutputError",
    "NotCalibratedError",
    "Observer",
    "PluginError",
    "QuantSpec",
    "Quantizer",
    "QuantizerConfig",
    "QuantzooError",
    "QuantzooWarning",
    "UnknownNameError",
    "UnsupportedError",
    "get_backend",
    "get_observer",
    "get_quantizer",
    "get_registry",
    "hookimpl",
    "list_quantizers",
    "load_quantized",
    "load_config",
    "quantize",
    "report",
    "save_quantized",
    "__version__",
]
