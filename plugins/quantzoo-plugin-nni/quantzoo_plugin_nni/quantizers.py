"""NNI-style quantizers: ``nni-qat``, ``nni-ptq``, ``nni-lsq``, ``nni-lsqplus``, ``nni-dorefa``, ``nni-bnn``."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from pydantic import field_validator
from torch import nn

from quantzoo import Capabilities, LayerPlan, LayerPolicyConfig, Quantizer, UnsupportedError
from quantzoo.errors import ConfigError, QuantzooWarning
from quantzoo.nn import fuse_bn, set_submodule

from .config_list import (INPUT, LAYER_TYPES, OUTPUT, entry_targets, fuse_groups, normalize, parse_dtype,
                          resolve, target_setting)
from .modules import (BNNQuant, DoReFaOutput, DoReFaWeight, FusedOutput, IOQuantWrapper, LSQQuant,
                      TrackedQuant, _BiasQuant, dorefa_grad_hook, make_layer, target_spec)

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def default_config_list(w_bits: int = 8, a_bits: int | None = 8, weight_scheme: str = "symmetric",
                        act_scheme: str = "affine", act_dtype: str = "int") -> list[dict]:
    """Every Linear/Conv: weight ``int{w}`` and (unless ``a_bits`` is None) input ``{act_dtype}{a}``."""
    targets = ["weight"] + ([INPUT] if a_bits is not None else [])
    settings = {"weight": {"quant_dtype": f"int{w_bits}", "quant_scheme": weight_scheme}}
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


class LSQPlusConfig(LSQConfig):
    #: uint inputs: NNI's offset init (qmax−qmin)/2 is the middle code of a uintN range (for intN it is qmax).
    config_list: list[dict[str, Any]] = default_config_list(act_dtype="uint")


class DoReFaConfig(NNIConfig):
    config_list: list[dict[str, Any]] = [
        {"op_types": list(LAYER_TYPES), "target_names": ["weight"], "quant_dtype": "int8",
         "quant_scheme": "affine"},
        {"op_types": ["ReLU"], "target_names": [OUTPUT], "quant_dtype": "uint8", "quant_scheme": "affine"}]
    quantize_gradients: bool = True


class BNNConfig(NNIConfig):
    config_list: list[dict[str, Any]] = [
        {"op_types": list(LAYER_TYPES), "target_names": ["weight"], "quant_dtype": "int8"},
        {"op_types": ["ReLU"], "target_names": [OUTPUT], "quant_dtype": "int8"}]


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
        fused_act: dict[str, nn.Module] = {}
        for group in fuse_groups(cl):
            layer = model.get_submodule(group[0])
            for other in group[1:]:
                mod = model.get_submodule(other)
                if isinstance(mod, _BN):  # NNI fuse_names: fold the BN into the layer (eval statistics)
                    layer = fuse_bn(layer, mod)
                    set_submodule(model, group[0], layer)
                    set_submodule(model, other, nn.Identity())
                else:  # an activation in the group: the layer's _output_ is quantized after it
                    fused_act[group[0]] = mod
                    set_submodule(model, other, nn.Identity())
        self._fused_with_activation = set(fused_act)
        targets_of = self._apply_layer_policy(resolve(model, cl), plan)
        if not targets_of:
            raise UnsupportedError(f"{self.name}: the config_list selects no module of this model")
        for name, targets in targets_of.items():
            mod = model.get_submodule(name)
            q = {t: self._target(name, t, s, mod) for t, s in targets.items()}
            if name in fused_act:
                q[OUTPUT] = FusedOutput(fused_act[name], q[OUTPUT]) if q.get(OUTPUT) else fused_act[name]
            if type(mod).__name__ in LAYER_TYPES:
                new = make_layer(mod, q.get("weight"), q.get(INPUT), q.get(OUTPUT), q.get("bias"))
            else:
                new = IOQuantWrapper(mod, q.get(INPUT), q.get(OUTPUT))
            set_submodule(model, name, new)
        return model

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
    EMA (decay 0.99, seeded by the first batch) in training; NNI qparams (narrow ``intN``); gradient masked
    outside ``[qmin, qmax]``. ``quant_start_step``: optimizer steps before fake quantization starts."""

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
    """NNI ``PtqQuantizer``: global running min/max of every target over the calibration data, then NNI
    qparams and ``clamp_round``. ``bias_correction`` (NNI's ``is_bias_correction``): the mean output error
    ``E[y_float-weights − y_quantized]`` per output channel, measured on the calibration data with the layer's
    quantized input, is added to the bias (empirical bias correction, Nagel et al. 2019, arXiv:1906.04721
    §4.2)."""

    name = "nni-ptq"
    paper = "NNI PtqQuantizer; Nagel et al. 2019, arXiv:1906.04721 (bias correction)"
    description = "NNI PTQ: running min/max calibration, NNI integer ranges, optional bias correction."
    Config = PTQConfig
    capabilities = Capabilities(ptq=True, weight_bits=tuple(range(2, 17)), activation_bits=(*range(2, 17), None),
                                needs_calibration=True)

    def _target(self, name, target, setting, module):
        return TrackedQuant(target_spec(setting, target in ("weight", "bias")), "running")

    def prepare(self, model):
        prepared = super().prepare(model)
        # weight/bias ranges are known without data; only activation targets need calibration
        for mod in prepared.modules():
            if isinstance(mod, _BiasQuant):
                for q, t in ((mod.weight_quantizer, mod.weight), (mod.bias_quantizer, mod.bias)):
                    if isinstance(q, TrackedQuant):
                        q.track(t.detach())
                        q.observing, q.quantizing = False, True
        if not any(isinstance(m, TrackedQuant) and not m.quantizing for m in prepared.modules()):
            prepared._quantzoo_calibrated = True
        return prepared

    def _calibrate(self, model, batches):
        # activation targets still waiting for data (weight/bias ranges were set at prepare)
        acts = [m for m in model.modules() if isinstance(m, TrackedQuant) and m.tracking == "running"
                and not m.quantizing]
        for a in acts:
            a.observing, a.quantizing = True, False
        super()._calibrate(model, batches)
        for a in acts:
            a.observing, a.quantizing = False, True
        if self.config.bias_correction:
            self._bias_correction(model, batches)

    @torch.no_grad()
    def _bias_correction(self, model, batches):
        layers = [m for m in model.modules() if isinstance(m, _BiasQuant) and m.bias is not None
                  and m.weight_quantizer is not None]
        sums = {id(m): None for m in layers}
        counts = {id(m): 0 for m in layers}

        def hook(mod, args, out):
            x = args[0]
            if mod.input_quantizer is not None:
                x = mod.input_quantizer(x)
            err = mod._compute(x, mod.weight) - mod._compute(x, mod.quantized_weight())
            dims = [d for d in range(err.dim()) if d != 1]
            s = err.sum(dim=dims)
            sums[id(mod)] = s if sums[id(mod)] is None else sums[id(mod)] + s
            counts[id(mod)] += err.numel() // err.shape[1]

        handles = [m.register_forward_hook(hook) for m in layers]
        try:
            model.eval()
            for b in batches:
                model(b[0] if isinstance(b, (tuple, list)) else b)
        finally:
            for h in handles:
                h.remove()
        for m in layers:
            if counts[id(m)]:
                m.bias.add_(sums[id(m)] / counts[id(m)])


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
        # LSQ+ learns an offset for affine targets only (Bhalgat et al. §3.1: symmetric weights, asymmetric
        # activations); NNI 3.0 would give every target an offset initialised to (qmax−qmin)/2.
        offset = self.learn_zero_point and setting.get("quant_scheme") == "affine"
        return LSQQuant(target_spec(setting, False), self.config.init, offset)


