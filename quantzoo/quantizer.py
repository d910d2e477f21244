"""`Quantizer`: the interface every quantization method implements (prepare → calibrate/train → convert).

The public methods are template methods: :meth:`Quantizer.prepare` copies and checks the model, plans its
layers (:mod:`quantzoo.policy`), hands the method only the layers that are its to quantize, then puts in the
policy's 8-bit layers; :meth:`Quantizer.convert` bakes what is left. A method writes only its own math in
``_prepare``, and, where the default does not fit, ``_calibrate`` and ``_convert``. The order of the steps
and when to calibrate is :mod:`quantzoo.pipeline`'s job.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from .config import QuantizerConfig, format_validation_error
from .errors import ConfigError, DataError, NotCalibratedError, PluginError, QuantzooWarning, UnsupportedError
from .nn.attention import decompose_attention, disable_fused_paths
from .nn.capture import batch_inputs
from .nn.layers import bake_model
from .nn.swap import set_submodule
from .policy import LayerPlan, compute_layer_types, int8_layer, plan_layers

if TYPE_CHECKING:
    from .registry import Registry
    from .schemes import Scheme


class Capabilities(BaseModel):
    """What a method can do; the conformance kit, ``config_for_bits`` and the harness decide from this."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ptq: bool = False
    qat: bool = False
    weight_bits: tuple[int, ...] = (8,)
    #: Activation widths; ``None`` in the tuple: float activations allowed (empty: weights only).
    activation_bits: tuple[int | None, ...] = ()
    needs_calibration: bool = False
    needs_training: bool = False
    #: Module types the method quantizes (names of torch.nn classes); the layer plan covers these.
    module_types: tuple[str, ...] = ("Linear", "Conv1d", "Conv2d")

    def supports(self, w_bits: int, a_bits: int | None) -> bool:
        return w_bits in self.weight_bits and a_bits in (self.activation_bits or (None,))

    def describe_bits(self) -> str:
        """``"W1A1 or W1A32"`` for a few settings, else ``"weights 2..16 bits, activations 2..16 bits or float"``."""
        acts = self.activation_bits or (None,)
        combos = [f"W{w}A{32 if a is None else a}" for w in self.weight_bits for a in acts]
        if len(combos) <= 4:
            return " or ".join(combos) + (" (A32: float activations)" if None in acts else "")
        ints = [b for b in acts if b is not None]
        a = f"{_ranges(ints)} bits" if ints else ""
        if None in acts:
            a = f"{a} or float" if a else "float"
        return f"weights {_ranges(self.weight_bits)} bits, activations {a}"


def _ranges(bits: Iterable[int]) -> str:
    """``(2, 3, 4, 8)`` → ``"2..4, 8"``."""
    bits, out = sorted(set(bits)), []
    i = 0
    while i < len(bits):
        j = i
        while j + 1 < len(bits) and bits[j + 1] == bits[j] + 1:
            j += 1
        out.append(str(bits[i]) if i == j else f"{bits[i]}..{bits[j]}")
        i = j + 1
    return ", ".join(out)


