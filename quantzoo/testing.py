"""The conformance kit: checks that hold a quantization method to quantzoo's contract.

In the manner of scikit-learn's ``parametrize_with_checks``, a plugin adds one test::

    from quantzoo.testing import parametrize_with_checks

    @parametrize_with_checks([MyQuantizer])
    def test_conformance(quantizer, check):
        check(quantizer)

Each check is a small function ``check_<what>(quantizer)`` with tiny synthetic data (seeded), and fails with
an :class:`AssertionError` whose message names the method, what went wrong and the fix. The method's
:class:`~quantzoo.Capabilities` decide which checks apply (e.g. gradients only for QAT methods).

How the kit finds quantized weights in a converted model is :func:`quantzoo.quantized_weights.find_quantized_weights`
(a method whose converted model has none is a defect: it silently runs in full precision). Each must hold at
most ``2**bits`` distinct values per output channel (dim 0), or per group.
A method whose layers the standard models do not contain overrides
:meth:`quantzoo.Quantizer.conformance_model`.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import ConfigError, NotCalibratedError, QuantzooWarning, UnsupportedError
from .config import QuantizerConfig
from .pipeline import finish_model, prepare_model
from .quantized_weights import find_quantized_weights, max_distinct
from .quantizer import Quantizer

__all__ = [
    "ALL_CHECKS",
    "HARNESS_SETTINGS",
    "check_quantizer",
    "find_quantized_weights",
    "parametrize_with_checks",
    "yield_checks",
]

_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
#: The W/A settings of the harness's standard suite (``None``: float activations).
HARNESS_SETTINGS = ((8, 8), (8, None), (4, 4), (4, None), (2, 2), (2, None), (1, 1), (1, None))
_SEED = 0
_CALIBRATION_BATCHES = 4


# ---------------------------------------------------------------------------------------------------------
# standard models and the pipeline every check shares
# ---------------------------------------------------------------------------------------------------------
# Three compute layers each, so a method that keeps the first and last layer in float (a common default)
# still quantizes the middle one.
def _conv_model() -> tuple[nn.Module, torch.Tensor]:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 8 * 8, 10),
    )
    return model, torch.randn(8, 1, 8, 8)


def _mlp_model() -> tuple[nn.Module, torch.Tensor]:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 10))
    return model, torch.randn(8, 64)


def _conformance_models(quantizer: Quantizer) -> list[tuple[str, Callable[[], tuple[nn.Module, torch.Tensor]]]]:
    """``(label, build)`` pairs; ``build()`` returns a fresh ``(model, example_input)``."""
    cls = type(quantizer)
    if cls.conformance_model() is not None:
        return [("conformance_model", cls.conformance_model)]
    return [("conv model", _conv_model), ("mlp", _mlp_model)]


def _build(build: Callable, seed: int) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model, x = build()
    model.eval()
    return model, x


def _calibration_batches(x: torch.Tensor, seed: int) -> list[torch.Tensor]:
    if not x.is_floating_point():  # token ids etc.: reuse the example input
        return [x]
    gen = torch.Generator().manual_seed(seed + 1000)
    return [torch.randn(x.shape, generator=gen, dtype=x.dtype) for _ in range(_CALIBRATION_BATCHES)]


def _loss(out: Any) -> torch.Tensor:
    out = out[0] if isinstance(out, (tuple, list)) else out
    # A fixed, non-symmetric target so every output unit gets a non-zero gradient.
    target = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).reshape(out.shape)
    return (out - target).square().mean()


def _train_step(x: torch.Tensor):
    """A training function for the pipeline: one SGD step through the quantizer's hooks (as
    :func:`quantzoo.training.fit` does)."""

    def train(prepared: nn.Module, quantizer: Quantizer) -> None:
        prepared.train()
        groups = quantizer.param_groups(prepared, 0.01, 0.0)
        opt = torch.optim.SGD(groups, lr=0.01)
        quantizer.on_epoch_start(prepared, 0, 1)
        opt.zero_grad()
        _loss(prepared(x)).backward()
        quantizer.before_optimizer_step(prepared)
        opt.step()
        quantizer.after_optimizer_step(prepared)
        prepared.eval()

    return train


def _mode(quantizer: Quantizer, train: bool) -> str:
    return "qat" if train or not quantizer.capabilities.ptq else "ptq"


def _prepared(quantizer: Quantizer, build: Callable, seed: int = _SEED, *, train: bool | None = None):
    """The pipeline's first half (:func:`quantzoo.pipeline.prepare_model`): prepare, calibrate where the
    pipeline's rule says so, and train one step where the method needs training (or ``train=True``)."""
    model, x = _build(build, seed)
    train = quantizer.capabilities.needs_training if train is None else train
    prepared, _, _ = prepare_model(quantizer, model, mode=_mode(quantizer, train),
                                   calibration=_calibration_batches(x, seed), train=_train_step(x) if train else None)
    prepared.eval()
    return prepared, x


