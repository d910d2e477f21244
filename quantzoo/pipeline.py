"""The one quantization pipeline: prepare → calibrate → train → convert → lower.

``quantzoo.quantize`` (the API), the conformance kit (:mod:`quantzoo.testing`) and the harness
(:mod:`quantzoo.bench`) all call :func:`run_pipeline` (or its two halves, :func:`prepare_model` and
:func:`finish_model`), so a method is driven the same way wherever it runs. The rules it owns:

* **When to calibrate** (:func:`calibration_due`): in PTQ mode always; in QAT mode only where the method
  needs calibration before training (observers or learned scales initialised from data).
* **No broken model returned**: the converted (and the lowered) model runs one forward pass on an example
  input, in eval mode with gradients enabled, and its outputs must be finite; a failure raises a quantzoo
  error naming the method and the stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .errors import DataError, NonFiniteOutputError, QuantzooError, UnsupportedError
from .nn.capture import batch_inputs
from .quantizer import Capabilities, Quantizer

Mode = Literal["ptq", "qat"]
#: ``train(prepared, quantizer)``: trains in place and returns None, or returns the model to continue with
#: (e.g. the best of several learning-rate trials).
TrainFn = Callable[[nn.Module, Quantizer], nn.Module | None]


def default_mode(capabilities: Capabilities, train: TrainFn | None = None) -> Mode:
    """QAT when a training step is given or the method only trains; PTQ otherwise."""
    if train is not None or not capabilities.ptq:
        return "qat"
    return "ptq"


def calibration_due(capabilities: Capabilities, mode: Mode) -> bool:
    """The calibration rule, stated once: PTQ always calibrates; QAT calibrates before training only where
    the method needs it (``capabilities.needs_calibration``)."""
    return mode == "ptq" or capabilities.needs_calibration


@dataclass
class PipelineResult:
    """What one run of the pipeline produced, with the time each stage took (seconds)."""

    model: nn.Module  # the converted model
    lowered: nn.Module | None = None  # the model on the backend, when a backend was asked for
    mode: Mode = "ptq"
    calibration_samples: int | None = None
    times: dict[str, float] = field(default_factory=dict)


def prepare_model(quantizer: Quantizer, model: nn.Module, *, mode: Mode | None = None,
                  calibration: Iterable | None = None, train: TrainFn | None = None,
                  times: dict[str, float] | None = None) -> tuple[nn.Module, Mode, int | None]:
    """Prepare, calibrate (where :func:`calibration_due`) and train: ``(prepared, mode, calibration samples)``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{quantizer.name}.prepare expects a torch.nn.Module, got {type(model).__name__}")
    caps = quantizer.capabilities
    mode = mode or default_mode(caps, train)
    if mode not in ("ptq", "qat"):
        raise UnsupportedError(f"mode must be 'ptq' or 'qat', not {mode!r}")
    if (mode == "ptq" and not caps.ptq) or (mode == "qat" and not caps.qat):
        raise UnsupportedError(f"{quantizer.name} does not support {mode.upper()} (capabilities: ptq={caps.ptq}, "
                               f"qat={caps.qat})")
    batches = list(calibration) if calibration is not None else None
    due = calibration_due(caps, mode)
    if due and caps.needs_calibration and batches is None:
        raise DataError(f"{quantizer.name} needs calibration data: give calibration=[batch, ...] to calibrate it "
                        "(tensors or (x, y) pairs from the training distribution)")
    if due and batches is not None and not batches:
        raise DataError(f"{quantizer.name}: the calibration set is empty; give at least one batch")
    times = times if times is not None else {}
    t = time.perf_counter()
    prepared = quantizer.prepare(model)
    times["prepare_s"] = time.perf_counter() - t
    samples = None
    if due and batches:
        t = time.perf_counter()
        quantizer.calibrate(prepared, batches)
        times["calib_s"] = time.perf_counter() - t
        samples = sum(len(batch_inputs(b)) for b in batches)
    if mode == "qat" and train is not None:  # without one, the caller trains the prepared model itself
        t = time.perf_counter()
        trained = train(prepared, quantizer)
        prepared = prepared if trained is None else trained
        prepared._quantzoo_trained = True
        times["train_s"] = time.perf_counter() - t
    return prepared, mode, samples


def finish_model(quantizer: Quantizer, prepared: nn.Module, *, example_input: Any = None,
                 backend: str | None = None, times: dict[str, float] | None = None,
                 ) -> tuple[nn.Module, nn.Module | None]:
    """Convert, check one forward pass, and lower onto ``backend`` (its name): ``(converted, lowered)``."""
    times = times if times is not None else {}
    t = time.perf_counter()
    converted = quantizer.convert(prepared)
    times["convert_s"] = time.perf_counter() - t
    if example_input is not None:
        check_forward(converted, example_input, f"{quantizer.name}: the converted model")
    lowered = None
    if backend is not None:
        t = time.perf_counter()
        lowered = lower(converted, backend, example_input, registry=quantizer.registry)
        times["lower_s"] = time.perf_counter() - t
        if example_input is not None:
            check_forward(lowered, example_input, f"{quantizer.name}: the model lowered onto {backend!r}")
    return converted, lowered


def run_pipeline(quantizer: Quantizer, model: nn.Module, *, mode: Mode | None = None,
                 calibration: Iterable | None = None, train: TrainFn | None = None,
                 example_input: Any = None, backend: str | None = None) -> PipelineResult:
    """The whole pipeline on a copy of ``model``. ``example_input`` defaults to the first calibration batch."""
    batches = list(calibration) if calibration is not None else None
    if example_input is None and batches:
        example_input = batch_inputs(batches[0])
    times: dict[str, float] = {}
    prepared, mode, samples = prepare_model(quantizer, model, mode=mode, calibration=batches, train=train,
                                            times=times)
    converted, lowered = finish_model(quantizer, prepared, example_input=example_input, backend=backend,
                                      times=times)
    return PipelineResult(converted, lowered, mode, samples, times)


def lower(converted: nn.Module, backend: str, example_input: Any = None, *, registry=None) -> nn.Module:
    """``converted`` on the named backend; :class:`UnsupportedError` where the backend is unavailable."""
    if registry is None:
        from .registry import get_registry

        registry = get_registry()
    be = registry.get("backend", backend)()
    ok, why = be.is_available()
    if not ok:
        raise UnsupportedError(f"backend {be.name} is unavailable: {why}")
    return be.lower(converted, example_input)


def check_forward(model: nn.Module, x: Any, what: str) -> None:
    """Run ``model`` once on ``x`` (eval mode, gradients enabled, as a user calls it) and require finite
    outputs; anything else raises a quantzoo error naming ``what``."""
    was_training = model.training
    model.eval()
    try:
        out = model(x)
    except QuantzooError:
        raise
    except Exception as exc:  # a model that fails when called is a defect of the method that made it
        raise UnsupportedError(f"{what} fails when called ({type(exc).__name__}: {exc}); this is a bug in "
                               "the method, please report it") from exc
    finally:
        model.train(was_training)
    for t in _tensors(out):
        if t.is_floating_point() and not torch.isfinite(t.detach()).all():
            raise NonFiniteOutputError(f"{what} outputs NaN/Inf on normal input; the quantized model is broken "
                                       "(check the method's training: a diverged scale or weight)")


def _tensors(out: Any) -> list[torch.Tensor]:
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return []
