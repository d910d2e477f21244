"""NNI-style quantizers: ``nni-qat``, ``nni-ptq``, ``nni-lsq``, ``nni-lsqplus``, ``nni-dorefa``, ``nni-bnn``."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from pydantic import field_validator
from torch import nn

from quantzoo import Capabilities, LayerPlan, LayerPolicyConfig, Quantizer, UnsupportedError
from quantzoo.errors import ConfigError, QuantzooWarning
from quantzoo.nn import set_submodule

from .config_list import (INPUT, LAYER_TYPES, OUTPUT, entry_targets, fuse_groups, normalize, parse_dtype,
                          resolve, target_setting)
from .modules import (BNNQuant, DoReFaOutput, DoReFaWeight, FusedOutput, IOQuantWrapper, LSQQuant,
                      TrackedQuant, _BiasQuant, dorefa_grad_hook, make_layer, target_spec)

_NO_GRANULARITY = "granularity must be 'default' (NNI raises ValueError: \"doesn't support for granularity\")"

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def default_config_list(w_bits: int = 8, a_bits: int | None = 8, weight_scheme: str = "symmetric",
                        act_scheme: str = "affine", act_dtype: str = "int", weight_dtype: str = "int") -> list[dict]:
    """Every Linear/Conv: weight ``{weight_dtype}{w}`` and (unless ``a_bits`` is None) input ``{act_dtype}{a}``."""
    targets = ["weight"] + ([INPUT] if a_bits is not None else [])
    settings = {"weight": {"quant_dtype": f"{weight_dtype}{w_bits}", "quant_scheme": weight_scheme}}
    if a_bits is not None:
        settings[INPUT] = {"quant_dtype": f"{act_dtype}{a_bits}", "quant_scheme": act_scheme}
    return [{"op_types": list(LAYER_TYPES), "target_names": targets, "target_settings": settings}]


class NNIConfig(LayerPolicyConfig):
    """An NNI ``config_list`` (3.0, or 2.x translated with a warning) plus the quantizer's arguments.

    ``first_layer``/``last_layer``/``include``/``exclude`` (quantzoo's layer policy, default: NNI's
    behaviour) act after the config_list: a layer the policy keeps at 8 bits or float leaves the method (the
    core quantizes it, docs/layer-policy.md), and so do output targets whose tensor reaches such a layer.
    """

    config_list: list[dict[str, Any]] = default_config_list()

    @field_validator("config_list", mode="before")
    @classmethod
    def _normalize(cls, v):
        try:
            return normalize(v)
        except ConfigError as e:
            raise ValueError(str(e)) from None


class QATConfig(NNIConfig):
    quant_start_step: int = 0


class PTQConfig(NNIConfig):
    bias_correction: bool = False


class LSQConfig(NNIConfig):
    #: "v3": step initialised to 0.01 (NNI 3.0); "v2": 2·mean|x|/sqrt(qmax) at the first batch (NNI 2.x).
    init: Literal["v3", "v2"] = "v3"


def lsqplus_config_list(w_bits: int = 8, a_bits: int | None = 8) -> list[dict]:
    """uint weights and inputs, affine: NNI 3.0 gives every LSQ+ target the offset (qmax−qmin)/2, the middle
    code of a uintN range (for an intN target it would be qmax, leaving only non-positive values)."""
    return default_config_list(w_bits, a_bits, weight_scheme="affine", act_scheme="affine", act_dtype="uint",
                               weight_dtype="uint")


class LSQPlusConfig(NNIConfig):
    #: NNI 3.0's initialisation, the only one: step 0.01 and offset (qmax−qmin)/2 on every target.
    init: Literal["v3"] = "v3"
    config_list: list[dict[str, Any]] = lsqplus_config_list()


class DoReFaConfig(NNIConfig):
    config_list: list[dict[str, Any]] = [
        {"op_types": list(LAYER_TYPES), "target_names": ["weight"], "quant_dtype": "int8",
         "quant_scheme": "affine"},
        {"op_types": ["ReLU"], "target_names": [OUTPUT], "quant_dtype": "uint8", "quant_scheme": "affine"}]
    quantize_gradients: bool = True


class BNNConfig(NNIConfig):
    config_list: list[dict[str, Any]] = [
        {"op_types": list(LAYER_TYPES), "target_names": ["weight"], "quant_dtype": None},
        {"op_types": ["Hardtanh"], "target_names": [OUTPUT], "quant_dtype": None}]
    #: Replace every nn.ReLU by nn.Hardtanh before the config_list is applied: BNN's activation is the sign
    #: (Hubara et al. 2016, Alg. 1), which NNI's BNN example network takes from Hardtanh outputs; the sign of
    #: a ReLU output is always +1. The harness's W1A1 row sets it (config_for_bits).
    relu_to_hardtanh: bool = False


class _NNIQuantizer(Quantizer):
    """Builds the targets of a config_list into quantzoo layers (see :mod:`.config_list`)."""

    family = "uniform affine"

    @classmethod
    def config_from_file(cls, data):
        """Used by ``quantzoo.bench.load_method_config``: a bare NNI ``config_list`` (3.0 or 2.x), a mapping
        with ``config_list`` plus other config fields, or quantzoo's serialised ``{method, config}`` form."""
        if isinstance(data, list):
            return cls.make_config({"config_list": data})
        if isinstance(data, dict) and "method" in data and "config" in data:
            return cls.make_config(data["config"] or {})
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.name}: a config file holds an NNI config_list (a list) or a mapping with "
                              f"'config_list', not {type(data).__name__}")
        return cls.make_config(data)

    @classmethod
    def _target_widths(cls, config) -> tuple[list[int], list[int]]:
        """The ``quant_dtype`` widths of every weight target and of every ``_input_``/``_output_`` target."""
        weights, acts = [], []
        for e in config.config_list:
            # without a model, the entry's op_types stand for the modules it selects (op_names: layers)
            targets = {t for ty in e.get("op_types") or LAYER_TYPES for t in entry_targets(e, ty)}
            for t in targets:
                bits = parse_dtype(target_setting(e, t)["quant_dtype"])[1]
                if t == "weight":
                    weights.append(bits)
                elif t in (INPUT, OUTPUT):
                    acts.append(bits)
        return weights, acts

    @classmethod
    def bits_of_config(cls, config):
        """The narrowest weight and activation ``quant_dtype`` of the config_list (the body's widths; wider
        entries are e.g. 8-bit first/last layers)."""
        weights, acts = cls._target_widths(config)
        return min(weights, default=None), min(acts, default=None)

    def _target(self, name: str, target: str, setting: dict, module: nn.Module) -> nn.Module:
        raise NotImplementedError  # pragma: no cover

    def _prepare(self, model: nn.Module, plan: LayerPlan) -> nn.Module:
        cl = self.config.config_list
        if getattr(self.config, "relu_to_hardtanh", False):
            # BNN's sign with a saturating gradient takes the ReLU's place (NNI's BNN example uses Hardtanh);
            # a ReLU feeding a layer the policy keeps at 8 bits or float stays
            for name, mod in list(model.named_modules()):
                if type(mod) is nn.ReLU and plan.activation_role(name) == "method":
                    set_submodule(model, name, nn.Hardtanh())
        targets_of = self._apply_layer_policy(resolve(model, cl), plan)
        if not targets_of:
            raise UnsupportedError(f"{self.name}: the config_list selects no module of this model")
        fused_act, fused_bn = self._fuse(model, targets_of, fuse_groups(cl))
        self._fused_with_activation = set(fused_act)
        for name, targets in targets_of.items():
            mod = model.get_submodule(name)
            q = {t: self._target(name, t, s, mod) for t, s in targets.items()}
            if name in fused_act:
                q[OUTPUT] = FusedOutput(fused_act[name], q[OUTPUT]) if q.get(OUTPUT) else fused_act[name]
            if type(mod).__name__ in LAYER_TYPES:
                new = make_layer(mod, q.get("weight"), q.get(INPUT), q.get(OUTPUT), q.get("bias"), fused_bn.get(name))
            else:
                new = IOQuantWrapper(mod, q.get(INPUT), q.get(OUTPUT))
            set_submodule(model, name, new)
        return model

    @staticmethod
    def _fuse(model: nn.Module, plan: dict, groups: list[tuple[str, ...]]):
        """NNI ``fuse_names`` groups ``(layer, bn[, relu])`` / ``(layer, relu)``: the BN is folded into the layer
        on every forward (:meth:`modules._BiasQuant._float_params`), the activation runs before the layer's
        ``_output_`` target; both leave the model (NNI's ``IdentityModuleWrapper``). A group whose layer the
        layer policy keeps float stays as it is."""
        fused_act: dict[str, nn.Module] = {}
        fused_bn: dict[str, nn.Module] = {}
        for group in groups:
            configured = sorted(set(group[1:]) & set(plan))
            if configured:
                raise ConfigError(f"config_list: {configured} are fused into {group[0]!r} and cannot have their own "
                                  "targets (NNI: \"Don't provide quantization settings for identity modules\")")
            if group[0] not in plan:
                continue
            for other in group[1:]:
                mod = model.get_submodule(other)
                if isinstance(mod, _BN):
                    if "weight" not in plan[group[0]]:
                        raise ConfigError(f"config_list: fusing {other!r} into {group[0]!r} needs a weight target on "
                                          f"{group[0]!r} (as NNI's fuse_conv_bn / fuse_linear_bn)")
                    fused_bn[group[0]] = mod
                else:  # an activation in the group: the layer's _output_ is quantized after it
                    fused_act[group[0]] = mod
                set_submodule(model, other, nn.Identity())
        return fused_act, fused_bn

    @staticmethod
    def _apply_layer_policy(targets_of: dict, plan: LayerPlan) -> dict:
        """The config_list's targets minus what the layer plan keeps from the method: layers it keeps at
        8 bits or float (the core builds those), output targets of layers whose output reaches such a layer,
        and every target of other modules (activations) whose output reaches one."""
        out = {}
        for name, targets in targets_of.items():
            feeds_policy_layer = plan.activation_role(name) != "method"
            if name in plan.roles:
                if plan.role(name) != "method":
                    continue
                if feeds_policy_layer:
                    targets = {t: s for t, s in targets.items() if t != OUTPUT}
            elif feeds_policy_layer:
                continue
            if targets:
                out[name] = targets
        return out

    def _convert(self, model: nn.Module) -> nn.Module:
        for mod in model.modules():
            if hasattr(mod, "bake") and callable(mod.bake):
                mod.bake()
        for mod in model.modules():
            if isinstance(mod, TrackedQuant):
                mod.observing = False
        return model

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        """NNI's default targets: every Linear/Conv's weight ``int{w}`` (symmetric) and input ``int{a}``
        (affine) — used as is by ``nni-qat`` and ``nni-ptq``; the others override it."""
        return cls.Config(config_list=default_config_list(w_bits, a_bits))