def _converted(quantizer: Quantizer, build: Callable, seed: int = _SEED):
    prepared, x = _prepared(quantizer, build, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantzooWarning)
        converted, _ = finish_model(quantizer, prepared)
    return converted, x


def check_config(cls: type[Quantizer], w_bits: int, a_bits: int | None):
    """``cls.config_for_bits(w_bits, a_bits)`` with the class's ``conformance_overrides()``: the config a
    test runs a method under when it checks behaviour, not convergence (e.g. 8 reconstruction iterations)."""
    return cls.make_config({**cls.config_for_bits(w_bits, a_bits).model_dump(), **cls.conformance_overrides()})


def _fresh(quantizer: Quantizer | type[Quantizer]) -> Quantizer:
    """A new instance with the same config (checks never share state such as schedules); a class gets its
    defaults with its ``conformance_overrides()``."""
    if isinstance(quantizer, type):
        return quantizer(**quantizer.conformance_overrides())
    return type(quantizer)(quantizer.config)


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _outputs(o)]
    return []


@torch.no_grad()
def _run(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone() for t in _outputs(model(x))]


# ---------------------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------------------
def _who(quantizer: Quantizer) -> str:
    return f"{type(quantizer).__name__} ({quantizer.name or '<no name>'})"


def check_name(quantizer: Quantizer) -> None:
    """The name is a lowercase slug; aliases are slugs too."""
    cls = type(quantizer)
    assert isinstance(cls.name, str) and _SLUG.match(cls.name), (
        f"{_who(quantizer)}: Quantizer.name must be a lowercase slug of letters, digits, '.', '_', '-' "
        f"(got {cls.name!r}); set the class attribute name = 'my-method'")
    for a in cls.aliases:
        assert isinstance(a, str) and _SLUG.match(a.lower()), (
            f"{_who(quantizer)}: alias {a!r} is not a slug; fix Quantizer.aliases")


def check_registered(quantizer: Quantizer) -> None:
    """The class is registered in the registry under its name."""
    from .registry import get_registry

    cls = type(quantizer)
    reg = get_registry()
    names = reg.names("quantizer")
    assert cls.name in names, (
        f"{_who(quantizer)}: not registered (installed: {', '.join(names)}); add a hookimpl "
        "register_quantizers(register) calling register(cls) to the module named by the plugin's "
        "[project.entry-points.quantzoo] entry point, and install the plugin "
        "(or pass allow_unregistered=True for a test double)")
    registered = reg.get("quantizer", cls.name)
    assert registered is cls, (
        f"{_who(quantizer)}: the name {cls.name!r} is registered to {registered.__module__}."
        f"{registered.__qualname__}, not to this class; register this class or rename it")


def check_capabilities(quantizer: Quantizer) -> None:
    """Capabilities are consistent: PTQ or QAT, sensible bit widths."""
    caps = quantizer.capabilities
    who = _who(quantizer)
    assert caps.ptq or caps.qat, f"{who}: capabilities say neither ptq nor qat; set at least one"
    assert caps.weight_bits, f"{who}: capabilities.weight_bits is empty; list the weight widths it supports"
    for b in (*caps.weight_bits, *(b for b in caps.activation_bits if b is not None)):
        assert isinstance(b, int) and 1 <= b <= 16, (
            f"{who}: bit width {b!r} in capabilities is not in 1..16 (None in activation_bits: float activations)")
    assert not (caps.needs_training and not caps.qat), (
        f"{who}: capabilities.needs_training=True but qat=False; a method that needs training is a QAT method")


