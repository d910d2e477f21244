"""Distiller's quantization-aware training quantizers: range-linear QAT, DoReFa, PACT and WRPN.

All use Distiller's ``train_with_fp_copy`` semantics through quantzoo's prepare/convert flow: the float
weight stays the trained parameter and the quantized weight is computed from it in every forward pass of the
schedule's epochs (Distiller keeps it in a buffer refreshed after each minibatch; the values are the same; see
:class:`.modules.ScheduledWeight` for the other epochs). As in Distiller, weights are quantized in Linear and
Conv2d layers only (``Quantizer._add_qbits_entry``: Conv1d weights stay FP) and activations where its
``replacement_factory`` puts them: at every ``nn.ReLU`` module, in every epoch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
import torch
from torch import nn
from torch.nn.utils import parametrize

from quantzoo import Capabilities, LayerPlan, LayerPolicyConfig, Quantizer, UnsupportedError
from quantzoo.errors import NotCalibratedError
from quantzoo.nn import QuantLayerMixin, set_submodule, to_quant_layer
from quantzoo.policy import compute_layer_types, plan_layers

from .modules import (ClippedActivation, DorefaWeight, EMAActivation, FakeQuantizationWrapper, PACTActivation,
                      RangeLinearQATWeight, ScheduledWeight, WRPNWeight)
from .ptq import DistillerQuantizerMixin, split_mode
from .ranges import Mode
from .schedule import BITS_OVERRIDES_ERROR, check_overrides, match_override

QAT_OVERRIDE_KEYS = {"bits_activations", "bits_weights", "bits_bias"}
#: The layer types whose weights Distiller's QAT quantizers quantize (``Quantizer._add_qbits_entry``: Linear and
#: Conv2d; Conv1d weights stay float): their capabilities' module_types, which the layer plan covers.
_DISTILLER_LAYERS = ("Linear", "Conv2d")


class DistillerQATConfig(LayerPolicyConfig):
    """Arguments shared by Distiller's QAT quantizers, plus the policy's epochs from the schedule.

    ``first_layer``/``last_layer``/``include``/``exclude``: quantzoo's layer policy (default: every layer
    quantized), applied by the core to whole layers: a ReLU feeding a layer kept at 8 bits or float is not
    quantized by the method (docs/layer-policy.md). Distiller's constructor defaults are 32 bits ("not
    quantized"); quantzoo's are 8/8. ``null`` keeps weights or activations FP.
    """

    bits_activations: int | None = 8
    bits_weights: int | None = 8
    bits_bias: int | None = None
    overrides: dict[str, dict[str, Any]] = {}
    starting_epoch: int = Field(0, ge=0)
    ending_epoch: int | None = Field(None, ge=1)
    frequency: int = Field(1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data):
        if isinstance(data, dict) and "bits_overrides" in data:
            raise ValueError(BITS_OVERRIDES_ERROR)
        return data

    @field_validator("bits_activations")
    @classmethod
    def _abits(cls, v):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 16):
            raise ValueError(f"bits_activations={v!r}: use 2..16, or null for FP activations")
        return v

    @field_validator("bits_bias")
    @classmethod
    def _bbits(cls, v):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 32):
            raise ValueError(f"bits_bias={v!r}: use 2..32 (the weights' quantizer at that width), or null for FP")
        return v

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, v):
        return check_overrides(v, QAT_OVERRIDE_KEYS)


class RangeLinearQATConfig(DistillerQATConfig):
    bits_bias: int | None = 32  # Distiller's QuantAwareTrainRangeLinearQuantizer default
    #: validated as Distiller's ``verify_quant_mode`` does; like there it has no effect: every mode runs
    #: ASYMMETRIC_UNSIGNED (see :class:`.modules.RangeLinearQATWeight`)
    mode: Mode | dict[str, Mode] = "SYMMETRIC"
    ema_decay: float = 0.999
    per_channel_wts: bool = False
    quantize_inputs: bool = True
    num_bits_inputs: int | None = None


class PACTConfig(DistillerQATConfig):
    #: Distiller's initial α (8.0); ``"mse"`` (quantzoo option) starts each α at the MSE-optimal clip of the
    #: first batch it quantizes, for short fine-tuning from an FP checkpoint where α = 8 has no time to shrink.
    act_clip_init_val: float | Literal["mse"] = 8.0
    act_clip_decay: float | None = None

    @field_validator("act_clip_init_val")
    @classmethod
    def _clip(cls, v):
        if v != "mse" and not v > 0:
            raise ValueError(f"act_clip_init_val={v!r}: α must be > 0 (Distiller's default 8.0), or \"mse\"")
        return v


class WRPNConfig(DistillerQATConfig):
    #: "distiller" reproduces Distiller's 2^b+1 weight levels; "paper" is the corrected 2^b−1 (one sign bit).
    levels: Literal["distiller", "paper"] = "distiller"


class _DistillerQAT(DistillerQuantizerMixin, Quantizer):
    """Shared building: weight quantizers on Linear/Conv, activation quantizers replacing nn.ReLU."""

    family = "uniform affine"
    default_backend = "fakequant"
    min_weight_bits = 2

    def _bits(self, name: str, key: str) -> int | None:
        ov = match_override(name, self.config.overrides) or {}
        return ov.get(key, getattr(self.config, key))

    def _check_weight_bits(self, b: int | None, name: str) -> None:
        if b is not None and (isinstance(b, bool) or not self.min_weight_bits <= b <= 16):
            raise UnsupportedError(f"{self.name}: bits_weights={b} for {name!r}; supported "
                                   f"{self.min_weight_bits}..16 or null")

    def _weight_quantizer(self, bits: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _activation(self, bits: int, relu: nn.Module) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        n_w = n_a = 0
        relus = [n for n, m in model.named_modules() if type(m) is nn.ReLU and n]
        for name in plan.method_layers():  # Linear and Conv2d (capabilities.module_types), as Distiller
            b = self._bits(name, "bits_weights")
            self._check_weight_bits(b, name)
            b_bias = self._bits(name, "bits_bias") if model.get_submodule(name).bias is not None else None
            if b is None and b_bias is None:
                continue
            layer = to_quant_layer(model.get_submodule(name),
                                   weight_quantizer=self._weight_quantizer(b) if b is not None else None)
            if b_bias is not None:
                # Distiller quantizes the bias with the weights' function (bits_bias; range-linear QAT's default
                # is 32, a 2^32-step grid), under the same schedule
                parametrize.register_parametrization(layer, "bias", self._weight_quantizer(b_bias), unsafe=True)
            set_submodule(model, name, layer)
            n_w += b is not None
        for name in relus:
            b = self._bits(name, "bits_activations")
            # a ReLU feeding a layer the policy keeps at 8 bits or float stays a plain ReLU (that layer
            # quantizes its own input, or none)
            if b is not None and plan.activation_role(name) == "method":
                set_submodule(model, name, self._activation(b, model.get_submodule(name)))
                n_a += 1
        if self.config.bits_activations is not None and not relus:
            raise UnsupportedError(f"{self.name}: Distiller quantizes activations at nn.ReLU modules and this "
                                   "model has none; set bits_activations: null for weight-only QAT")
        if not (n_w or n_a):
            raise UnsupportedError(f"{self.name}: nothing to quantize (every layer kept FP by the config, or only "
                                   "Conv1d layers, whose weights Distiller does not quantize)")
        for tensor, wq in self._scheduled(model):
            wq.refresh(tensor)  # Distiller quantizes once when the policy is created
        return model

    def _scheduled(self, model: nn.Module) -> list[tuple[torch.Tensor, ScheduledWeight]]:
        """``(float tensor, its quantizer)`` for every quantized weight and bias."""
        out = []
        for m in model.modules():
            if isinstance(m, QuantLayerMixin) and isinstance(m.weight_quantizer, ScheduledWeight):
                out.append((m.weight, m.weight_quantizer))
            if parametrize.is_parametrized(m, "bias"):
                out.append((m.parametrizations.bias.original, m.parametrizations.bias[0]))
        return out

    def policy_active(self, epoch: int) -> bool:
        """Whether the schedule's policy runs in ``epoch``: ``range(starting_epoch, ending_epoch, frequency)``."""
        cfg = self.config
        return epoch >= cfg.starting_epoch and (cfg.ending_epoch is None or epoch < cfg.ending_epoch) and (
            (epoch - cfg.starting_epoch) % cfg.frequency == 0)

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        """Re-quantize weights in the policy's epochs only; other epochs keep the last quantized weights."""
        on = self.policy_active(epoch)
        for tensor, wq in self._scheduled(model):
            if not on and wq.synced:
                wq.refresh(tensor)  # the weights after the last step of the policy's last epoch
            wq.active = on

    def after_optimizer_step(self, model: nn.Module) -> None:
        """Distiller re-quantizes the weights after each step of the policy's epochs only."""
        for _, wq in self._scheduled(model):
            wq.synced = wq.active

    def _convert(self, model: nn.Module) -> nn.Module:
        for mod in model.modules():
            if isinstance(mod, QuantLayerMixin) and parametrize.is_parametrized(mod, "bias"):
                parametrize.remove_parametrizations(mod, "bias", leave_parametrized=True)
        # bake: outside the policy's epochs the weights are the last quantized ones, as Distiller keeps them
        return super()._convert(model)