class Quantizer:
    """A quantization method.

    Subclasses set the class attributes and implement :meth:`_prepare` (and :meth:`_config_for_bits` for
    the harness); the defaults of :meth:`_calibrate` (run the batches) and :meth:`_convert` (bake every
    quantized layer) fit most methods. The training loop (:func:`quantzoo.training.fit`) calls the
    optimizer hooks below.
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
    #: Rewrite ``nn.MultiheadAttention`` into ``nn.Linear`` projections before planning, so that the method's
    #: layer swap quantizes them (:mod:`quantzoo.nn.attention`); methods with their own attention handling
    #: (an anchor's quantizable MHA) leave it False.
    decomposes_attention: ClassVar[bool] = False
    #: Why the method cannot follow a hardware scheme (:mod:`quantzoo.schemes`), one line naming what its
    #: format fixes (e.g. "binary weights ±α: no granularity, symmetry or scale option"); the default
    #: :meth:`apply_scheme` refuses with it, and the row runs the method's own scheme.
    scheme_refusal: ClassVar[str] = ""

    def __init__(self, config: QuantizerConfig | dict | None = None, *, registry: Registry | None = None,
                 **overrides: Any):
        self.config = self.make_config(config, **overrides)
        #: Where the config's component names (observers, ...) that are not the core's own are resolved; the
        #: API and the harness pass theirs (components never reach for a process-wide registry).
        self.registry = registry
        self.check_names()

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

    def check_names(self) -> None:
        """Resolve the component names the config refers to (observers, ...) in the core's tables or
        ``self.registry``, raising :class:`ConfigError` naming the field. Called when the quantizer is built,
        before any work; the default checks nothing."""

    @classmethod
    def config_for_bits(cls, w_bits: int, a_bits: int | None) -> QuantizerConfig:
        """The config for a W/A setting of the harness (``a_bits=None``: float activations).

        Settings outside :attr:`capabilities` raise :class:`UnsupportedError` here, with one message for
        every method; the method maps the rest in :meth:`_config_for_bits`.
        """
        if not cls.capabilities.supports(w_bits, a_bits):
            raise UnsupportedError(f"{cls.name} supports {cls.capabilities.describe_bits()}, "
                                   f"not W{w_bits}A{'32' if a_bits is None else a_bits}")
        return cls._config_for_bits(w_bits, a_bits)

    @classmethod
    def _config_for_bits(cls, w_bits: int, a_bits: int | None) -> QuantizerConfig:
        raise UnsupportedError(f"{cls.name} does not map W{w_bits}A{a_bits} to a config")

    @classmethod
    def apply_scheme(cls, config: QuantizerConfig, scheme: Scheme) -> QuantizerConfig:
        """``config`` made to follow a hardware scheme (:mod:`quantzoo.schemes`: weight granularity, symmetry,
        power-of-two scales), or :class:`UnsupportedError` saying why the method keeps its own (the default:
        no such knobs, e.g. binary or logarithmic formats; :attr:`scheme_refusal` says why)."""
        why = cls.scheme_refusal or "it has no knobs for weight granularity, symmetry or scale type"
        raise UnsupportedError(f"{cls.name} cannot follow the {scheme.name} scheme: {why}")

    @classmethod
    def bits_of_config(cls, config: QuantizerConfig) -> tuple[int | None, int | None]:
        """``(weight_bits, activation_bits)`` of the model body under ``config`` (``None``: kept float): the
        W/A label of a row run from a config file. The default reads the fields ``weight``/``activation``
        (a :class:`~quantzoo.QuantSpec`) or ``weight_bits``/``activation_bits`` (integers); methods whose
        configs name widths otherwise (a Distiller schedule, an NNI config_list) override it."""

        def width(*fields: str) -> int | None:
            for f in fields:
                v = getattr(config, f, None)
                v = getattr(v, "bits", v)
                if isinstance(v, int) and not isinstance(v, bool):
                    return v
            return None

        return width("weight", "weight_bits"), width("activation", "activation_bits")

    @classmethod
    def conformance_model(cls) -> tuple[nn.Module, torch.Tensor] | None:
        """``(model, example_input)`` on which :mod:`quantzoo.testing` checks this method, or ``None``.

        ``None`` (the default) runs the kit's standard models: a CNN of two Conv2d+BN+ReLU blocks and a
        Linear on 1x8x8 inputs, and a three-layer MLP (three compute layers each, so a first/last-layer
        "fp" policy still leaves one quantized). Override it for methods that do not quantize those layers
        (e.g. dynamic quantization of a GRU). The kit seeds torch before calling this, so build fresh modules.
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
    def plan(self, model: nn.Module) -> LayerPlan:
        """The layer plan of ``model`` under this config (:func:`quantzoo.policy.plan_layers`)."""
        return plan_layers(model, self.config, compute_layer_types(self.capabilities.module_types))

    def prepare(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with observers/fake-quantizers inserted, ready for calibration or training.

        The method quantizes the plan's "method" layers; the core then replaces its "int8" layers by
        :meth:`policy_layer` and checks that "fp" layers were left alone.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name}.prepare expects a torch.nn.Module, got {type(model).__name__}")
        # A NaN/Inf weight would otherwise be hidden by some methods (sign() of NaN is a finite code).
        broken = [n for n, p in model.named_parameters() if p.is_floating_point() and not torch.isfinite(p).all()]
        if broken:
            raise DataError(f"{self.name}.prepare: model parameter(s) {', '.join(broken[:5])} contain NaN or Inf; "
                            "the model itself is broken: retrain it or load a good checkpoint")
        model = copy.deepcopy(model)
        disable_fused_paths(model)  # every quantizer inside a transformer block must see the data
        if self.decomposes_attention:
            decompose_attention(model)
        plan = self.plan(model)
        if plan.layers and not plan.method_layers():
            raise UnsupportedError(
                f"{self.name}: no layer left to quantize the method's way: the model has {len(plan.layers)} "
                f"compute layer(s) and the layer policy keeps them all at 8 bits or float ({plan.describe()}); "
                "set first_layer/last_layer to 'same' or narrow exclude")
        policy_types = {name: type(model.get_submodule(name)) for name in plan.layers if plan.roles[name] != "method"}
        prepared = self._prepare(model, plan)
        self._place_policy_layers(prepared, plan, policy_types)
        prepared._quantzoo_method = self.name
        prepared._quantzoo_plan = plan
        prepared._quantzoo_calibrated = False
        prepared._quantzoo_trained = False
        return prepared

    def _place_policy_layers(self, model: nn.Module, plan: LayerPlan, types: dict[str, type]) -> None:
        for name, float_type in types.items():
            try:
                mod = model.get_submodule(name)
            except AttributeError:
                raise PluginError(f"{self.name}: _prepare renamed or removed layer {name!r}, which the layer "
                                  "policy keeps at 8 bits or float; a method must leave those layers to the "
                                  "core (quantize only plan.method_layers())") from None
            if type(mod) is not float_type:
                raise PluginError(f"{self.name}: _prepare replaced layer {name!r} ({plan.reasons[name]}); a method "
                                  "must leave the layers the plan does not give it to the core")
            if plan.roles[name] == "int8":
                layer = self.policy_layer(name, mod)
                layer._quantzoo_role = "int8"
                set_submodule(model, name, layer)

    def policy_layer(self, name: str, module: nn.Module) -> nn.Module:
        """The 8-bit layer of the policy's "int8" role: 8-bit weight, and 8-bit input unless the method keeps
        activations float (:func:`quantzoo.policy.int8_layer`). A method overrides it only where its paper
        defines its own 8-bit layers (LSQ) or its backend needs its own layer type for 8-bit numbers (an
        exporter that knows only its own layers); which layers are 8-bit stays the core's decision."""
        return int8_layer(module, quantize_input=self.bits_of_config(self.config)[1] is not None,
                          scheme=getattr(self.config, "int8_scheme", "x86"))

    def calibrate(self, model: nn.Module, batches: Iterable) -> nn.Module:
        """Run ``batches`` (tensors, or ``(inputs, targets)`` pairs) through a prepared model in eval mode,
        then the method's own calibration step (:meth:`_calibrate`)."""
        batches = list(batches)
        if not batches:
            raise DataError(f"{self.name}: the calibration set is empty; give at least one batch")
        for i, batch in enumerate(batches):
            x = batch_inputs(batch)
            if torch.is_tensor(x) and x.is_floating_point() and not torch.isfinite(x).all():
                raise DataError(f"{self.name}: calibration batch {i} contains NaN or Inf in its inputs; "
                                "clean the calibration data")
        was_training = model.training
        model.eval()
        try:
            self._calibrate(model, batches)
        finally:
            model.train(was_training)
        model._quantzoo_calibrated = True
        return model

    @torch.no_grad()
    def _calibrate(self, model: nn.Module, batches: list) -> None:
        """The calibration step (eval mode): by default every batch goes through the model once, for the
        observers. Methods with phases (statistics passes, bias correction, reconstruction) override it."""
        run_batches(model, batches)

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
        for mod in converted.modules():  # the core's 8-bit layers, where the method's convert left them
            if getattr(mod, "_quantzoo_role", None) == "int8":
                mod.bake()
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
    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:  # pragma: no cover - abstract
        """Quantize ``plan.method_layers()`` of ``model`` (already a copy) and return it. Before putting a
        quantizer on a module's output, ask ``plan.activation_role(name)``: only "method" is yours."""
        raise NotImplementedError

    def _convert(self, model: nn.Module) -> nn.Module:
        """The convert step on a copy of the prepared model: by default every quantized layer is baked."""
        return bake_model(model)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


@torch.no_grad()
def run_batches(model: nn.Module, batches: Iterable) -> int:
    """Run ``batches`` (tensors or ``(x, y)`` pairs) through ``model`` without gradients; returns the count."""
    n = 0
    for batch in batches:
        model(batch_inputs(batch))
        n += 1
    return n