def check_config_defaults(quantizer: Quantizer) -> None:
    """``Config()`` constructs with defaults, is a QuantizerConfig and has an integer version."""
    cls, who = type(quantizer), _who(quantizer)
    assert isinstance(cls.Config, type) and issubclass(cls.Config, QuantizerConfig), (
        f"{who}: Config must subclass quantzoo.QuantizerConfig (or LayerPolicyConfig)")
    try:
        cfg = cls.Config()
    except Exception as exc:
        raise AssertionError(f"{who}: Config() failed ({exc}); give every config field a default") from exc
    assert isinstance(cfg.version, int) and cfg.version >= 1, f"{who}: Config.version must be an int >= 1"
    assert cls.make_config() == cfg, f"{who}: make_config() differs from Config(); do not override defaults there"
    assert cls().config == cfg, f"{who}: Quantizer() must use Config() as its config"


def check_config_frozen(quantizer: Quantizer) -> None:
    """Config instances are immutable (model_config frozen=True)."""
    cfg = type(quantizer).Config()
    try:
        cfg.version = cfg.version + 1
    except Exception:  # noqa: BLE001 - pydantic raises ValidationError for frozen models
        return
    raise AssertionError(f"{_who(quantizer)}: Config is mutable; keep model_config frozen=True "
                         "(inherit QuantizerConfig's model_config)")


def check_config_forbids_extra(quantizer: Quantizer) -> None:
    """Unknown config keys raise ConfigError through make_config."""
    cls = type(quantizer)
    try:
        cls.make_config({"no_such_field_quantzoo": 1})
    except ConfigError as exc:
        assert "no_such_field_quantzoo" in str(exc), (
            f"{_who(quantizer)}: the ConfigError for an unknown key must name it (got: {exc})")
        return
    except Exception as exc:
        raise AssertionError(f"{_who(quantizer)}: make_config raised {type(exc).__name__} for an unknown key; "
                             "it must raise quantzoo.ConfigError (do not override make_config)") from exc
    raise AssertionError(f"{_who(quantizer)}: Config accepted an unknown key; keep extra='forbid'")


def _check_json_roundtrip(quantizer: Quantizer, *, through_registry: bool) -> None:
    from .api import load_config

    who = _who(quantizer)
    data = quantizer.to_json()
    assert data.get("method") == quantizer.name, f"{who}: to_json()['method'] must be the registry name"
    text = json.dumps(data)  # must be plain JSON
    back = json.loads(text)
    cfg = load_config(back) if through_registry else type(quantizer).make_config(back["config"])
    assert type(cfg) is type(quantizer.config) and cfg == quantizer.config, (
        f"{who}: config does not survive to_json -> json -> load_config ({quantizer.config!r} became {cfg!r}); "
        "make every field JSON-serialisable with a validator that accepts its JSON form")


def check_config_json_roundtrip(quantizer: Quantizer) -> None:
    """The config survives to_json → JSON text → quantzoo.load_config (resolved by registry name)."""
    _check_json_roundtrip(quantizer, through_registry=True)


def check_config_json_roundtrip_unregistered(quantizer: Quantizer) -> None:
    """The config survives to_json → JSON text → make_config (test doubles outside the registry)."""
    _check_json_roundtrip(quantizer, through_registry=False)


def check_config_schema(quantizer: Quantizer) -> None:
    """Config.model_json_schema() works and is JSON (``quantzoo info`` shows it)."""
    try:
        json.dumps(type(quantizer).Config.model_json_schema())
    except Exception as exc:
        raise AssertionError(f"{_who(quantizer)}: Config.model_json_schema() failed ({type(exc).__name__}: {exc}); "
                             "use field types pydantic can describe (or give them a json_schema)") from exc