class DistillerQAT(_DistillerQAT):
    """Range-linear QAT (Distiller ``QuantAwareTrainRangeLinearQuantizer``; Jacob et al. 2018,
    arXiv:1712.05877 §3): weights from their current range every step, activations after every ReLU (and the
    model input with ``quantize_inputs``) from a float32 EMA (decay 0.999) with bias correction. The STE is the
    identity and, as in Distiller, nothing clamps the integer code. Every ``mode`` runs ASYMMETRIC_UNSIGNED, as
    in Distiller (see :class:`.modules.RangeLinearQATWeight`).
    """

    name = "distiller-qat"
    paper = "Distiller QuantAwareTrainRangeLinearQuantizer; Jacob et al. 2018, arXiv:1712.05877"
    description = "Distiller range-linear QAT: float32 EMA 0.999 with bias correction, asymmetric, identity STE."
    Config = RangeLinearQATConfig
    capabilities = Capabilities(qat=True, weight_bits=tuple(range(2, 17)), activation_bits=(*range(2, 17), None),
                                needs_training=True, module_types=_DISTILLER_LAYERS)
    # per_channel_wts exists, but every scheme has symmetric weights and Distiller's mode never takes effect
    scheme_refusal = ("Distiller's QuantAwareTrainRangeLinearQuantizer runs every mode as ASYMMETRIC_UNSIGNED (it "
                      "compares a ModuleQuantMode tuple with LinearQuantMode members), so its weights are never "
                      "symmetric, and it has no power-of-two scales")

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(bits_weights=w_bits, bits_activations=a_bits)

    def _weight_quantizer(self, bits):
        return RangeLinearQATWeight(bits, split_mode(self.config.mode)[1], self.config.per_channel_wts)

    def _activation(self, bits, relu):
        return FakeQuantizationWrapper(relu, EMAActivation(bits, split_mode(self.config.mode)[0],
                                                           self.config.ema_decay))

    def _prepare(self, model, plan):
        every = plan_layers(model, self.config, compute_layer_types(("Linear", "Conv1d", "Conv2d")))
        model = super()._prepare(model, plan)
        cfg = self.config
        in_bits = cfg.num_bits_inputs or cfg.bits_activations
        # Distiller quantizes the model's input in a forward pre-hook; quantzoo puts that quantizer on the
        # first compute layer's input (the same tensor when nothing but reshapes precede it), so that it is
        # part of the layer and never becomes an extra child of an nn.Sequential. That layer may be one whose
        # weights Distiller leaves float (a Conv1d); a first layer the policy keeps at 8 bits or float
        # quantizes its own input, or none.
        first = every.layers[0] if every.layers else None
        if cfg.quantize_inputs and in_bits is not None and first is not None and plan.role(first) == "method":
            layer = model.get_submodule(first)
            if not isinstance(layer, QuantLayerMixin):
                layer = to_quant_layer(layer)
                set_submodule(model, first, layer)
            layer.input_quantizer = EMAActivation(in_bits, split_mode(cfg.mode)[0], cfg.ema_decay)
        return model


