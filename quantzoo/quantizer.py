"""`Quantizer`: the interface every quantization method implements (prepare → calibrate/train → convert)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from .errors import ConfigError, DataError, NotCalibratedError, QuantzooWarning, UnsupportedError
from .nn.swap import LayerPolicy


class QuantizerConfig(BaseModel):
    """Base of every method's config: frozen, unknown keys rejected, versioned.

    Subclasses add their fields with defaults, so ``Config()`` is always valid. Serialised through the
    registry name: ``{"method": "dorefa", "version": 1, "config": {...}}`` (see :meth:`Quantizer.to_json`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: int = 1


class LayerPolicyConfig(QuantizerConfig):
    """Config mixin for the first/last-layer policy (kept FP, 8-bit, or quantized like the body)."""

    first_layer: LayerPolicy = "same"
    last_layer: LayerPolicy = "same"


class Capabilities(BaseModel):
    """What a method can do; the conformance kit and the harness decide what to run from this."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ptq: bool = False
    qat: bool = False
    weight_bits: tuple[int, ...] = (8,)
    activation_bits: tuple[int, ...] = ()  # empty: weights only; 32 in the tuple: float activations allowed
    needs_calibration: bool = False
    needs_training: bool = False
    #: Module types the method quantizes (names of torch.nn classes), for documentation and model choice.
    module_types: tuple[str, ...] = ("Linear", "Conv1d", "Conv2d")


class Quantizer:
    """A quantization method.

    Subclasses set the class attributes and implement :meth:`_prepare` and :meth:`_convert`; the public
    :meth:`prepare`/:meth:`convert` copy the model, validate and record state. The training loop
    (:func:`quantzoo.training.fit`) calls the optimizer hooks below.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[QuantizerConfig]] = QuantizerConfig
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Backend a converted model runs on by default (``fakequant`` is float simulation).
    default_backend: ClassVar[str] = "fakequant"

    def __init__(self, config: QuantizerConfig | dict | None = None, **overrides: Any):
        self.config = self.make_config(config, **overrides)

    # -- configuration -------------------------------------------------------------------------------
    @classmethod
    def make_config(cls, config: QuantizerConfig | dict | None = None, **overrides: Any) -> QuantizerConfig:
        """Validate ``config`` (an instance, a dict or None for the defaults) plus keyword overrides."""
        if isinstance(config, cls.Config):
            data = config.model_dump()
        elif config is None:
            data = {}
        elif isinstance(config, dict):
            data = dict(config)
        else:
            raise ConfigError(f"{cls.name}: config must be a {cls.Config.__name__}, a dict or None, "
                              f"not {type(config).__name__}")
        data.update(overrides)
        try:
            return cls.Config.model_validate(data)
        except ValidationError as e:
            raise ConfigError(format_validation_error(cls.name, e)) from None

    @classmethod
    def config_for_bits(cls, w_bits: int, a_bits: int | None) -> QuantizerConfig:
        """The config for a W/A bit setting of the harness (``a_bits=None``: float activations).

        Raise :class:`UnsupportedError` where the method has no such setting.
        """
        raise UnsupportedError(f"{cls.name} does not map W{w_bits}A{a_bits} to a config")

    @classmethod
    def bits_of_config(cls, config: QuantizerConfig) -> tuple[int | None, int | None]:
        """``(weight_bits, activation_bits)`` of the model body under ``config`` (``None``: kept float): the
        W/A label of a row run from a config file. The default reads a spec or integer field named
        ``weight``/``weight_bits``/``w_bits``/``bits`` and ``activation``/``activation_bits``/``a_bits``;
        methods whose configs name widths otherwise (a Distiller schedule, an NNI config_list) override it."""

        def first(*fields: str) -> int | None:
            for f in fields:
                v = getattr(config, f, None)
                v = getattr(v, "bits", v)
                if isinstance(v, int) and not isinstance(v, bool):
                    return v
            return None

        return first("weight", "weight_bits", "w_bits", "bits"), first("activation", "activation_bits", "a_bits")

    @classmethod
    def conformance_model(cls) -> tuple[nn.Module, torch.Tensor] | None:
        """``(model, example_input)`` on which :mod:`quantzoo.testing` checks this method, or ``None``.

        ``None`` (the default) runs the kit's standard models: a CNN of two Conv2d+BN+ReLU blocks and a
        Linear on 1x8x8 inputs, and a three-layer MLP (three compute layers each, so a first/last-layer
        "fp" policy still leaves one quantized). Override it for methods that do not quantize those layers (e.g. dynamic
        quantization of a GRU). The kit seeds torch before calling this, so build fresh random modules.
        """
        return None

    @classmethod
    def conformance_overrides(cls) -> dict:
        """Config overrides :mod:`quantzoo.testing` applies when it checks this class with its defaults, to
        shorten long work only (e.g. a reconstruction's iterations; scikit-learn's checks lower ``max_iter``
        alike), never to change what a check sees. Instances are checked with their own config. Default: none.
        """
        return {}

    def to_json(self) -> dict:
        """``{"method": name, "version": v, "config": {...}}``; :func:`quantzoo.load_config` reverses it."""
        return {"method": self.name, "version": self.config.version, "config": self.config.model_dump(mode="json")}

    # -- the method ------------------------------------------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with observers/fake-quantizers inserted, ready for calibration or training."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name}.prepare expects a torch.nn.Module, got {type(model).__name__}")
        # A NaN/Inf weight would otherwise be hidden by some methods (sign() of NaN is a finite code).
        broken = [n for n, p in model.named_parameters() if p.is_floating_point() and not torch.isfinite(p).all()]
        if broken:
            raise DataError(f"{self.name}.prepare: model parameter(s) {', '.join(broken[:5])} contain NaN or Inf; "
                            "the model itself is broken: retrain it or load a good checkpoint")
        prepared = self._prepare(copy.deepcopy(model))
        prepared._quantzoo_method = self.name
        prepared._quantzoo_calibrated = False
        prepared._quantzoo_trained = False
        return prepared

    @torch.no_grad()
    def calibrate(self, model: nn.Module, batches: Iterable) -> nn.Module:
        """Run ``batches`` (tensors, or ``(inputs, targets)`` pairs) through a prepared model in eval mode."""
        was_training = model.training
        model.eval()
        n = 0
        for i, batch in enumerate(batches):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if torch.is_tensor(x) and x.is_floating_point() and not torch.isfinite(x).all():
                raise DataError(f"{self.name}: calibration batch {i} contains NaN or Inf in its inputs; "
                                "clean the calibration data")
            model(x)
            n += 1
        model.train(was_training)
        if n == 0:
            raise DataError(f"{self.name}: the calibration set is empty; give at least one batch")
        model._quantzoo_calibrated = True
        return model

    def convert(self, model: nn.Module) -> nn.Module:
        """The final quantized model (a copy). Raises if a PTQ method was never calibrated; warns if a
        method that needs training was not trained."""
        if not hasattr(model, "_quantzoo_method"):
            raise UnsupportedError(f"{self.name}.convert expects a model returned by prepare()")
        if self.capabilities.needs_calibration and not getattr(model, "_quantzoo_calibrated", False):
            if not getattr(model, "_quantzoo_trained", False):
                raise NotCalibratedError(
                    f"{self.name}: convert() called before calibration; run calibrate(model, batches) first"
                )
        if self.capabilities.needs_training and not getattr(model, "_quantzoo_trained", False):
            warnings.warn(f"{self.name}: converting a model that was never trained (training skipped); "
                          "expect low accuracy", QuantzooWarning, stacklevel=2)
        converted = self._convert(copy.deepcopy(model))
        converted.eval()
        return converted

    # -- training hooks, called by quantzoo.training.fit -----------------------------------------------
    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer parameter groups (override to give e.g. PACT's clip its own weight decay)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr,
                 "weight_decay": weight_decay}]

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        """Called before each training epoch (e.g. to freeze observers or BN statistics)."""

    def before_optimizer_step(self, model: nn.Module) -> None:
        """Called after ``backward()`` and before ``optimizer.step()``."""

    def after_optimizer_step(self, model: nn.Module) -> None:
        """Called after ``optimizer.step()`` (e.g. BNN clips latent weights to [-1, 1])."""

    # -- to implement ------------------------------------------------------------------------------------
    def _prepare(self, model: nn.Module) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _convert(self, model: nn.Module) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def format_validation_error(owner: str, err: ValidationError) -> str:
    """One line per problem: ``owner: field.path: message (got value)``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
        parts.append(f"{loc}: {msg}{got}")
    return f"{owner}: invalid config: " + "; ".join(parts)