class NNIQAT(_NNIQuantizer):
    """NNI ``QATQuantizer`` (Jacob et al. 2018, arXiv:1712.05877 §3): every target's min/max tracked with an
    EMA (decay 0.99, seeded by the first batch) in training; NNI qparams (narrow ``intN``); gradient zeroed
    where the unrounded ``zp + x/s`` lies outside ``[qmin, qmax]`` (``qat_clamp_round``).
    ``quant_start_step``: optimizer steps in float (ranges still tracked) before fake quantization starts."""

    name = "nni-qat"
    paper = "NNI QATQuantizer; Jacob et al. 2018, arXiv:1712.05877"
    description = "NNI QAT: EMA(0.99) ranges, NNI integer ranges (intN narrow), config_list targets."
    Config = QATConfig
    capabilities = Capabilities(qat=True, weight_bits=tuple(range(2, 17)), activation_bits=(*range(2, 17), None),
                                needs_training=True)

    def _target(self, name, target, setting, module):
        return TrackedQuant(target_spec(setting, target in ("weight", "bias")), "ema", 0.99)

    def _prepare(self, model, plan):
        model = super()._prepare(model, plan)
        self._set_quantizing(model, self.config.quant_start_step <= 0)
        model.register_buffer("nni_step", torch.zeros((), dtype=torch.int64))
        return model

    @staticmethod
    def _set_quantizing(model, on: bool):
        for m in model.modules():
            if isinstance(m, TrackedQuant):
                m.quantizing = on

    def after_optimizer_step(self, model):
        model.nni_step += 1
        if int(model.nni_step) == self.config.quant_start_step:
            self._set_quantizing(model, True)

    def _convert(self, model):
        self._set_quantizing(model, True)
        return super()._convert(model)


