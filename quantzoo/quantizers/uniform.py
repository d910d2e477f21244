"""`uniform`: observer-based PTQ and STE QAT for any integer `QuantSpec` (MQBench's "academic" setting).

The baseline row of every leaderboard, and the worked example that plugins copy.
"""

from __future__ import annotations

from pydantic import field_validator
from torch import nn

from ..errors import UnsupportedError
from ..nn import FakeQuant, replace_layers, to_quant_layer
from ..nn.layers import QuantLayerMixin
from ..quantizer import Capabilities, LayerPolicyConfig, Quantizer
from ..spec import QuantSpec


class UniformConfig(LayerPolicyConfig):
    """Weight and activation specs, the observers that set their ranges, and the layer policy."""

    weight: QuantSpec = QuantSpec(bits=8, symmetric=True, granularity="per_channel", axis=0)
    activation: QuantSpec | None = QuantSpec(bits=8, signed=False, symmetric=False)
    weight_observer: str = "minmax"
    activation_observer: str = "moving_average_minmax"
    learnable_scale: bool = False  # LSQ-style learned activation/weight step sizes during QAT

    @field_validator("weight_observer", "activation_observer")
    @classmethod
    def _observer_registered(cls, v: str) -> str:
        # A misspelt observer must fail when the config is made, not at prepare() after the FP baseline.
        from ..errors import UnknownNameError
        from ..registry import get_registry

        try:
            get_registry().get("observer", v)
        except UnknownNameError as e:  # as a ValueError, so that the message names the field
            raise ValueError(str(e)) from None
        return v


def make_observer(name: str, spec: QuantSpec):
    """An observer instance by registry name (so third-party observers work in every method)."""
    from ..registry import get_registry

    return get_registry().get("observer", name)(spec)


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
    capabilities = Capabilities(
        ptq=True, qat=True, weight_bits=tuple(range(2, 17)), activation_bits=(*range(2, 17), 32),
        needs_calibration=True,
    )

    @classmethod
    def config_for_bits(cls, w_bits, a_bits):
        if not 2 <= w_bits <= 16 or (a_bits is not None and not 2 <= a_bits <= 16):
            raise UnsupportedError(f"{cls.name} supports integer widths 2..16, not W{w_bits}A{a_bits}")
        act = None if a_bits is None else QuantSpec(bits=a_bits, signed=False, symmetric=False)
        return cls.Config(weight=QuantSpec(bits=w_bits, granularity="per_channel"), activation=act)

    def _fake_quant(self, spec: QuantSpec, observer: str, per_sample: bool = False) -> FakeQuant:
        return FakeQuant(spec, make_observer(observer, spec), learnable=self.config.learnable_scale,
                         per_sample=per_sample)

    def _weight_quantizer(self, layer: nn.Module, spec: QuantSpec) -> nn.Module:
        """The quantizer of ``layer``'s weight (methods on uniform's grid with another rounding override it)."""
        return self._fake_quant(spec, self.config.weight_observer)

    def _prepare(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        int8_w = cfg.weight.model_copy(update={"bits": 8})
        int8_a = cfg.activation.model_copy(update={"bits": 8}) if cfg.activation else None

        def make(name, mod, role):
            w_spec, a_spec = (int8_w, int8_a) if role in ("first", "last") else (cfg.weight, cfg.activation)
            # Layer inputs carry a batch dimension: LSQ's N counts one sample's features.
            act = self._fake_quant(a_spec, cfg.activation_observer, per_sample=True) if a_spec else None
            return to_quant_layer(mod, weight_quantizer=self._weight_quantizer(mod, w_spec), input_quantizer=act)

        replace_layers(model, make, first_layer=cfg.first_layer, last_layer=cfg.last_layer)
        return model

    def _convert(self, model: nn.Module) -> nn.Module:
        for mod in model.modules():
            if isinstance(mod, QuantLayerMixin):
                mod.bake()
        return model