class _DorefaWeightQAT(_DistillerQAT):
    """Distiller's QAT quantizers with DoReFa weights (``DorefaWeight``, 1..16 bits): DoReFa and PACT."""

    capabilities = Capabilities(qat=True, weight_bits=tuple(range(1, 17)), activation_bits=(*range(2, 17), None),
                                needs_training=True, module_types=_DISTILLER_LAYERS)
    min_weight_bits = 1

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(bits_weights=w_bits, bits_activations=a_bits)

    def _weight_quantizer(self, bits):
        return DorefaWeight(bits)


class DistillerDorefa(_DorefaWeightQAT):
    """DoReFa-Net (Zhou et al. 2016, arXiv:1606.06160 eq. 9 weights, eq. 11 activations; Distiller
    ``DorefaQuantizer``): tanh-normalised weights (``E|w|·sign(w)`` at 1 bit); every ReLU becomes
    ``clamp(x, 0, 1)`` + ``b``-bit rounding. Gradients are not quantized (as in Distiller)."""

    name = "distiller-dorefa"
    paper = "Zhou et al. 2016, arXiv:1606.06160; Distiller DorefaQuantizer"
    description = "Distiller DoReFa: tanh weights (1-bit: E|w|·sign), clamp(0,1) activations."
    Config = DistillerQATConfig
    scheme_refusal = ("DoReFa's format is the paper's (tanh-normalised weights on a fixed [-1, 1] grid, activations "
                      "clamped to [0, 1]): DorefaQuantizer has no granularity, symmetry or scale option")

    def _activation(self, bits, relu):
        return ClippedActivation(bits, 1.0)