class NNIPTQ(_NNIQuantizer):
    """NNI ``PtqQuantizer``: every target runs in float while the calibration data record its global
    min/max, then NNI qparams and ``clamp_round`` (gradient unchanged). ``bias_correction`` (NNI's
    ``is_bias_correction``, after Nagel et al. 2019, arXiv:1906.04721 §4.2): see :meth:`_bias_correction`."""

    name = "nni-ptq"
    paper = "NNI PtqQuantizer; Nagel et al. 2019, arXiv:1906.04721 (bias correction)"
    description = "NNI PTQ: running min/max calibration, NNI integer ranges, optional bias correction."
    Config = PTQConfig
    capabilities = Capabilities(ptq=True, weight_bits=tuple(range(2, 17)), activation_bits=(*range(2, 17), None),
                                needs_calibration=True)

    def _target(self, name, target, setting, module):
        return TrackedQuant(target_spec(setting, target in ("weight", "bias")), "running")

    @staticmethod
    def _targets(model):
        return [m for m in model.modules() if isinstance(m, TrackedQuant) and m.tracking == "running"]

    @staticmethod
    def _track_params(model):
        # NNI tracks a weight/bias target on every forward: its range is the parameter's own
        for mod in model.modules():
            if isinstance(mod, _BiasQuant):
                for q, t in ((mod.weight_quantizer, mod.weight), (mod.bias_quantizer, mod.bias)):
                    if isinstance(q, TrackedQuant) and t is not None:
                        q.track(t.detach())

    def prepare(self, model):
        prepared = super().prepare(model)
        targets = self._targets(prepared)
        param_targets = {id(q) for m in prepared.modules() if isinstance(m, _BiasQuant)
                         for q in (m.weight_quantizer, m.bias_quantizer) if q is not None}
        if targets and all(id(t) in param_targets for t in targets):
            # weights/biases only: their ranges are known without data (NNI's calibration gives the same)
            self._track_params(prepared)
            for t in targets:
                t.update_qparams()
                t.observing, t.quantizing = False, True
            prepared._quantzoo_calibrated = True
        return prepared

    def _calibrate(self, model, batches):
        """NNI ``PtqQuantizer.compress``: every target runs in float while the calibration batches record the
        global min/max (weights too), then the qparams are fixed and every target quantizes."""
        targets = self._targets(model)
        for t in targets:
            t.observing, t.quantizing = True, False
        self._track_params(model)
        super()._calibrate(model, batches)
        for t in targets:
            t.update_qparams()
            t.observing, t.quantizing = False, True
        if self.config.bias_correction:
            self._bias_correction(model, batches, targets)

    @torch.no_grad()
    def _bias_correction(self, model, batches, targets):
        """NNI ``PtqQuantizer.bias_correction`` (after Nagel et al. 2019, arXiv:1906.04721 §4.2): one quantized
        pass over the data measures, per layer with a bias, ``E[y_float params − y_quantized]`` (the float
        output on the quantized input, through a fused activation, minus the quantized output after its
        output target) averaged over every dimension but the last; it is added to the bias; a second quantized
        pass follows. Both passes keep tracking the ranges (NNI's tracking never stops), and the qparams are
        recomputed at the end — so a bias target's range covers the old and the corrected bias.

        On a Conv the last dimension is the width, not the channel (NNI's reduction): an output width of 1 or
        C gives NNI's numbers; any other width makes NNI raise, and here UnsupportedError."""
        layers = [m for m in model.modules() if isinstance(m, _BiasQuant) and m.bias is not None]
        for t in targets:
            t.observing = True
        try:
            for m in layers:
                m.bias_error = (None, 0)
            Quantizer._calibrate(self, model, batches)  # one plain pass over the batches
            for m in layers:
                err, count = m.bias_error
                m.bias_error = None
                if err is None or not count:
                    continue
                n, c = err.numel(), m.bias.numel()
                if not (n == c or (n == 1 and m.bias_quantizer is None)):
                    raise UnsupportedError(
                        f"nni-ptq bias_correction: NNI averages the output error over every dimension but the "
                        f"last, which gives {n} values for {c} bias entries of {type(m).__name__} (a Conv's last "
                        "dimension is its width) and NNI fails here too; use bias_correction only on Linear "
                        "layers, e.g. with a config_list that selects them")
                m.bias.add_(err / count)
            Quantizer._calibrate(self, model, batches)  # one plain pass over the batches
            for t in targets:
                t.update_qparams()
        finally:
            for m in layers:
                m.bias_error = None
            for t in targets:
                t.observing = False


