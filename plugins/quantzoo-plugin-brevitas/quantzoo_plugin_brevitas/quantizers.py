"""The harness-facing methods: ``brevitas-ptq`` (automatic float → quant model, calibration, bias correction)
and ``brevitas-qat`` (QAT with learned activation scales)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from torch import nn

from quantzoo import Capabilities, LayerPlan, LayerPolicyConfig, Quantizer, UnsupportedError
from quantzoo.nn import bake_model

from .graph import bias_correction_mode, calibration_mode, preprocess_for_quantize, quantize_model, run_batches
from .inject import PRESETS, get_preset
from .layers import act_quantizers, quant_layer_from_float

_PAPER = ("Pappalardo et al., Brevitas (Xilinx/AMD, doi:10.5281/zenodo.3333552); scaled-integer QAT as in "
          "Jacob et al. 2018 (arXiv:1712.05877) with learned scales (Esser et al. 2020, arXiv:1902.08153)")
_WEIGHT_PRESETS = ("Int8WeightPerTensorFloat", "Int8WeightPerChannelFloat", "Int8WeightPerTensorFixedPoint",
                   "SignedBinaryWeightPerTensorConst", "SignedTernaryWeightPerTensorConst")
_ACT_PRESETS = ("Int8ActPerTensorFloat", "Int8ActPerTensorFixedPoint")
_UACT_PRESETS = ("Uint8ActPerTensorFloat", "Uint8ActPerTensorFixedPoint")


class BrevitasConfig(LayerPolicyConfig):
    """Presets by name, bit-width overrides (``.let(bit_width=...)``) and the workflow switches."""

    weight_quant: str = Field("Int8WeightPerChannelFloat", description=f"weight preset: {', '.join(_WEIGHT_PRESETS)}")
    weight_bit_width: int | None = Field(None, description="override the preset's bit width (2..8; None: keep)")
    act_quant: str | None = Field("Int8ActPerTensorFloat",
                                  description=f"signed activation preset ({', '.join(_ACT_PRESETS)}); None: float")
    unsigned_act_quant: str = Field("Uint8ActPerTensorFloat", description=f"ReLU outputs: {', '.join(_UACT_PRESETS)}")
    act_bit_width: int | None = Field(None, description="override the activation presets' bit width (2..8)")
    restrict_scaling_type: Literal["fp", "power_of_two"] | None = Field(
        None, description="override every preset's scale restriction (None: keep the presets')")
    high_percentile_q: float = Field(99.999, gt=0, le=100)
    merge_bn: bool = True

    @field_validator("weight_quant")
    @classmethod
    def _w(cls, v):
        if v not in _WEIGHT_PRESETS:
            raise ValueError(f"weight_quant {v!r} is not a weight preset; use one of {_WEIGHT_PRESETS}")
        return v

    @field_validator("act_quant")
    @classmethod
    def _a(cls, v):
        if v is not None and v not in _ACT_PRESETS:
            raise ValueError(f"act_quant {v!r} is not a signed activation preset; use one of {_ACT_PRESETS}")
        return v

    @field_validator("unsigned_act_quant")
    @classmethod
    def _u(cls, v):
        if v not in _UACT_PRESETS:
            raise ValueError(f"unsigned_act_quant {v!r} is not one of {_UACT_PRESETS}")
        return v

    @field_validator("weight_bit_width", "act_bit_width")
    @classmethod
    def _bits(cls, v):
        if v is not None and not 2 <= v <= 8:
            raise ValueError(f"bit width {v} is outside 2..8 (QCDQ export holds at most 8 bits; binary and "
                             "ternary weights have their own presets)")
        return v


class BrevitasPTQConfig(BrevitasConfig):
    bias_correction: bool = True


class BrevitasQATConfig(BrevitasConfig):
    merge_bn: bool = False  # Brevitas QAT trains with BatchNorm in place
    collect_stats_steps: int = Field(300, ge=1, description="training steps of percentile statistics before "
                                                            "the activation scales become learned parameters")


class _BrevitasBase(Quantizer):
    family = "uniform affine (scaled integer)"
    paper = _PAPER
    Config = BrevitasConfig
    #: the converted model is exported to ONNX QCDQ and scored in onnxruntime (fake-quant accuracy is reported too)
    default_backend = "onnxruntime"

    @classmethod
    def bits_of_config(cls, config):
        """Binary/ternary presets: 1/2 bits; integer presets: ``weight_bit_width`` (else the preset's 8);
        activations: ``act_bit_width`` (else 8), or float without ``act_quant``."""
        w = {"SignedBinaryWeightPerTensorConst": 1, "SignedTernaryWeightPerTensorConst": 2}.get(
            config.weight_quant, config.weight_bit_width or 8)
        return w, (None if config.act_quant is None else config.act_bit_width or 8)

    def _presets(self):
        cfg = self.config
        is_int = cfg.weight_quant.startswith("Int")
        w_over: dict = {}
        if cfg.weight_bit_width is not None:
            if not is_int:
                raise UnsupportedError(f"{self.name}: weight_bit_width does not apply to {cfg.weight_quant}")
            w_over["bit_width"] = cfg.weight_bit_width
        a_over: dict = {"high_percentile_q": cfg.high_percentile_q}
        if cfg.act_bit_width is not None:
            a_over["bit_width"] = cfg.act_bit_width
        if getattr(cfg, "collect_stats_steps", None) is not None:
            a_over["collect_stats_steps"] = cfg.collect_stats_steps
        if cfg.restrict_scaling_type is not None:
            a_over["restrict_scaling_type"] = cfg.restrict_scaling_type
            if is_int:
                w_over["restrict_scaling_type"] = cfg.restrict_scaling_type
        w = get_preset(cfg.weight_quant).let(**w_over)
        a = get_preset(cfg.act_quant).let(**a_over) if cfg.act_quant else None
        u = get_preset(cfg.unsigned_act_quant).let(**a_over) if cfg.act_quant else None
        int8_over = {"restrict_scaling_type": cfg.restrict_scaling_type} if cfg.restrict_scaling_type else {}
        int8_w = PRESETS["Int8WeightPerChannelFloat"].let(**int8_over)
        return w, a, u, int8_w

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        w, a, u, _ = self._presets()
        preprocess_for_quantize(model, merge_bn=self.config.merge_bn)
        self._input_kinds = quantize_model(model, plan, w, a, u)
        return model

    def policy_layer(self, name: str, module: nn.Module) -> nn.Module:
        """The policy's 8-bit layer as a Brevitas layer (the QCDQ exporter knows only its own layers):
        8-bit per-channel weights and, where activations are quantized, an 8-bit input quantizer (unsigned
        after a ReLU)."""
        _, a, u, int8_w = self._presets()
        inp = None
        if a is not None:
            kind = (self._input_kinds or {}).get(name, "signed")
            inp = (u if kind in ("quantized", "nonneg") else a).let(bit_width=8)
        layer = quant_layer_from_float(module, weight_quant=int8_w, input_quant=inp)
        return layer

    def _convert(self, model: nn.Module) -> nn.Module:
        for q in act_quantizers(model):
            q.freeze()
        return bake_model(model)


class BrevitasPTQ(_BrevitasBase):
    """Brevitas' PTQ flow: BN merge, layer swap, ``calibration_mode`` (percentile 99.999 statistics) and
    ``bias_correction_mode``, with max-abs narrow weights (per channel by default)."""

    name = "brevitas-ptq"
    aliases = ("brevitas",)
    description = "Brevitas-style PTQ: BN merge, layer swap, percentile calibration, bias correction."
    Config = BrevitasPTQConfig
    capabilities = Capabilities(ptq=True, qat=False, weight_bits=tuple(range(2, 9)),
                                activation_bits=(*range(2, 9), None), needs_calibration=True)

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(weight_bit_width=w_bits, act_bit_width=a_bits,
                          act_quant=None if a_bits is None else "Int8ActPerTensorFloat")

    def _calibrate(self, model: nn.Module, batches: list) -> None:
        """``calibration_mode`` over the batches, then (if configured) ``bias_correction_mode`` over them."""
        with calibration_mode(model):
            run_batches(model, batches)
        if self.config.bias_correction:
            with bias_correction_mode(model):
                run_batches(model, batches)


class BrevitasQAT(_BrevitasBase):
    """QAT on Brevitas-style layers: max-abs weights recomputed every step, activation scales from percentile
    statistics for ``collect_stats_steps`` steps and learned afterwards; binary/ternary constant-scale weights."""

    name = "brevitas-qat"
    description = "Brevitas-style QAT: STE through round, learned activation scales, binary/ternary presets."
    Config = BrevitasQATConfig
    capabilities = Capabilities(ptq=False, qat=True, weight_bits=tuple(range(1, 9)),
                                activation_bits=(*range(2, 9), None), needs_training=True)

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        act = None if a_bits is None else "Int8ActPerTensorFloat"
        if w_bits == 1:
            return cls.Config(weight_quant="SignedBinaryWeightPerTensorConst", act_quant=act, act_bit_width=a_bits)
        if w_bits == 2:
            return cls.Config(weight_quant="SignedTernaryWeightPerTensorConst", act_quant=act, act_bit_width=a_bits)
        return cls.Config(weight_bit_width=w_bits, act_bit_width=a_bits, act_quant=act)