class DistillerPACT(_DorefaWeightQAT):
    """PACT (Choi et al. 2018, arXiv:1805.06085; Distiller ``PACTQuantizer``): every ReLU becomes a learned
    clip ``min(relu(x), α)`` (α initialised to ``act_clip_init_val`` = 8.0) with ``b``-bit rounding over
    ``[0, α]``; weights use DoReFa. The α parameters form their own optimizer group whose weight decay is
    ``act_clip_decay`` (the run's weight decay when null), via :meth:`param_groups`.

    Harness rows (:meth:`config_for_bits`) use ``act_clip_init_val: mse``: α starts at the MSE-optimal clip of
    the first batch. Distiller's 8.0 is a from-scratch default that the paper's α regulariser shrinks over
    hundreds of epochs; α only receives gradient where ``x ≥ α`` and, under Adam, moves about one learning rate
    per step, so in a few hundred fine-tuning steps from an FP checkpoint it stays at 8 and a 4-bit step is
    8/15 ≈ 0.53 for BN-normalised activations (MNIST-1D CNN, 3 seeds: W4A4 −1.03 at 8.0, −0.37 with "mse").
    The standard suite keeps a row at 8.0 beside it.
    """

    name = "distiller-pact"
    paper = "Choi et al. 2018, arXiv:1805.06085; Distiller PACTQuantizer"
    description = "Distiller PACT: learned activation clip α (init 8.0, own weight decay), DoReFa weights."
    Config = PACTConfig
    scheme_refusal = ("PACT's format is the paper's (DoReFa weights on a fixed [-1, 1] grid, unsigned activations "
                      "on [0, α]): PACTQuantizer has no granularity, symmetry or scale option")

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(bits_weights=w_bits, bits_activations=a_bits, act_clip_init_val="mse")

    def _activation(self, bits, relu):
        return PACTActivation(bits, self.config.act_clip_init_val)

    def _convert(self, model):
        pending = [n for n, m in model.named_modules() if isinstance(m, PACTActivation) and not bool(m.initialized)]
        if pending:
            raise NotCalibratedError(f"{self.name}: α of {', '.join(map(repr, pending[:3]))} was never initialised "
                                     "(act_clip_init_val: mse sets it from the first batch); run calibrate(model, "
                                     "batches) or train before convert")
        return super()._convert(model)

    def param_groups(self, model, lr, weight_decay):
        clip = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("clip_val")]
        ids = {id(p) for p in clip}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        decay = self.config.act_clip_decay
        groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
        if clip:
            groups.append({"params": clip, "lr": lr,
                           "weight_decay": weight_decay if decay is None else decay})
        return groups


class DistillerWRPN(_DistillerQAT):
    """WRPN (Mishra et al. 2017, arXiv:1709.01134; Distiller ``WRPNQuantizer``): weights
    ``round(n·clamp(w, −1, 1))/n``, activations as DoReFa with clip 1. Layer widening and the paper's 1-bit
    case are not implemented (as in Distiller).

    Quirk reproduced by default (``levels: distiller``): ``n = (2^b−1)/2`` and no clamp of the code, so
    2-bit weights take five levels ``{0, ±1, ±2}/1.5``; the converted layer reports ``b+1`` weight bits.
    ``levels: paper`` gives the corrected ``n = 2^(b−1)−1`` (``2^b−1`` levels in ``b`` bits); the harness's
    :meth:`config_for_bits` uses it so that a W-bit row really stores W-bit weights.
    """

    name = "distiller-wrpn"
    paper = "Mishra et al. 2017, arXiv:1709.01134; Distiller WRPNQuantizer"
    description = ("Distiller WRPN: clamp(w,-1,1) weights (Distiller's 2^b+1-level quirk by default), "
                   "clip-1 activations.")
    Config = WRPNConfig
    scheme_refusal = ("WRPN's format is the paper's (clamp(w, -1, 1) on a fixed grid, activations clipped to [0, 1]): "
                      "WRPNQuantizer has no granularity, symmetry or scale option")
    capabilities = Capabilities(qat=True, weight_bits=tuple(range(2, 17)), activation_bits=(*range(2, 17), None),
                                needs_training=True, module_types=_DISTILLER_LAYERS)

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(bits_weights=w_bits, bits_activations=a_bits, levels="paper")

    def _weight_quantizer(self, bits):
        return WRPNWeight(bits, self.config.levels)

    def _activation(self, bits, relu):
        return ClippedActivation(bits, 1.0)