class NNILSQ(_NNIQuantizer):
    """NNI ``LsqQuantizer`` (Esser et al. 2020, arXiv:1902.08153): every target gets a learned step size,
    initialised to 0.01 (NNI 3.0; ``init: v2`` gives NNI 2.x's ``2·mean|x|/sqrt(qmax)``), gradient scale
    ``1/sqrt(qmax·numel)``; codes in NNI's integer range (narrow ``intN``), no zero point."""

    name = "nni-lsq"
    paper = "Esser et al. 2020, arXiv:1902.08153; NNI LsqQuantizer"
    description = "NNI LSQ: learned step size (init 0.01 as NNI 3.0), NNI integer ranges."
    Config = LSQConfig
    capabilities = Capabilities(qat=True, weight_bits=tuple(range(2, 17)), activation_bits=(*range(2, 17), None),
                                needs_training=True)
    learn_zero_point = False

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        # LSQ has no zero point; Esser et al. (§3) use unsigned codes for the post-ReLU inputs and keep the
        # first and last layers at 8 bits, which also keeps the (signed) raw input of the first layer signed.
        return cls.Config(config_list=default_config_list(w_bits, a_bits, act_scheme="symmetric", act_dtype="uint"),
                          init="v2", first_layer="int8", last_layer="int8")

    def _target(self, name, target, setting, module):
        # NNI 3.0 learns an offset on every LSQ+ target, whatever its quant_scheme (it only warns that LSQ+
        # supports affine), initialised to (qmax−qmin)/2
        return LSQQuant(target_spec(setting, target in ("weight", "bias")), self.config.init,
                        self.learn_zero_point)


