"""`torch-static` (eager mode) and `torch-fx` (FX graph mode): post-training static quantization.

Both follow torch.ao's documented flow exactly (``qconfig`` → ``prepare`` → calibrate → ``convert``), so the
result equals what a user writing that flow by hand gets (tests/test_faithful.py checks ``torch.equal``). The
eager flow gets the model edits torch's tutorial asks for from :mod:`.eager_prepare` (also used by
`torch-qat`); :func:`prepare_eager` and :func:`convert_eager` are the steps both eager methods share.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import field_validator, model_validator
from torch import nn

from quantzoo.errors import UnsupportedError
from quantzoo.quantizer import Capabilities

from ._compat import engine_scope, torch_ao_api, torch_ao_calls
from .base import (ActivationQScheme, EngineConfig, PluginQuantizer, count_quantized, qconfig_scheme_fields,
                   remember_example, require_layers, take_example)
from .eager_prepare import GraphWrapper, island_reason, prepare_eager_model
from .errors import describe_trace_failure, explain_int8_failure, locate_failure, translated
from .float_layers import record_float_layers
from .observers import CORE_PREFIX, build_qconfig, check_observer_name

_CONV_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class TorchStaticConfig(EngineConfig):
    """Observers and weight granularity of the QConfig.

    ``activation_observer``: torch's ``histogram`` (default, L2-minimising range), ``minmax``,
    ``moving_average_minmax``, or ``quantzoo:<name>`` for a registered quantzoo observer.
    ``weight_observer``: ``minmax`` (default), ``moving_average_minmax``, ``histogram`` (per-tensor only),
    or ``quantzoo:<name>``. ``reduce_range``: 7-bit activations; None = the engine's default (True for
    x86/fbgemm). ``fuse``: fuse Conv-BN(-ReLU)/Linear(-ReLU) before observing (torch's recommendation).
    ``activation_qscheme``: quint8 ``per_tensor_affine`` (torch's default) or ``per_tensor_symmetric``.
    """

    weight_granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    activation_qscheme: ActivationQScheme = "affine"
    activation_observer: str = "histogram"
    weight_observer: str = "minmax"
    reduce_range: bool | None = None
    fuse: bool = True

    @field_validator("activation_observer")
    @classmethod
    def _act(cls, v):
        return check_observer_name(v, "activation")

    @field_validator("weight_observer")
    @classmethod
    def _wt(cls, v):
        return check_observer_name(v, "weight")

    @model_validator(mode="after")
    def _symmetric_needs_torch_observer(self):
        if self.activation_qscheme == "symmetric" and self.activation_observer.startswith(CORE_PREFIX):
            raise ValueError("activation_qscheme 'symmetric' needs a torch activation observer (histogram, minmax, "
                             f"moving_average_minmax), not {self.activation_observer!r}")
        return self

    def qconfig(self):
        return build_qconfig(self.engine, self.weight_granularity == "per_channel", self.activation_observer,
                             self.weight_observer, self.reduce_range, self.activation_qscheme == "symmetric")


_STATIC_CAPS = Capabilities(ptq=True, weight_bits=(8,), activation_bits=(8,), needs_calibration=True,
                            module_types=("Linear", "Conv1d", "Conv2d", "Conv3d"))


def _static_scheme(cls, config: TorchStaticConfig, scheme) -> TorchStaticConfig:
    """torch-static / torch-fx follow a scheme in their QConfig (:func:`.base.qconfig_scheme_fields`)."""
    fields = qconfig_scheme_fields(cls.name, scheme)
    if fields["activation_qscheme"] == "symmetric" and config.activation_observer.startswith(CORE_PREFIX):
        raise UnsupportedError(f"{cls.name} cannot follow the {scheme.name} scheme with activation_observer "
                               f"{config.activation_observer!r}: symmetric quint8 needs a torch observer")
    return cls.make_config({**config.model_dump(), **fields})


def _finish(model: nn.Module, method: str, engine: str) -> nn.Module:
    if count_quantized(model) == 0:
        raise UnsupportedError(f"{method}: convert produced no int8 layer; the model would run in float")
    model._quantzoo_engine = engine
    return model


def prepare_eager(method: str, model: nn.Module, qconfig, engine: str, qat: bool, fuse: bool = True) -> nn.Module:
    """Eager prepare (``prepare`` or ``prepare_qat``) of ``model`` after the automatic edits and fusion."""
    from torch.ao.quantization import prepare, prepare_qat

    require_layers(model, _CONV_LINEAR, method, "Linear/Conv layer")
    # BN folding for inference needs eval mode; QAT keeps BN trainable inside ConvBn modules (train mode).
    model.train(qat)
    with engine_scope(engine), torch_ao_calls():
        with translated(method, "preparing the model for eager mode (tracing, fusion)", "pass fuse=False or use "
                        "'torch-fx' or 'torch-dynamic'"):
            plan = prepare_eager_model(model, qconfig, qat=qat, fuse=fuse)
        model = plan.model
        with translated(method, "torch.ao.quantization.prepare" + ("_qat" if qat else ""),
                        "use 'torch-fx' or 'torch-dynamic' for this model"):
            (prepare_qat if qat else prepare)(model, inplace=True)
    model._quantzoo_fused = plan.groups
    model._quantzoo_float_plan = plan.float_layers
    model._quantzoo_rewritten = plan.rewritten
    model._quantzoo_trace_problem = describe_trace_failure(plan.trace_error) if plan.trace_error else None
    remember_example(model)
    return model


def convert_eager(method: str, model: nn.Module, engine: str, qat: bool) -> nn.Module:
    """torch.ao ``convert``, then one int8 forward on the remembered batch (a failure is refused with the
    layer named), then the float-layer record."""
    from torch.ao.quantization import QuantWrapper, convert

    example = take_example(model)
    model.eval()
    with engine_scope(engine), torch_ao_calls():
        with translated(method, "torch.ao.quantization.convert", "use 'torch-fx' or 'torch-dynamic' for this model"):
            convert(model, inplace=True)
        if example is not None:
            with torch.no_grad():
                exc, layer, kind = locate_failure(model, lambda: model(*example))
            if exc is not None:  # names as in the user's model: without the wrapper's "module."
                layer = layer.removeprefix("module").removeprefix(".")
                raise explain_int8_failure(method, exc, layer, kind, model._quantzoo_trace_problem)
    record_float_layers(model.module if isinstance(model, (QuantWrapper, GraphWrapper)) else model, model,
                        lambda m: island_reason(m, qat), model._quantzoo_float_plan)
    return _finish(model, method, engine)


class TorchStaticQuantizer(PluginQuantizer):
    """Eager-mode static PTQ: the plugin makes the edits torch's eager tutorial asks for (FloatFunctional for
    functional adds/cats/muls, QuantStub/DeQuantStub, one module per call; :mod:`.eager_prepare`), fuses the
    Conv-BN(-ReLU)/Linear(-ReLU) chains it finds by tracing, attaches the QConfig's observers, and after
    calibration ``convert`` swaps in int8 modules (LSTM and MultiheadAttention through torch.ao's
    quantizable custom modules). Quantization is affine, ``r = S(q - Z)`` (Jacob et al. 2018,
    arXiv:1712.05877 eq. 1), weights symmetric int8."""

    name = "torch-static"
    aliases = ("torch-static-eager", "torch-ptq")
    paper = "Jacob et al. 2018, arXiv:1712.05877; Krishnamoorthi 2018, arXiv:1806.08342; torch.ao eager mode"
    description = ("PyTorch static PTQ, eager mode (automatic FloatFunctional/stub placement and fusion, "
                   "prepare/convert), real int8 kernels; torch>=2.4,<2.14.")
    Config = TorchStaticConfig
    capabilities = _STATIC_CAPS

    @classmethod
    def apply_scheme(cls, config, scheme):
        return _static_scheme(cls, config, scheme)

    @classmethod
    def availability(cls):
        return torch_ao_api("eager")

    def _prepare(self, model: nn.Module, plan) -> nn.Module:
        cfg = self.config
        return prepare_eager(self.name, model, cfg.qconfig(), cfg.engine, qat=False, fuse=cfg.fuse)

    def _convert(self, model: nn.Module) -> nn.Module:
        return convert_eager(self.name, model, self.config.engine, qat=False)


class TorchFXQuantizer(PluginQuantizer):
    """FX graph-mode static PTQ (``prepare_fx``/``convert_fx`` with a ``QConfigMapping`` and the engine's
    ``BackendConfig``): symbolic tracing finds functional ops (residual adds, ``torch.cat``) and fusions
    itself, so models need no edits. Same affine formula as :class:`TorchStaticQuantizer`."""

    name = "torch-fx"
    aliases = ("torch-static-fx",)
    paper = "Jacob et al. 2018, arXiv:1712.05877; torch.ao FX graph mode quantization"
    description = ("PyTorch static PTQ, FX graph mode (prepare_fx/convert_fx; residual adds quantized), "
                   "real int8 kernels; torch>=2.4,<2.14.")
    Config = TorchStaticConfig
    capabilities = _STATIC_CAPS

    @classmethod
    def apply_scheme(cls, config, scheme):
        return _static_scheme(cls, config, scheme)

    @classmethod
    def availability(cls):
        return torch_ao_api("fx")

    def _qconfig_mapping(self):
        from torch.ao.quantization import get_default_qconfig_mapping

        # torch's default mapping for the engine (fixed qparams for sigmoid/tanh, per-tensor weights for
        # transposed convs, float LayerNorm weights) with this config's QConfig as the global one.
        mapping = get_default_qconfig_mapping(self.config.engine)
        return mapping.set_global(self.config.qconfig())

    def _backend_config(self):
        from torch.ao.quantization import backend_config as bc

        # The native config (prepare_fx's documented default) for x86/fbgemm/onednn; qnnpack's own config
        # (the dtypes its kernels accept). Not get_onednn_backend_config: its conv+add fusion emits
        # quantized::conv2d_add, whose kernel is registered for the x86 engine only ("Didn't find engine
        # for operation quantized::conv2d_add.X86" under onednn, torch 2.13).
        if self.config.engine == "qnnpack":
            return bc.get_qnnpack_backend_config()
        return bc.get_native_backend_config()

    def _prepare(self, model: nn.Module, plan) -> nn.Module:
        from torch.ao.quantization.quantize_fx import prepare_fx

        require_layers(model, _CONV_LINEAR, self.name, "Linear/Conv layer")
        model.eval()
        try:  # symbolic tracing first, so that a failure names the construct in forward()
            torch.fx.symbolic_trace(model)
        except Exception as exc:
            raise UnsupportedError(f"{self.name}: torch.fx cannot trace the model: {describe_trace_failure(exc)}; "
                                   "use 'torch-static' (eager), 'torch-dynamic' or 'torchao-pt2e' "
                                   "(torch.export)") from exc
        with engine_scope(self.config.engine), torch_ao_calls(), \
                translated(self.name, "prepare_fx", "use 'torch-static' (eager) or 'torch-dynamic'"):
            # example_inputs only feed standalone-module configs, which this method does not use.
            return prepare_fx(model, self._qconfig_mapping(), example_inputs=(),
                              backend_config=self._backend_config())

    def _convert(self, model: nn.Module) -> nn.Module:
        from torch.ao.quantization.quantize_fx import convert_fx

        with engine_scope(self.config.engine), torch_ao_calls(), \
                translated(self.name, "convert_fx", "use 'torch-static' (eager) or 'torch-dynamic'"):
            out = convert_fx(model, backend_config=self._backend_config())
        leaves = {name: (f"torch.fx does not trace into {type(mod).__name__} (a torch.nn leaf module), so FX mode "
                         "leaves all of it float; use 'torch-static' (eager), which quantizes its attention, "
                         "Linear and LayerNorm layers, or 'torch-dynamic'")
                  for name, mod in out.named_modules() if type(mod) in _FX_OPAQUE}
        leaves = {n: r for n, r in leaves.items() if not any(n.startswith(o + ".") for o in leaves)}
        record_float_layers(out, out, _fx_float_reason, leaves)
        return _finish(out, self.name, self.config.engine)


#: torch.nn modules that hold quantizable layers but that torch.fx keeps as leaves (their forward is opaque).
_FX_OPAQUE = (nn.TransformerEncoder, nn.TransformerEncoderLayer, nn.TransformerDecoder, nn.TransformerDecoderLayer,
              nn.Transformer)


def _fx_float_reason(mod: nn.Module) -> str:
    if isinstance(mod, nn.LSTM):
        return ("torch.ao's FX mode quantizes LSTM only as a custom module called with explicit (h0, c0) "
                "(prepare_custom_config), not with the default QConfigMapping; use 'torch-static' or 'torch-dynamic'")
    if isinstance(mod, nn.MultiheadAttention):
        return ("torch.ao's FX mode has no MultiheadAttention pattern (its custom-module path fails on the "
                "attention's tuple output); use 'torch-static' (eager) or 'torch-dynamic'")
    return f"torch.ao's FX mode has no int8 pattern for {type(mod).__name__} in the engine's BackendConfig"
