"""SmoothQuant as a quantzoo method: W8A8 after migrating activation outliers into the weights.

Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models",
arXiv:2211.10438. Calibration, as the official ``calibration.py::get_act_scales`` and
``smooth.py::smooth_ln_fcs``:

1. ``max|X_j|`` per input channel of every quantized layer over the calibration data, on the float model;
2. ``s_j = max|X_j|^α / max|W_j|^(1−α)`` (eq. 4, :func:`quantzoo.math.smoothing.smooth_scales`), α = 0.5;
3. ``W ← W·diag(s)`` and inputs ``X·diag(s)⁻¹`` (eq. 3; :class:`~quantzoo.nn.solved.ScaledInput`);
4. static activation ranges observed on the smoothed model (per-tensor, the paper's O3 setting), weights
   per output channel; both symmetric absmax INT8, ``Δ = max|·|/(2^7 − 1)`` (eq. 1).

Differences from the official code: every quantized layer gets its own ``s`` from its own weights and is
smoothed (the official code smooths only LayerNorm → q/k/v and LayerNorm → fc1, one ``s`` shared by the layers
reading one LayerNorm, because it folds ``1/s`` into that LayerNorm); ``1/s`` is an explicit multiply on the
layer input, which computes the same function as folding.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from quantzoo import Capabilities, LayerPlan, LayerPolicyConfig
from quantzoo.math.smoothing import smooth_scales
from quantzoo.nn import FakeQuant, to_quant_layer
from quantzoo.nn.capture import batch_inputs, capture
from quantzoo.nn.columns import channel_shape, channel_values
from quantzoo.nn.solved import ScaledInput
from quantzoo.observers import MinMaxObserver
from quantzoo.policy import LayerPolicy
from quantzoo.quantizers.solver import SolverQuantizer, prepare_layers, solver_layers
from quantzoo.quantizers.uniform import observer_class
from quantzoo.spec import QuantSpec

from .awq import input_channels

ABSMAX_INT8 = dict(bits=8, signed=True, symmetric=True, narrow=True)


class SmoothQuantConfig(LayerPolicyConfig):
    """Migration strength and the W8A8 formats (the paper's absmax INT8, static per-tensor activations)."""

    alpha: float = Field(0.5, ge=0, le=1, description="Migration strength α of eq. 4 (--alpha).")
    weight: QuantSpec = QuantSpec(granularity="per_channel", axis=0, **ABSMAX_INT8)
    activation: QuantSpec = QuantSpec(**ABSMAX_INT8)
    activation_observer: str = Field("minmax", description="Observer of the static activation range (a "
                                                           "registered name; minmax = the calibration max).")
    #: SmoothQuant quantizes the Linear layers of the decoder blocks; embeddings and the head stay float.
    first_layer: LayerPolicy = "fp"
    last_layer: LayerPolicy = "fp"


class SmoothQuantQuantizer(SolverQuantizer):
    """SmoothQuant: per-channel migration s = max|X|^α / max|W|^(1-α), then W8A8."""

    name = "smoothquant"
    family = "activation-aware PTQ"
    paper = "Xiao et al. 2023, SmoothQuant, arXiv:2211.10438"
    description = ("SmoothQuant W8A8 PTQ: activation outliers migrated into the weights with "
                   "s_j = max|X_j|^a / max|W_j|^(1-a) (a = 0.5), absmax INT8 weights and static activations.")
    Config = SmoothQuantConfig
    capabilities = Capabilities(ptq=True, weight_bits=(8,), activation_bits=(8,), needs_calibration=True)

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config()

    def check_names(self) -> None:
        observer_class(self.config.activation_observer, self.registry)

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config

        def layer(mod):
            obs = observer_class(cfg.activation_observer, self.registry)(cfg.activation)
            return to_quant_layer(mod, weight_quantizer=self._weight_quantizer(),
                                  input_quantizer=ScaledInput(input_channels(mod), channel_shape(mod),
                                                              FakeQuant(cfg.activation, obs)))

        prepare_layers(model, plan, self.name, layer)
        return model

    def _weight_quantizer(self) -> FakeQuant:
        return FakeQuant(self.config.weight, MinMaxObserver(self.config.weight))

    @torch.no_grad()
    def _solve(self, model: nn.Module, batches: list) -> None:
        names = solver_layers(model)
        layers = [model.get_submodule(n) for n in names]
        for layer in layers:  # statistics of the float model: weights unquantized for this pass
            layer.weight_quantizer.quantizing = False
        inputs = capture(model, names, batches)
        for name, layer in zip(names, layers):
            act = channel_values(layer, inputs.pop(name)).abs().amax(dim=1)
            w_max = layer.weight.detach().abs().transpose(0, 1).flatten(1).amax(dim=1)
            s = smooth_scales(act, w_max, self.config.alpha)
            layer.weight.mul_(s.reshape((1,) + channel_shape(layer)))
            layer.input_quantizer.set_scale(s)
            layer.weight_quantizer = self._weight_quantizer()  # a fresh range for the smoothed weight
        for batch in batches:  # the static activation ranges, observed on the smoothed model
            model(batch_inputs(batch))