class NNILSQPlus(NNILSQ):
    """NNI 3.0 ``LsqPlusQuantizer`` (Bhalgat et al. 2020, arXiv:2004.09576): LSQ with a learned offset β on
    every target, initialised as NNI 3.0 to ``s = 0.01``, ``β = (qmax−qmin)/2``. The harness row uses uint
    weights and inputs (affine), where that offset is the middle code; 8-bit first/last layers."""

    name = "nni-lsqplus"
    paper = "Bhalgat et al. 2020, arXiv:2004.09576; NNI LsqPlusQuantizer"
    description = "NNI LSQ+: learned step and offset (init 0.01 and (qmax-qmin)/2 as NNI 3.0)."
    learn_zero_point = True
    Config = LSQPlusConfig

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(config_list=lsqplus_config_list(w_bits, a_bits), first_layer="int8", last_layer="int8")


class NNIDoReFa(_NNIQuantizer):
    """NNI 3.0 ``DoReFaQuantizer`` (Zhou et al. 2016, arXiv:1606.06160): weights by the tanh map on the
    ``[0, 1]`` affine grid of their dtype, inputs ``clamp_round`` on the batch range, outputs (activation
    modules, or layers fused with one) ``clamp(x, 0, 1)`` on the grid. Gradients reaching a module with a
    weight target and no output target are quantized in a backward pre-hook (eq. 12, with noise)."""

    name = "nni-dorefa"
    paper = "Zhou et al. 2016, arXiv:1606.06160; NNI DoReFaQuantizer"
    description = "NNI DoReFa: tanh weights, clamp(0,1) outputs, quantized gradients via a backward hook."
    Config = DoReFaConfig
    capabilities = Capabilities(qat=True, weight_bits=tuple(range(2, 17)), activation_bits=(*range(2, 17), None),
                                needs_training=True)

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        cl = [{"op_types": list(LAYER_TYPES), "target_names": ["weight"], "quant_dtype": f"uint{w_bits}",
               "quant_scheme": "affine"}]
        if a_bits is not None:
            cl.append({"op_types": ["ReLU"], "target_names": [OUTPUT], "quant_dtype": f"uint{a_bits}",
                       "quant_scheme": "affine"})
        return cls.Config(config_list=cl)

    def _target(self, name, target, setting, module):
        if setting.get("granularity", "default") != "default":
            raise ConfigError(f"nni-dorefa: {name}.{target}: {_NO_GRANULARITY}")
        if setting.get("quant_scheme") is None:
            raise ConfigError(f"nni-dorefa: {name}.{target}: set quant_scheme ('affine' or 'symmetric'); NNI's "
                              "DoReFaQuantizer asserts it is given")
        spec = target_spec(setting, target in ("weight", "bias"))
        if target in ("weight", "bias"):
            if setting.get("quant_scheme") not in ("affine",):
                warnings.warn(f"nni-dorefa: {name}.{target}: only affine is supported for weights "
                              f"(got {setting.get('quant_scheme')}); using affine", QuantzooWarning, stacklevel=2)
            return DoReFaWeight(spec)
        if target == OUTPUT:
            # NNI: an activation module, or a layer fused with one (a BN alone does not count)
            fused = name in getattr(self, "_fused_with_activation", set())
            if type(module).__name__ in LAYER_TYPES and not fused:
                raise ConfigError(f"nni-dorefa: output quantization is only for activation modules or layers "
                                  f"fused with one; {name!r} is a {type(module).__name__}")
            return DoReFaOutput(spec)
        return TrackedQuant(spec, "batch")

    def _prepare(self, model, plan):
        model = super()._prepare(model, plan)
        if self.config.quantize_gradients:
            for mod in model.modules():
                if isinstance(mod, _BiasQuant) and isinstance(mod.weight_quantizer, DoReFaWeight) \
                        and mod.output_quantizer is None:
                    mod.grad_spec, mod.grad_bits = mod.weight_quantizer.spec, mod.weight_quantizer.bits
                    mod.register_full_backward_pre_hook(dorefa_grad_hook)
        return model


