"""The layer policy: which compute layers a method quantizes its own way, which run at 8 bits, which stay float.

One owner for every per-layer choice. :func:`plan_layers` turns a config's ``first_layer``/``last_layer``/
``include``/``exclude`` into a :class:`LayerPlan` before a method sees the model; the method quantizes only
the layers the plan gives it (``plan.method_layers()``) and asks ``plan.activation_role(name)`` before it
puts a quantizer on the output of a module (a ReLU, a layer's output), so that the tensor reaching a layer
kept at 8 bits or in float is not quantized narrower on its way there. The core then builds the 8-bit layers
itself (:func:`place_policy_layers`): weight and input at 8 bits, the same for every method. A policy
therefore governs whole layers - weight, input and output - for every method, which the conformance kit
checks on the tensor that reaches each layer's matmul (``check_layer_policy``).

Roles: ``"method"`` (the method's own quantization), ``"int8"`` (8-bit weight and input, the protocol's
first/last layer setting of MQBench and BiBench), ``"fp"`` (left in float: a ``"fp"`` policy, an
``exclude`` pattern, or not matched by ``include``). See docs/layer-policy.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import Field
from torch import nn

from .config import QuantizerConfig
from .nn.fake_quant import FakeQuant
from .nn.graph import trace_modules
from .nn.layers import to_quant_layer
from .observers import MinMaxObserver, MovingAverageMinMaxObserver
from .schemes import get_scheme

#: What a policy does to the first or last compute layer: float, 8 bits, or the same as the body.
LayerPolicy = Literal["fp", "int8", "same"]
#: What the plan gives a layer.
Role = Literal["method", "int8", "fp"]
_WIDTH = {"method": 0, "int8": 1, "fp": 2}  # precision order: a tensor feeding several layers takes the widest


class LayerPolicyConfig(QuantizerConfig):
    """Config fields of the layer policy, for every method that takes it (the core applies them)."""

    first_layer: LayerPolicy = Field("same", description="first compute layer: fp, int8 or same as the body")
    last_layer: LayerPolicy = Field("same", description="last compute layer: fp, int8 or same as the body")
    include: tuple[str, ...] = Field((), description="fnmatch patterns of layer names to quantize (empty: all)")
    exclude: tuple[str, ...] = Field((), description="fnmatch patterns of layer names kept in float")
    int8_layers: tuple[str, ...] = Field((), description="fnmatch patterns of layer names kept at 8 bits (the "
                                                         "policy's int8 role; mixed precision)")
    int8_scheme: Literal["x86", "academic", "tensorrt", "pow2"] = Field(
        "x86", description="the quantization scheme of the policy's 8-bit layers (quantzoo.schemes)")


@dataclass(frozen=True)
class LayerPlan:
    """Roles of a model's compute layers (forward order) and, per module, the layers its output reaches."""

    layers: tuple[str, ...]
    roles: dict[str, Role]
    reasons: dict[str, str] = field(default_factory=dict)
    reaches: dict[str, frozenset[str]] = field(default_factory=dict)

    def method_layers(self) -> list[str]:
        """The layers the method quantizes its own way, in forward order."""
        return [n for n in self.layers if self.roles[n] == "method"]

    def role(self, layer: str) -> Role:
        return self.roles.get(layer, "method")

    def activation_role(self, module: str) -> Role:
        """The role that governs a quantizer on ``module``'s output: the widest role among the layers that
        output reaches (``"method"`` when it reaches none, e.g. the model output)."""
        roles = [self.roles[n] for n in self.reaches.get(module, ()) if n in self.roles]
        return max(roles, key=_WIDTH.__getitem__, default="method")

    def modules_feeding(self, layers: Iterable[str]) -> list[str]:
        """Names of the modules whose output reaches any of ``layers`` (e.g. the ReLUs before binary layers)."""
        wanted = set(layers)
        return [m for m, reached in self.reaches.items() if reached & wanted]

    def describe(self) -> dict[str, str]:
        """``{layer: reason}`` of every layer not quantized the method's way (for reports)."""
        return {n: self.reasons[n] for n in self.layers if n in self.reasons}


