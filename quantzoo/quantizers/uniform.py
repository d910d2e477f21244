"""`uniform`: observer-based PTQ and STE QAT for any integer `QuantSpec` (MQBench's "academic" setting).

The baseline row of every leaderboard, and the worked example that plugins copy.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError, UnknownNameError
from ..nn import FakeQuant, swap_layers, to_quant_layer
from ..observers import CORE_OBSERVERS, Observer
from ..policy import LayerPlan, LayerPolicyConfig
from ..quantizer import Capabilities, Quantizer
from ..spec import QuantSpec

_CORE_OBSERVERS = {o.name: o for o in CORE_OBSERVERS}


class UniformConfig(LayerPolicyConfig):
    """Weight and activation specs, the observers that set their ranges, and the layer policy.

    ``weight_observer``/``activation_observer`` are observer names (the core's, or a plugin's: they are
    resolved in the registry when the quantizer is built, before any work).
    """

    weight: QuantSpec = QuantSpec(bits=8, symmetric=True, granularity="per_channel", axis=0)
    activation: QuantSpec | None = QuantSpec(bits=8, signed=False, symmetric=False)
    weight_observer: str = "minmax"
    activation_observer: str = "moving_average_minmax"
    learnable_scale: bool = False  # LSQ-style learned activation/weight step sizes during QAT


def observer_class(name: str, registry=None) -> type[Observer]:
    """The observer class called ``name``: from ``registry`` when one is given, else from the core's own
    observers (so that validating and building core configs never loads plugins)."""
    if registry is not None:
        return registry.get("observer", name)
    if name in _CORE_OBSERVERS:
        return _CORE_OBSERVERS[name]
    raise UnknownNameError("observer", name, sorted(_CORE_OBSERVERS)).with_hint(
        "a plugin's observer needs the registry: build the quantizer with registry=quantzoo.get_registry() "
        "(quantzoo.quantize and the harness do)")


class UniformQuantizer(Quantizer):
    """Fake-quantize the weights and the input of every Linear/Conv with observer-derived qparams.

    PTQ: weights use their own range, activation observers see the calibration batches (Krishnamoorthi
    2018, arXiv:1806.08342 §3). QAT: the same fake-quantizers train with the clipped straight-through
    estimator (§3.2), or with LSQ step sizes (Esser et al. 2020) when ``learnable_scale``.
    """

    name = "uniform"
    family = "uniform affine"
    paper = "Krishnamoorthi 2018, arXiv:1806.08342; Jacob et al. 2018, arXiv:1712.05877"
    description = "Observer-based uniform affine PTQ and STE QAT for any integer spec."
    Config = UniformConfig
    decomposes_attention = True  # attention projections quantized like every other Linear
    capabilities = Capabilities(
        ptq=True, qat=True, weight_bits=tuple(range(2, 17)), activation_bits=(*range(2, 17), None),
        needs_calibration=True,
    )

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        act = None if a_bits is None else QuantSpec(bits=a_bits, signed=False, symmetric=False)
        return cls.Config(weight=QuantSpec(bits=w_bits, granularity="per_channel"), activation=act)

    @classmethod
    def apply_scheme(cls, config, scheme):
        act = config.activation
        return cls.make_config({**config.model_dump(), "weight": scheme.weight_spec(config.weight.bits),
                                "activation": scheme.activation_spec(act.bits) if act is not None else None})

    def check_names(self) -> None:
        for field in ("weight_observer", "activation_observer"):
            try:
                observer_class(getattr(self.config, field), self.registry)
            except UnknownNameError as e:
                raise ConfigError(f"{self.name}: invalid config: {field}: {e}") from None

    def _fake_quant(self, spec: QuantSpec, observer: str, per_sample: bool = False) -> FakeQuant:
        obs = observer_class(observer, self.registry)(spec)
        return FakeQuant(spec, obs, learnable=self.config.learnable_scale, per_sample=per_sample)

    def _weight_quantizer(self, layer: nn.Module, spec: QuantSpec) -> nn.Module:
        """The quantizer of ``layer``'s weight (methods on uniform's grid with another rounding override it)."""
        return self._fake_quant(spec, self.config.weight_observer)

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config

        def make(name, mod):
            # Layer inputs carry a batch dimension: LSQ's N counts one sample's features.
            act = (self._fake_quant(cfg.activation, cfg.activation_observer, per_sample=True)
                   if cfg.activation else None)
            return to_quant_layer(mod, weight_quantizer=self._weight_quantizer(mod, cfg.weight), input_quantizer=act)

        swap_layers(model, plan.method_layers(), make)
        return model