def check_config_for_bits(quantizer: Quantizer) -> None:
    """config_for_bits returns a Config or raises UnsupportedError, maps at least one harness setting, and
    bits_of_config reads each setting's widths back (the W/A label of a row run from a config file)."""
    cls, who = type(quantizer), _who(quantizer)
    supported = []
    for w, a in HARNESS_SETTINGS:
        try:
            cfg = cls.config_for_bits(w, a)
        except UnsupportedError:
            continue
        except Exception as exc:
            raise AssertionError(f"{who}: config_for_bits({w}, {a}) raised {type(exc).__name__}: {exc}; "
                                 "raise quantzoo.UnsupportedError for settings the method lacks") from exc
        assert isinstance(cfg, cls.Config), (
            f"{who}: config_for_bits({w}, {a}) returned {type(cfg).__name__}, not {cls.Config.__name__}")
        got = cls.bits_of_config(cfg)
        assert tuple(got) == (w, a), (
            f"{who}: bits_of_config(config_for_bits({w}, {a})) = {got}, not {(w, a)}; override bits_of_config so "
            "that a row run from a config file is labelled with the widths it really uses")
        supported.append((w, a))
    assert supported, (f"{who}: config_for_bits supports none of the harness settings {HARNESS_SETTINGS}, "
                       "so the method gets no leaderboard rows; implement it")


def check_prepare_convert_shapes(quantizer: Quantizer) -> None:
    """prepare and convert keep the float model's output shapes and dtypes."""
    for label, build in _conformance_models(quantizer):
        model, x = _build(build, _SEED)
        ref = _run(model, x)
        prepared, _ = _prepared(quantizer, build)
        converted, _ = _converted(quantizer, build)
        for stage, m in (("prepare", prepared), ("convert", converted)):
            out = _run(m, x)
            assert [(o.shape, o.dtype) for o in out] == [(r.shape, r.dtype) for r in ref], (
                f"{_who(quantizer)}: on the {label}, {stage}() changed the outputs from "
                f"{[(tuple(r.shape), r.dtype) for r in ref]} to {[(tuple(o.shape), o.dtype) for o in out]}; "
                "a quantized model must keep the float model's output shapes and dtypes (dequantize at the end)")


def check_weights_on_grid(quantizer: Quantizer) -> None:
    """A converted model has quantized weights, each with at most 2**bits distinct values per channel."""
    who = _who(quantizer)
    for label, build in _conformance_models(quantizer):
        converted, _ = _converted(quantizer, build)
        found = list(find_quantized_weights(converted))
        assert found, (
            f"{who}: convert() on the {label} left no quantized weight (no module with weight_bits, "
            "or a torch.ao quantized weight); the model silently stays in full precision. "
            "Bake the weights (QuantLayerMixin.bake() sets weight_bits) or override conformance_model()")
        for name, w, bits, group in found:
            distinct = max_distinct(w, group)
            assert distinct <= 2 ** bits, (
                f"{who}: on the {label}, weight of {name!r} has {distinct} distinct values in one "
                f"{'group' if group else 'output channel'} but claims {bits} bits (at most {2 ** bits}); "
                "write the quantized weight at convert, not the float one")


def check_layers_quantized(quantizer: Quantizer) -> None:
    """Every compute layer that the layer plan does not keep float is quantized after convert."""
    for label, build in _conformance_models(quantizer):
        model, _ = _build(build, _SEED)
        plan = quantizer.plan(model)
        required = [n for n in plan.layers if plan.role(n) != "fp"]
        converted, _ = _converted(quantizer, build)
        # Converted models may rename or regroup modules (wrappers, graph modules), so count, not match names.
        found = list(find_quantized_weights(converted))
        assert len(found) >= len(required), (
            f"{_who(quantizer)}: on the {label}, convert() left {len(found)} quantized weight(s) for the "
            f"{len(required)} layer(s) {required} that must be quantized (capabilities.module_types lists "
            f"{sorted(quantizer.capabilities.module_types)}); quantize every layer of plan.method_layers(), or "
            "narrow module_types to what the method quantizes")


class _MatmulInputs(TorchFunctionMode):
    """Records ``(input, weight)`` of every F.linear/F.conv* call: the tensors that really reach a matmul."""

    FUNCS = (F.linear, F.conv1d, F.conv2d, F.conv3d)

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FUNCS and len(args) >= 2 and torch.is_tensor(args[0]) and torch.is_tensor(args[1]):
            self.calls.append((args[0].detach().clone(), args[1].detach().clone()))
        return func(*args, **(kwargs or {}))


def _policy_setting(cls: type[Quantizer]) -> tuple[int, int] | None:
    for w, a in ((4, 4), (2, 2), (1, 1), (8, 8)):
        try:
            cls.config_for_bits(w, a)
            return w, a
        except UnsupportedError:
            continue
    return None