class NNILSQPlus(NNILSQ):
    """NNI ``LsqPlusQuantizer`` (Bhalgat et al. 2020, arXiv:2004.09576): LSQ with a learned offset β,
    initialised as NNI 3.0 to ``s = 0.01``, ``β = (qmax−qmin)/2``."""

    name = "nni-lsqplus"
    paper = "Bhalgat et al. 2020, arXiv:2004.09576; NNI LsqPlusQuantizer"
    description = "NNI LSQ+: learned step and offset (init 0.01 and (qmax-qmin)/2 as NNI 3.0)."
    learn_zero_point = True
    Config = LSQPlusConfig

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config(config_list=default_config_list(w_bits, a_bits, act_dtype="uint"), init="v2",
                          first_layer="int8", last_layer="int8")


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
        cl = [{"op_types": list(LAYER_TYPES), "target_names": ["weight"], "quant_dtype": "int8"}]
        if a_bits == 1:
            # The zoo's blocks are Conv/Linear-BN-ReLU: sign(relu(x)) would always be +1, so the activation is
            # binarized at the ReLU's input (the BN output, as BNN's sign after BN), leaving {0, 1} after it.
            cl.append({"op_types": ["ReLU"], "target_names": [INPUT], "quant_dtype": "int8"})
        return cls.Config(config_list=cl)

    @classmethod
    def bits_of_config(cls, config):
        """Binary: 1 bit wherever the config_list has a weight or activation target (its dtype is ignored)."""
        weights, acts = cls._target_widths(config)
        return (1 if weights else None), (1 if acts else None)

    def _target(self, name, target, setting, module):
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
        for mod in model.modules():
            if isinstance(mod, _BiasQuant) and isinstance(mod.weight_quantizer, BNNQuant):
                mod.weight.clamp_(-1.0, 1.0)


QUANTIZERS = [NNIQAT, NNIPTQ, NNILSQ, NNILSQPlus, NNIDoReFa, NNIBNN]
