"""quantzoo: every well-known quantization method for PyTorch behind one registry, scored on one protocol."""

from .api import get_backend, get_observer, get_quantizer, list_quantizers, load_config, quantize
from .backends import Backend
from .catalog import DatasetDef, ModelDef
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
from .observers import Observer
from .config import QuantizerConfig
from .policy import LayerPlan, LayerPolicyConfig
from .quantizer import Capabilities, Quantizer
from .registry import get_registry
from .report import quantization_report as report
from .saving import load_quantized, save_quantized
from .spec import QuantSpec

__version__ = "0.1.0"

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