class NNIBNN(_NNIQuantizer):
    """NNI ``BNNQuantizer`` (Hubara et al. 2016, arXiv:1602.02830): ``sign`` (0 → +1) of weights and of the
    selected outputs/inputs with a straight-through gradient (cancelled where ``|x| > 1`` for outputs);
    latent weights are clamped to ``[−1, 1]`` after every optimizer step."""

    name = "nni-bnn"
    family = "binary"
    paper = "Hubara et al. 2016, arXiv:1602.02830; NNI BNNQuantizer"
    description = "NNI BNN: sign weights and activations with STE, latent weights clipped to [-1, 1]."
    Config = BNNConfig
    capabilities = Capabilities(qat=True, weight_bits=(1,), activation_bits=(1, None), needs_training=True)

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        cl = [{"op_types": list(LAYER_TYPES), "target_names": ["weight"], "quant_dtype": None}]
        if a_bits == 1:
            # The zoo's blocks are Conv/Linear-BN-ReLU and sign(relu(x)) is always +1. BNN's activation is the
            # sign in place of the ReLU (Alg. 1), with the STE cancelled where |x| > 1 (eq. 4): every ReLU
            # becomes a Hardtanh whose output is binarized, as in NNI's BNN example network. sign(hardtanh(x))
            # = sign(x) and its gradient is 1 where |x| < 1 (Hardtanh's own), 0 elsewhere.
            cl.append({"op_types": ["Hardtanh"], "target_names": [OUTPUT], "quant_dtype": None})
            return cls.Config(config_list=cl, relu_to_hardtanh=True)
        return cls.Config(config_list=cl)

    @classmethod
    def bits_of_config(cls, config):
        """Binary: 1 bit wherever the config_list has a weight or activation target (its dtype is ignored)."""
        weights, acts = cls._target_widths(config)
        return (1 if weights else None), (1 if acts else None)

    def _target(self, name, target, setting, module):
        if setting.get("granularity", "default") != "default":
            raise ConfigError(f"nni-bnn: {name}.{target}: {_NO_GRANULARITY}")
        return BNNQuant(is_output=target == OUTPUT)

    @classmethod
    def conformance_model(cls):
        # BNN needs a BN before each binarized activation (Hubara et al. 2016 §2.5): without it the
        # pre-activations of ±1 weights are far outside [-1, 1], where the output STE cancels every gradient.
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                              nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
        return model, torch.randn(8, 64)

    @torch.no_grad()
    def after_optimizer_step(self, model):
        # NNI clamps every parameter target (weight, and bias where it is one) after each optimizer step
        for mod in model.modules():
            if isinstance(mod, _BiasQuant):
                for q, p in ((mod.weight_quantizer, mod.weight), (getattr(mod, "bias_quantizer", None), mod.bias)):
                    if isinstance(q, BNNQuant) and p is not None:
                        p.clamp_(-1.0, 1.0)


QUANTIZERS = [NNIQAT, NNIPTQ, NNILSQ, NNILSQPlus, NNIDoReFa, NNIBNN]
