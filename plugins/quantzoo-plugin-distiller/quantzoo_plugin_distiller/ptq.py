"""``distiller-ptq``: Distiller's ``PostTrainLinearQuantizer`` (range-linear post-training quantization)."""

from __future__ import annotations

from typing import Any

from pydantic import field_validator, model_validator
from torch import nn

from quantzoo import Capabilities, LayerPlan, LayerPolicyConfig, Quantizer, UnsupportedError
from quantzoo.nn import QuantLayerMixin, find_bn_pairs, fold_batch_norms, set_submodule, to_quant_layer

from .graph import successor_kinds
from .modules import RangeLinearAct, RangeLinearWeight
from .ranges import ClipMode, Mode
from .schedule import check_overrides, match_override, reject_bits_overrides, schedule_kwargs
from .stats import load_stats, save_stats

PTQ_OVERRIDE_KEYS = {"bits_activations", "bits_weights", "bits_parameters", "bits_bias", "mode", "clip_acts",
                     "clip_n_stds", "clip_half_range", "per_channel_wts"}


def _check_bits(v, field: str):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 16:
        raise ValueError(f"{field}={v!r}: use an integer width 2..16, or null to keep the tensor in FP")
    return v


def split_mode(mode: Any) -> tuple[str, str]:
    """``(activations, weights)`` modes from Distiller's ``mode`` (a string or ``{activations:, weights:}``)."""
    if isinstance(mode, dict):
        return mode["activations"], mode["weights"]
    return mode, mode


class DistillerPTQConfig(LayerPolicyConfig):
    """``PostTrainLinearQuantizer`` arguments (same names as Distiller's YAML).

    ``first_layer``/``last_layer``/``include``/``exclude``: quantzoo's layer policy (default: every layer
    quantized, Distiller's behaviour), applied by the core to whole layers (docs/layer-policy.md).
    Activation ranges come from ``model_activation_stats`` (a stats YAML), else from :meth:`calibrate`
    (Distiller's two-pass collector; ``stats_out`` writes them), or per batch with ``dynamic: true``.
    """

    bits_activations: int | None = 8
    bits_parameters: int | None = 8
    bits_accum: int = 32
    mode: Mode | dict[str, Mode] = "SYMMETRIC"
    clip_acts: ClipMode = "NONE"
    clip_n_stds: float | None = None
    clip_half_range: bool = False
    per_channel_wts: bool = False
    model_activation_stats: str | None = None
    dynamic: bool = False
    stats_out: str | None = None
    fold_bn: bool = True
    overrides: dict[str, dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data):
        if isinstance(data, dict) and "bits_overrides" in data:
            from .schedule import BITS_OVERRIDES_ERROR
            raise ValueError(BITS_OVERRIDES_ERROR)
        return data

    @field_validator("bits_activations", "bits_parameters")
    @classmethod
    def _bits(cls, v, info):
        return _check_bits(v, info.field_name)

    @field_validator("mode")
    @classmethod
    def _mode(cls, v):
        if isinstance(v, dict) and set(v) != {"activations", "weights"}:
            raise ValueError("mode as a mapping needs exactly the keys 'activations' and 'weights'")
        return v

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, v):
        return check_overrides(v, PTQ_OVERRIDE_KEYS)

    @model_validator(mode="after")
    def _consistent(self):
        if self.per_channel_wts and self.clip_acts == "N_STD":
            raise ValueError("per_channel_wts with clip_acts N_STD is not supported by Distiller; "
                             "use clip_acts AVG or per_channel_wts false")
        if self.clip_acts == "N_STD" and not self.clip_n_stds:
            raise ValueError("clip_acts N_STD needs clip_n_stds (e.g. 3)")
        if self.bits_accum != 32:
            raise ValueError("bits_accum: only 32 is simulated (the float accumulator); remove it or set 32")
        return self


class DistillerQuantizerMixin:
    """``config_from_file``: a parsed Distiller YAML (schedule or ``--qe-config-file``) → this method's Config."""

    @classmethod
    def config_from_file(cls, data: dict):
        """Used by ``quantzoo.bench.load_method_config`` (``quantzoo quantize --config`` and suite entries):
        a Distiller schedule/``--qe-config-file`` YAML, or else plain config fields / the serialised form."""
        reject_bits_overrides(data)
        if isinstance(data, dict) and "quantizers" not in data:
            return cls.make_config(data.get("config", {}) if "method" in data else data)
        return cls.make_config(schedule_kwargs(data, cls.name))

    @classmethod
    def bits_of_config(cls, config):
        """The schedule's top-level widths: ``bits_weights`` (PTQ: ``bits_parameters``) and
        ``bits_activations``; per-layer ``overrides`` (e.g. 8-bit first/last layers) are not the body's."""
        w = getattr(config, "bits_weights", getattr(config, "bits_parameters", None))
        return w, getattr(config, "bits_activations", None)