def check_layer_policy(quantizer: Quantizer) -> None:
    """The first/last-layer policy governs whole layers, checked on the tensors that reach the first and the
    last matmul of the converted model: with ``int8`` each layer's matmul input takes at most 256 values and
    its weight at most 256 per channel, and the tensor arriving at the layer was not quantized at the body's
    width on its way; with ``fp`` the first layer sees the raw model input and the last layer's input is not
    quantized: more levels than the body's width and, for bodies of 2 bits or more, more than 256 (binary
    nets' float pre-activations take few values)."""
    cls, who = type(quantizer), _who(quantizer)
    setting = _policy_setting(cls)
    if setting is None:
        return
    w_bits, a_bits = setting
    base = check_config(cls, w_bits, a_bits).model_dump()
    for policy in ("int8", "fp"):
        q = cls(cls.make_config({**base, "first_layer": policy, "last_layer": policy}))
        converted, _ = _converted(q, _conv_model)
        plan = q.plan(_build(_conv_model, _SEED)[0])
        last = plan.layers[-1]
        torch.manual_seed(_SEED + 7)
        x = torch.randn(64, 1, 8, 8)
        rec, entering = _MatmulInputs(), []
        modules = dict(converted.named_modules())
        hook = None
        if last in modules:
            hook = modules[last].register_forward_pre_hook(lambda m, a, out=entering: out.append(a[0].detach()))
        with rec, torch.no_grad():
            converted(x)
        if hook is not None:
            hook.remove()
        assert len(rec.calls) >= 3, f"{who}: expected 3 matmuls in the conv model, saw {len(rec.calls)}"
        for where, (inp, weight) in (("first", rec.calls[0]), ("last", rec.calls[-1])):
            levels = int(torch.unique(inp).numel())
            ctx = (f"{who} at W{w_bits}A{a_bits} with first_layer=last_layer={policy!r}: the {where} layer's "
                   f"input has {levels} distinct values")
            if policy == "int8":
                # What upstream delivers must not be quantized at the body's width: the tensor entering the
                # last layer (before the layer's own 8-bit quantizer), or the raw input for the first.
                arriving = x if where == "first" else (entering[0] if entering else inp)
                arrived = int(torch.unique(arriving).numel())
                coarse = a_bits < 8 and arrived <= 2 ** a_bits
                if coarse and where == "last":
                    # few values can also come from a saturated upstream (a method's tiny initial scale): no
                    # breach when no quantizer of the body's width feeds the layer
                    coarse = any(n in modules and isinstance(getattr(modules[n], "bits", None), int)
                                 and modules[n].bits <= a_bits for n in plan.modules_feeding([last]))
                assert levels <= 256 and not coarse, (
                    f"{ctx} and receives {arrived}; an 8-bit layer takes at most 256, from a tensor not quantized "
                    f"at the body's A{a_bits} on its way. The policy must govern the whole layer: leave "
                    "plan.method_layers() to the method and skip output quantizers whose "
                    "plan.activation_role(name) is not 'method'")
                assert max_distinct(weight, None) <= 256, f"{who}: the {where} layer's weight is not 8-bit"
            elif where == "first":
                assert inp.shape == x.shape and torch.equal(inp, x), (
                    f"{ctx}; with first_layer='fp' the first layer must see the raw model input")
            else:
                floor = 2 ** a_bits if a_bits < 2 else max(2 ** a_bits, 256)
                assert levels > floor, (f"{ctx}; with last_layer='fp' it must be float (more than {floor} "
                                        "values): skip quantizers whose plan.activation_role(name) is 'fp'")


def check_forward_deterministic(quantizer: Quantizer) -> None:
    """Two eval-mode forward passes of a converted model give identical outputs."""
    for label, build in _conformance_models(quantizer):
        converted, x = _converted(quantizer, build)
        first, second = _run(converted, x), _run(converted, x)
        assert all(torch.equal(a, b) for a, b in zip(first, second)), (
            f"{_who(quantizer)}: on the {label}, the converted model gives different outputs for the same "
            "input; freeze observers and stochastic rounding at convert (eval must be deterministic)")


