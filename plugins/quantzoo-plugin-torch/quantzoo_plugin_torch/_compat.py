"""What this torch (and torchao) provides, and how their noise is contained.

* :func:`torch_ao_api` probes the torch.ao.quantization entry points each method needs; a method whose API is
  missing (a future torch that removed eager/FX quantization) reports itself unavailable instead of failing.
* :func:`torch_ao_calls` wraps every call into torch.ao.quantization: torch >= 2.8 warns that the package is
  deprecated on every call (and the quantized tensor constructors warn too); the first such warning is
  re-emitted once per process as a :class:`TorchAODeprecationNotice`, later ones are dropped. Every other
  warning passes through unchanged.
* :func:`import_torchao` imports torchao with its loggers muted (it logs "Failed to load ..._C_*.so" for
  its CUDA extensions on CPU-only machines, and torch's pytree logs an Enum notice).
* :func:`engine_scope` sets ``torch.backends.quantized.engine`` for the duration of a block.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
import re
import warnings
from collections.abc import Iterator

import torch

#: torch versions this plugin is written and tested against (eager/FX torch.ao.quantization).
SUPPORTED_TORCH = ">=2.4,<2.14"
TESTED_TORCH = "2.13.0"

_DEPRECATION = re.compile(
    r"torch\.ao\.quantization is deprecated|quantized tensor creation functions|reduce_range will be deprecated")
_noticed = False


class TorchAODeprecationNotice(DeprecationWarning):
    """torch.ao.quantization (eager/FX) is deprecated upstream in favour of torchao; shown once per process."""


@contextlib.contextmanager
def torch_ao_calls() -> Iterator[None]:
    """Run torch.ao.quantization calls, turning their repeated deprecation warnings into one notice."""
    global _noticed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if _DEPRECATION.search(str(w.message)):
            if not _noticed:
                _noticed = True
                first = str(w.message).strip().splitlines()[0]
                warnings.warn(
                    f"quantzoo-plugin-torch: {first} (torch {torch.__version__}; this plugin supports torch "
                    f"{SUPPORTED_TORCH} and reports methods unavailable where the API is gone). "
                    "Shown once per process.",
                    TorchAODeprecationNotice,
                    stacklevel=3,
                )
            continue
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _probe(path: str) -> str | None:
    """``None`` if ``module:attr.attr`` imports, else the reason it does not."""
    mod_name, _, attrs = path.partition(":")
    try:
        obj = importlib.import_module(mod_name)
        for a in filter(None, attrs.split(".")):
            obj = getattr(obj, a)
    except Exception as exc:  # noqa: BLE001 - ImportError, AttributeError, or a broken install: all mean missing
        return f"{path} is missing in torch {torch.__version__} ({type(exc).__name__}: {exc})"
    return None


_TORCH_AO_NEEDS = {
    "dynamic": ["torch.ao.quantization:quantize_dynamic", "torch.ao.nn.quantized.dynamic:Linear"],
    "eager": ["torch.ao.quantization:prepare", "torch.ao.quantization:convert",
              "torch.ao.quantization:fuse_modules", "torch.ao.quantization:QuantWrapper",
              "torch.ao.quantization:QConfig", "torch.ao.quantization:HistogramObserver"],
    "fx": ["torch.ao.quantization.quantize_fx:prepare_fx", "torch.ao.quantization.quantize_fx:convert_fx",
           "torch.ao.quantization:get_default_qconfig_mapping",
           "torch.ao.quantization.backend_config:get_native_backend_config"],
    "qat": ["torch.ao.quantization:prepare_qat", "torch.ao.quantization:fuse_modules_qat",
            "torch.ao.quantization:get_default_qat_qconfig", "torch.ao.quantization:disable_observer",
            "torch.ao.nn.intrinsic.qat:freeze_bn_stats"],
}


@functools.cache
def torch_ao_api(flow: str) -> tuple[bool, str]:
    """``(True, "")`` if torch provides every entry point of ``flow`` (dynamic|eager|fx|qat), else the reason."""
    problems = [p for p in map(_probe, _TORCH_AO_NEEDS[flow]) if p]
    return (not problems, "; ".join(problems))


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in names]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, old):
            lg.setLevel(lv)


_TORCHAO_NEEDS = {
    "quantize_": ["torchao.quantization:quantize_"],
    "int8-dynamic": ["torchao.quantization:Int8DynamicActivationInt8WeightConfig"],
    "int8-weight": ["torchao.quantization:Int8WeightOnlyConfig"],
    "pt2e": ["torchao.quantization.pt2e.quantize_pt2e:prepare_pt2e",
             "torchao.quantization.pt2e.quantize_pt2e:convert_pt2e",
             "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer:X86InductorQuantizer",
             "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer:get_default_x86_inductor_quantization_config",
             "torch.export:export"],
}


@functools.cache
def import_torchao():
    """The torchao module, imported with its CUDA-extension log lines muted; ``None`` if not installed."""
    with _quiet_loggers("torchao", "torch.utils._pytree"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module("torchao")
        except Exception:  # noqa: BLE001 - a broken torchao install (any error on import) counts as absent
            return None


def torchao_installed() -> tuple[bool, str]:
    """Whether torchao can be imported, found without importing it (importing torchao pulls in torch's
    compiler stack, seconds of start-up); what registration, and so ``quantzoo list``, shows."""
    try:
        found = importlib.util.find_spec("torchao") is not None
    except (ImportError, ValueError):  # a broken install, or ``sys.modules['torchao'] = None``
        found = False
    return (True, "") if found else (False, _TORCHAO_MISSING)


_TORCHAO_MISSING = "torchao is not installed (pip install 'quantzoo-plugin-torch[torchao]')"


@functools.cache
def torchao_api(feature: str) -> tuple[bool, str]:
    """``(True, "")`` if torchao is installed and provides ``feature``, else the reason (for ``quantzoo list``)."""
    if import_torchao() is None:
        return False, _TORCHAO_MISSING
    with _quiet_loggers("torchao", "torch.utils._pytree"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problems = [p for p in map(_probe, _TORCHAO_NEEDS["quantize_"] + _TORCHAO_NEEDS[feature]) if p]
    return (not problems, "; ".join(problems))


ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")


def engine_available(engine: str) -> tuple[bool, str]:
    """Whether this torch build ships the quantized ``engine``."""
    supported = torch.backends.quantized.supported_engines
    if engine in supported:
        return True, ""
    return False, f"quantized engine {engine!r} is not in this torch build (has: {', '.join(supported)})"


@contextlib.contextmanager
def engine_scope(engine: str) -> Iterator[None]:
    """Set ``torch.backends.quantized.engine`` inside the block and restore it after.

    Weights are packed for the engine active when a quantized module is built (``convert``) and executed by
    the engine that packed them, so prepare/convert/run must all happen inside the same scope.
    """
    ok, why = engine_available(engine)
    if not ok:
        from quantzoo.errors import UnsupportedError

        raise UnsupportedError(why)
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = old
