"""`dfq` (cross-layer equalization, high-bias absorption, analytic bias correction) and `bias-correction`
(min-max quantization plus empirical bias correction), one implementation with two sets of defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from torch import nn

from quantzoo import Capabilities, QuantSpec
from quantzoo.nn import FakeQuant, fold_batch_norms
from quantzoo.nn.bias_correction import empirical_bias_shift, output_shift
from quantzoo.nn.capture import capture
from quantzoo.nn.layers import QuantLayerMixin
from quantzoo.nn.reference import quantizers_off
from quantzoo.policy import LayerPlan
from quantzoo.quantizers.uniform import UniformConfig, UniformQuantizer

from .equalize import ChannelStats, absorb_high_bias, cross_layer_equalize, expected_input
from .links import COMPUTE, find_links

_INPUT_MEANS = "_quantzoo_dfq_input_means"  # prepared-model attribute: analytic E[x] per layer


class DataFreeConfig(UniformConfig):
    """``uniform``'s grid and observers, the three DFQ steps, and how bias correction gets ``E[x]``."""

    weight: QuantSpec = Field(QuantSpec(bits=8, granularity="per_tensor"),
                              description="Weight grid; DFQ targets per-tensor weights, where CLE matters.")
    equalize: bool = Field(True, description="Cross-layer equalization of Conv/Linear pairs joined by ReLU.")
    equalize_sweeps: int = Field(100, ge=1, description="At most this many sweeps over the pairs (the paper "
                                 "iterates to convergence, scales within 1e-6 of 1).")
    absorb_bias: bool = Field(True, description="High-bias absorption c = max(0, β − 3|γ|) into the next layer.")
    bias_correction: Literal["none", "empirical", "analytic"] = Field(
        "analytic", description="'analytic': E[x] from the input BatchNorm where there is one, empirical for the "
        "other layers (AIMET's analytical + empirical); 'empirical': every layer from calibration data.")

    @model_validator(mode="after")
    def _ptq_only(self):
        if self.learnable_scale:
            raise ValueError("learnable_scale is uniform's QAT option; data-free quantization is post-training")
        if self.weight.dtype != "int":
            raise ValueError(f"bias correction needs an integer grid, not dtype {self.weight.dtype!r}")
        return self


class BiasCorrectionConfig(DataFreeConfig):
    weight: QuantSpec = Field(QuantSpec(bits=8, granularity="per_channel"),
                              description="Weight grid (per channel, as uniform's harness rows).")
    equalize: bool = False
    absorb_bias: bool = False
    bias_correction: Literal["none", "empirical", "analytic"] = "empirical"


class DFQQuantizer(UniformQuantizer):
    """Data-free quantization (Nagel et al. 2019): BN folded, cross-layer equalization (§4.1), high-bias
    absorption (§4.3), then min-max quantization and bias correction (§4.2) with ``E[x]`` from the BatchNorm
    statistics. Activation ranges come from calibration batches, as for ``uniform``."""

    name = "dfq"
    family = "data-free PTQ"
    paper = "Nagel et al. 2019, arXiv:1906.04721 (ICCV)"
    description = "DFQ: cross-layer equalization, high-bias absorption, analytic bias correction."
    Config = DataFreeConfig
    capabilities = Capabilities(ptq=True, qat=False, weight_bits=tuple(range(2, 17)),
                                activation_bits=(*range(2, 17), None), needs_calibration=True)
    granularity = "per_tensor"

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        cfg = super()._config_for_bits(w_bits, a_bits)
        return cfg.model_copy(update={"weight": cfg.weight.model_copy(update={"granularity": cls.granularity})})

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        """BN folding, CLE and high-bias absorption rewrite the float model exactly (up to the ReLU-inactive
        mass absorption ignores) across every link, as the paper does before any quantization, so the layers
        the policy keeps at 8 bits or float are rewritten too; quantization and bias correction stay on the
        plan's method layers."""
        cfg = self.config
        links = find_links(model)  # on the model with its BatchNorms, whose statistics it reads
        stats = {}
        for link in links:
            if link.bn is not None:
                bn = model.get_submodule(link.bn)
                stats[link.producer] = ChannelStats(bn.bias.detach().clone(), bn.weight.detach().abs().clone())
        model = fold_batch_norms(model, inplace=True)
        if cfg.equalize:
            cross_layer_equalize(model, links, stats, sweeps=cfg.equalize_sweeps)
        if cfg.absorb_bias:
            for link in links:
                if link.scalable and link.producer in stats:
                    absorb_high_bias(model.get_submodule(link.producer), model.get_submodule(link.consumer),
                                     stats[link.producer], link.activation)
        means = {}
        if cfg.bias_correction == "analytic":
            means = {link.consumer: expected_input(link, stats[link.producer], model.get_submodule(link.consumer))
                     for link in links if link.producer in stats and link.mean_preserving}
        if cfg.bias_correction != "none":
            for name in plan.method_layers():  # a bias to correct (AIMET adds zero biases alike)
                mod = model.get_submodule(name)
                if isinstance(mod, COMPUTE) and mod.bias is None:
                    mod.bias = nn.Parameter(mod.weight.new_zeros(mod.weight.shape[0]))
        model = super()._prepare(model, plan)
        setattr(model, _INPUT_MEANS, means)
        return model

    def _calibrate(self, model: nn.Module, batches: list) -> None:
        """Activation ranges from every batch (as ``uniform``), then bias correction of the method's layers in
        order: analytic where the input BatchNorm gave ``E[x]``, empirical for the rest (AIMET
        ``correct_bias``). The policy's 8-bit layers keep their biases (the core owns them)."""
        super()._calibrate(model, batches)
        for layer in model.modules():
            if isinstance(layer, QuantLayerMixin):
                for q in (layer.weight_quantizer, layer.input_quantizer):
                    if isinstance(q, FakeQuant):
                        q.freeze()
        if self.config.bias_correction == "none":
            return
        layers = {n: model.get_submodule(n) for n in model._quantzoo_plan.method_layers()}
        means = getattr(model, _INPUT_MEANS, {})
        empirical = [n for n in layers if n not in means]
        with quantizers_off(model):  # the float reference, before any bias moves
            reference = capture(model, empirical, batches, outputs=True) if empirical else {}
        for name, layer in layers.items():
            if name in means:
                error = (layer.quantized_weight() - layer.weight).detach()
                shift = output_shift(error, means[name], groups=getattr(layer, "groups", 1))
            else:
                dim = -1 if isinstance(layer, nn.Linear) else 1  # a Linear's features are its last axis
                shift = empirical_bias_shift(capture(model, [name], batches, outputs=True)[name], reference[name], dim)
            layer.bias.data.sub_(shift)


class BiasCorrectionQuantizer(DFQQuantizer):
    """Min-max quantization (the grid of ``uniform``) plus empirical bias correction (Nagel et al. 2019 §4.2;
    AIMET ``correct_bias`` default): each layer's bias loses ``E[ỹ] − E[y]``, the mean difference between its
    output in the quantized model (earlier layers already corrected) and in the float model."""

    name = "bias-correction"
    aliases = ("bc",)
    paper = "Nagel et al. 2019, arXiv:1906.04721 §4.2; AIMET correct_bias"
    description = "Min-max PTQ plus empirical bias correction, layer by layer."
    Config = BiasCorrectionConfig
    granularity = "per_channel"