def check_gradients_flow(quantizer: Quantizer) -> None:
    """Gradients reach every float weight of a prepared model in training mode (QAT methods)."""
    who = _who(quantizer)
    for label, build in _conformance_models(quantizer):
        prepared, x = _prepared(quantizer, build)
        prepared.train()
        prepared.zero_grad()
        out = prepared(x)
        assert any(o.requires_grad for o in _outputs(out)), (
            f"{who}: on the {label}, the prepared model's output has no gradient; use a straight-through "
            "estimator (quantzoo.math.fake_quantize / ste) instead of a non-differentiable rounding")
        _loss(out).backward()
        weights = [(n, p) for n, p in prepared.named_parameters() if p.requires_grad and p.dim() >= 2]
        assert weights, f"{who}: on the {label}, the prepared model has no trainable weight; keep the float weights"
        for n, p in weights:
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), (
                f"{who}: on the {label}, no gradient reached the float weight {n!r}; the quantized weight "
                "must be computed from the parameter in forward with an STE, not stored detached")
            assert torch.isfinite(p.grad).all(), f"{who}: on the {label}, the gradient of {n!r} is not finite"


def check_uncalibrated_convert_raises(quantizer: Quantizer) -> None:
    """Converting a prepared model that never saw calibration data raises NotCalibratedError."""
    for label, build in _conformance_models(quantizer):
        model, _ = _build(build, _SEED)
        prepared = quantizer.prepare(model)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", QuantzooWarning)
                quantizer.convert(prepared)
        except NotCalibratedError:
            continue
        raise AssertionError(f"{_who(quantizer)}: on the {label}, convert() of an uncalibrated model did not "
                             "raise NotCalibratedError; keep the base class's convert() (or raise it yourself)")