class DistillerPTQ(DistillerQuantizerMixin, Quantizer):
    """Range-linear post-training quantization as Distiller's ``PostTrainLinearQuantizer``.

    Every Linear/Conv is wrapped: its input and output are fake-quantized with the activation mode and
    clip mode (stats-based or dynamic), its weight with the weight mode (range of the weight, optionally per
    output channel). BN is folded first; a layer feeding a ReLU/ReLU6 gets ``clip_half_range`` and its
    output stats are clipped to ``[0, max]`` (Tanh ±4, Sigmoid ±6), as ``_apply_activation_stats_fusions``.
    Overrides (regex, first match wins) set per-layer bits/mode/clip; ``bits: null`` keeps a tensor FP.
    Formulas: Distiller ``q_utils.py`` (see :mod:`.ranges`); Krishnamoorthi 2018 (arXiv:1806.08342) §2.

    Differences from Distiller: bias stays float (Distiller rounds it to the 32-bit accumulator grid
    ``s_x·s_w``); a layer's input is quantized from its own statistics, where Distiller re-uses the
    producer's output qparams (the same numbers when the producer is a quantized layer or leaf); other
    leaf modules (pooling) are not wrapped.
    """

    name = "distiller-ptq"
    family = "uniform affine"
    paper = ("Distiller PostTrainLinearQuantizer; Krishnamoorthi 2018, arXiv:1806.08342; "
             "Banner et al. 2019, arXiv:1810.05723 (ACIQ)")
    description = "Distiller range-linear PTQ: 4 modes, clip NONE/AVG/N_STD/GAUSS/LAPLACE, stats YAML, overrides."
    Config = DistillerPTQConfig
    capabilities = Capabilities(ptq=True, weight_bits=tuple(range(2, 17)), activation_bits=(*range(2, 17), None),
                                needs_calibration=True)

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        # Distiller's published best 8-bit setting: asymmetric activations, per-channel weights
        # (command_line.md: "asym 8/8 per-channel").
        return cls.Config(bits_parameters=w_bits, bits_activations=a_bits, per_channel_wts=True,
                          mode={"activations": "ASYMMETRIC_UNSIGNED", "weights": "SYMMETRIC"})

    @classmethod
    def apply_scheme(cls, config, scheme):
        """A hardware scheme (:mod:`quantzoo.schemes`) in ``PostTrainLinearQuantizer``'s own arguments:
        ``per_channel_wts`` (the weight granularity) and ``mode`` = ``{weights: SYMMETRIC, activations:
        SYMMETRIC | ASYMMETRIC_UNSIGNED}`` (every scheme's weights are symmetric; x86 takes asymmetric
        activations with a zero point, the others symmetric ones with signed codes). Per-layer ``mode`` and
        ``per_channel_wts`` overrides are dropped (the scheme is the hardware's, for every layer); their bits
        stay. Distiller has no power-of-two scales: ``pow2`` raises UnsupportedError."""
        if scheme.scale_type == "power_of_two":
            raise UnsupportedError(f"{cls.name} cannot follow the {scheme.name} scheme: Distiller's "
                                   "PostTrainLinearQuantizer has no power-of-two scales (no mode rounds them to 2^k)")
        per_channel = scheme.weight_granularity == "per_channel"
        if per_channel and config.clip_acts == "N_STD":
            raise UnsupportedError(f"{cls.name} cannot follow the {scheme.name} scheme with clip_acts N_STD: "
                                   "Distiller cannot combine it with per_channel_wts (use clip_acts AVG or NONE)")
        act_mode = "SYMMETRIC" if scheme.activation_symmetric else "ASYMMETRIC_UNSIGNED"
        overrides = {k: {f: v for f, v in ov.items() if f not in ("mode", "per_channel_wts")}
                     for k, ov in config.overrides.items()}
        return cls.make_config({**config.model_dump(), "per_channel_wts": per_channel, "overrides": overrides,
                                "mode": {"activations": act_mode, "weights": "SYMMETRIC"}})

    # -- building ---------------------------------------------------------------------------------------
    def _layer_settings(self, name: str) -> dict | None:
        cfg = self.config
        ov = dict(match_override(name, cfg.overrides) or {})
        act_mode, wt_mode = split_mode(ov.get("mode", cfg.mode))
        s = {
            "bits_a": ov.get("bits_activations", cfg.bits_activations),
            "bits_w": ov.get("bits_weights", ov.get("bits_parameters", cfg.bits_parameters)),
            "act_mode": act_mode, "wt_mode": wt_mode,
            "clip": ov.get("clip_acts", cfg.clip_acts), "n_stds": ov.get("clip_n_stds", cfg.clip_n_stds),
            "half_range": ov.get("clip_half_range", cfg.clip_half_range),
            "per_channel": ov.get("per_channel_wts", cfg.per_channel_wts),
        }
        for k in ("bits_a", "bits_w"):
            _check_bits(s[k], f"overrides for {name!r}: bits")
        if s["bits_a"] is None and s["bits_w"] is None:
            return None  # Distiller keeps the module in FP
        return s

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cfg = self.config
        stats = load_stats(cfg.model_activation_stats) if cfg.model_activation_stats else None
        if cfg.fold_bn:
            pairs = find_bn_pairs(model)
            if stats:  # Distiller propagates a folded BN's output stats to its conv/linear
                for layer, bn in pairs:
                    if bn in stats and layer in stats:
                        stats[layer]["output"] = stats[bn]["output"]
            fold_batch_norms(model, inplace=True)
        layers = plan.method_layers()
        succ = successor_kinds(model, layers)
        quantized = 0
        for name in layers:
            s = self._layer_settings(name)
            if s is None:
                continue
            half = s["half_range"] or succ.get(name) in ("relu", "relu6")
            act = {}
            if s["bits_a"] is not None:
                def make(half_range, successor, s=s):  # s bound now: this layer's settings
                    return RangeLinearAct(s["bits_a"], s["act_mode"], s["clip"], s["n_stds"], half_range,
                                          successor, cfg.dynamic)

                act = {"input_quantizer": make(False, None)}
                # the output feeds the next layer: re-quantize it only where that layer is the method's too
                if plan.activation_role(name) == "method":
                    act["output_quantizer"] = make(half, succ.get(name))
                if stats is not None:
                    if name not in stats:
                        raise UnsupportedError(f"distiller-ptq: model_activation_stats has no entry for layer "
                                               f"{name!r}; collect stats for this model (calibrate + stats_out)")
                    act["input_quantizer"].set_stats(stats[name]["inputs"][0])
                    if "output_quantizer" in act:
                        act["output_quantizer"].set_stats(stats[name]["output"])
            wq = (RangeLinearWeight(s["bits_w"], s["wt_mode"], s["per_channel"])
                  if s["bits_w"] is not None else None)
            set_submodule(model, name, to_quant_layer(model.get_submodule(name), weight_quantizer=wq, **act))
            quantized += 1
        if not quantized:
            raise UnsupportedError("distiller-ptq: no Linear/Conv layer is quantized (all kept FP by overrides, "
                                   "or the model has none)")
        return model

    def _act_quantizers(self, model: nn.Module) -> list[RangeLinearAct]:
        return [m for m in model.modules() if isinstance(m, RangeLinearAct)]

    def prepare(self, model: nn.Module) -> nn.Module:
        prepared = super().prepare(model)
        acts = self._act_quantizers(prepared)
        if not acts or self.config.dynamic or self.config.model_activation_stats:
            prepared._quantzoo_calibrated = True  # nothing to collect
        return prepared

    def _calibrate(self, model: nn.Module, batches: list) -> None:
        """Distiller's two-pass statistics collection, then static qparams from the stats (and stats_out)."""
        acts = self._act_quantizers(model)
        if not acts or self.config.dynamic or self.config.model_activation_stats:
            return super()._calibrate(model, batches)
        weights = [m for m in model.modules() if isinstance(m, RangeLinearWeight)]
        for w in weights:
            w.passthrough = True  # Distiller collects statistics on the float model
        try:
            for n in (1, 2):
                for a in acts:
                    a.start_pass(n)
                super()._calibrate(model, batches)
        finally:
            for w in weights:
                w.passthrough = False
        collected = {}
        for name, mod in model.named_modules():
            if isinstance(mod, QuantLayerMixin) and isinstance(mod.input_quantizer, RangeLinearAct):
                out = mod.output_quantizer
                collected[name] = {"inputs": {0: mod.input_quantizer.record},
                                   "output": out.record if isinstance(out, RangeLinearAct) else {}}
                mod.input_quantizer.set_stats(mod.input_quantizer.record)
                if isinstance(out, RangeLinearAct):
                    out.set_stats(out.record)
        model._distiller_stats = collected
        if self.config.stats_out:
            save_stats(collected, self.config.stats_out)