def matches(name: str, patterns: Iterable[str] | None) -> bool:
    """fnmatch ``name`` against any of ``patterns`` (``None`` or empty matches nothing)."""
    return any(fnmatchcase(name, p) for p in (patterns or ()))


def compute_layer_types(module_types: Iterable[str]) -> tuple[type[nn.Module], ...]:
    """The torch.nn classes named in ``Capabilities.module_types`` that are compute layers."""
    return tuple(t for t in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d) if t.__name__ in set(module_types))


def plan_layers(model: nn.Module, config: QuantizerConfig, types: tuple[type[nn.Module], ...]) -> LayerPlan:
    """The plan for ``model`` under ``config``'s policy fields (a config without them: every layer "method")."""
    graph = trace_modules(model)
    registered = [n for n, m in model.named_modules() if n and type(m) in types]
    if graph is not None and set(graph.order(types)) != set(registered):
        # some layers sit inside modules torch.fx keeps as leaves (nn.TransformerEncoderLayer) or are never
        # called: the trace cannot order them, registration order can (it is forward order for torch's blocks)
        graph = None
    layers = graph.order(types) if graph is not None else registered
    first_policy = getattr(config, "first_layer", "same")
    last_policy = getattr(config, "last_layer", "same")
    include, exclude = getattr(config, "include", ()), getattr(config, "exclude", ())
    int8_layers = getattr(config, "int8_layers", ())
    roles: dict[str, Role] = {}
    reasons: dict[str, str] = {}
    for i, name in enumerate(layers):
        position = "first" if i == 0 else "last" if i == len(layers) - 1 else None
        policy = {"first": first_policy, "last": last_policy}.get(position, "same")
        if matches(name, exclude):
            roles[name], reasons[name] = "fp", f"kept float: matches exclude {list(exclude)}"
        elif include and not matches(name, include):
            roles[name], reasons[name] = "fp", f"kept float: not matched by include {list(include)}"
        elif policy == "fp":
            roles[name], reasons[name] = "fp", f"kept float: {position} layer (policy {position}_layer=fp)"
        elif policy == "int8":
            roles[name], reasons[name] = "int8", f"8-bit weight and input: {position} layer (policy int8)"
        elif matches(name, int8_layers):
            roles[name], reasons[name] = "int8", f"8-bit weight and input: matches int8_layers {list(int8_layers)}"
        else:
            roles[name] = "method"
    return LayerPlan(tuple(layers), roles, reasons, _reaches(model, graph, layers))


def _reaches(model: nn.Module, graph, layers: list[str]) -> dict[str, frozenset[str]]:
    """Per named module, the compute layers its output reaches first (fx), else the next one registered."""
    targets = set(layers)
    names = [n for n, _ in model.named_modules() if n]
    if graph is not None:
        return {n: frozenset(graph.reached_layers(n, targets)) for n in names if n in graph.calls}
    out: dict[str, frozenset[str]] = {}
    for i, n in enumerate(names):
        nxt = next((m for m in names[i + 1:] if m in targets and not m.startswith(n + ".")), None)
        out[n] = frozenset([nxt]) if nxt else frozenset()
    return out


def int8_layer(module: nn.Module, quantize_input: bool = True, scheme: str = "x86") -> nn.Module:
    """The layer policy's 8-bit twin of a Linear/Conv: weight (min-max) and, where the method quantizes
    activations at all (``quantize_input``), input (moving-average min-max) fake-quantized at 8 bits in the
    given scheme (:mod:`quantzoo.schemes`; x86: per-channel symmetric weights, asymmetric input). The same for
    every method, so that "first/last int8" means one thing on the whole leaderboard."""
    s = get_scheme(scheme)
    w, a = s.weight_spec(8), s.activation_spec(8)
    act = FakeQuant(a, MovingAverageMinMaxObserver(a), per_sample=True) if quantize_input else None
    return to_quant_layer(module, weight_quantizer=FakeQuant(w, MinMaxObserver(w)), input_quantizer=act)