def check_convert_warns_untrained(quantizer: Quantizer) -> None:
    """Converting a model that needs training but was not trained warns QuantzooWarning."""
    for label, build in _conformance_models(quantizer):
        prepared, _ = _prepared(quantizer, build, train=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quantizer.convert(prepared)
        assert any(issubclass(w.category, QuantzooWarning) for w in caught), (
            f"{_who(quantizer)}: on the {label}, convert() of an untrained model gave no QuantzooWarning; "
            "keep the base class's convert() so users learn that training was skipped")


def check_outputs_finite(quantizer: Quantizer) -> None:
    """Prepared and converted models give finite outputs on normal input."""
    for label, build in _conformance_models(quantizer):
        prepared, x = _prepared(quantizer, build)
        converted, _ = _converted(quantizer, build)
        for stage, m in (("prepared", prepared), ("converted", converted)):
            for o in _run(m, x):
                if o.is_floating_point():
                    assert torch.isfinite(o).all(), (
                        f"{_who(quantizer)}: on the {label}, the {stage} model outputs NaN/Inf on N(0, 1) "
                        "input; guard divisions by a zero range (e.g. with quantzoo.math.compute_qparams)")


def _assert_same(quantizer, label, stage, a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b):
        if not torch.equal(x, y):
            diff = (x.float() - y.float()).abs().max().item() if x.shape == y.shape else "shape"
            raise AssertionError(
                f"{_who(quantizer)}: on the {label}, a fresh {stage} model given the state_dict of another "
                f"gives different outputs (max diff {diff}); register every quantization parameter "
                "(scales, zero-points, clip values) as a buffer or parameter, and make _load_from_state_dict "
                "accept their saved shapes")


def check_state_dict_roundtrip_prepared(quantizer: Quantizer) -> None:
    """A prepared model's state_dict loaded into another prepared model reproduces its outputs."""
    for label, build in _conformance_models(quantizer):
        a, x = _prepared(quantizer, build, _SEED)
        b, _ = _prepared(quantizer, build, _SEED + 1)  # different float weights and calibration data
        state = copy.deepcopy(a.state_dict())
        out_a = _run(a, x)
        b.load_state_dict(state)
        _assert_same(quantizer, label, "prepared", out_a, _run(b, x))


def check_state_dict_roundtrip_converted(quantizer: Quantizer) -> None:
    """A converted model's state_dict loaded into another converted model reproduces its outputs."""
    for label, build in _conformance_models(quantizer):
        a, x = _converted(quantizer, build, _SEED)
        b, _ = _converted(quantizer, build, _SEED + 1)
        state = copy.deepcopy(a.state_dict())
        out_a = _run(a, x)
        b.load_state_dict(state)
        _assert_same(quantizer, label, "converted", out_a, _run(b, x))


#: Every check in the order they run, for documentation; :func:`yield_checks` picks the applicable ones.
ALL_CHECKS = (
    check_name, check_registered, check_capabilities, check_config_defaults, check_config_frozen,
    check_config_forbids_extra, check_config_json_roundtrip, check_config_schema, check_config_for_bits,
    check_prepare_convert_shapes, check_weights_on_grid, check_layers_quantized, check_layer_policy,
    check_forward_deterministic, check_gradients_flow,
    check_uncalibrated_convert_raises, check_convert_warns_untrained, check_outputs_finite,
    check_state_dict_roundtrip_prepared, check_state_dict_roundtrip_converted,
)


# ---------------------------------------------------------------------------------------------------------
# running the checks
# ---------------------------------------------------------------------------------------------------------
def yield_checks(quantizer: Quantizer | type[Quantizer], *, allow_unregistered: bool = False) -> Iterator[Callable]:
    """The checks that apply to ``quantizer`` given its capabilities.

    ``allow_unregistered=True`` (for test doubles that are not installed as plugins) skips the registry
    lookup and round-trips the config through the class instead of the registry name.
    """
    caps = quantizer.capabilities
    yield check_name
    if not allow_unregistered:
        yield check_registered
    yield from (check_capabilities, check_config_defaults, check_config_frozen, check_config_forbids_extra)
    yield check_config_json_roundtrip_unregistered if allow_unregistered else check_config_json_roundtrip
    yield from (check_config_schema, check_config_for_bits, check_prepare_convert_shapes, check_weights_on_grid,
                check_layers_quantized)
    if "first_layer" in quantizer.Config.model_fields and "last_layer" in quantizer.Config.model_fields:
        yield check_layer_policy
    yield check_forward_deterministic
    if caps.qat:
        yield check_gradients_flow
    if caps.needs_calibration:
        yield check_uncalibrated_convert_raises
    if caps.needs_training:
        yield check_convert_warns_untrained
    yield from (check_outputs_finite, check_state_dict_roundtrip_prepared, check_state_dict_roundtrip_converted)


def _with_fresh_instance(check: Callable) -> Callable:
    """Wrap ``check`` so it gets a new quantizer (from a class or instance), seeded and single-threaded."""

    @functools.wraps(check)
    def run(quantizer: Quantizer | type[Quantizer]) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        torch.manual_seed(_SEED)
        try:
            check(_fresh(quantizer))
        finally:
            torch.set_num_threads(threads)

    return run


def check_quantizer(quantizer: Quantizer | type[Quantizer], *, allow_unregistered: bool = False) -> None:
    """Run every applicable check on ``quantizer`` (a class or an instance); the first failure raises."""
    for check in yield_checks(quantizer, allow_unregistered=allow_unregistered):
        _with_fresh_instance(check)(quantizer)


def _quantizer_id(quantizer: Quantizer | type[Quantizer]) -> str:
    name = getattr(quantizer, "name", "") or getattr(quantizer, "__name__", type(quantizer).__name__)
    return str(name)


def parametrize_with_checks(quantizers: Iterable[Quantizer | type[Quantizer]], *, allow_unregistered: bool = False):
    """A ``pytest.mark.parametrize`` decorator over ``(quantizer, check)`` pairs, ids like ``dorefa-check_name``.

    ``quantizers`` are classes (checked with their default config) or instances (checked with theirs).
    Use it on a test ``def test_conformance(quantizer, check): check(quantizer)``.
    """
    import pytest

    quantizers = list(quantizers)
    for q in quantizers:
        if not (isinstance(q, Quantizer) or (isinstance(q, type) and issubclass(q, Quantizer))):
            raise TypeError(f"parametrize_with_checks takes Quantizer classes or instances, got {q!r}")
    ids = [_quantizer_id(q) for q in quantizers]
    # The same method twice (e.g. two configs): number them, dorefa[0], dorefa[1].
    ids = [f"{i}[{ids[:k].count(i)}]" if ids.count(i) > 1 else i for k, i in enumerate(ids)]
    params = []
    for q, qid in zip(quantizers, ids):
        for check in yield_checks(q, allow_unregistered=allow_unregistered):
            params.append(pytest.param(q, _with_fresh_instance(check), id=f"{qid}-{check.__name__}"))
    return pytest.mark.parametrize("quantizer, check", params)
