"""`torch-static` (eager mode) and `torch-fx` (FX graph mode): post-training static quantization.

Both follow torch.ao's documented flow exactly (``qconfig`` → ``prepare`` → calibrate → ``convert``), so the
result equals what a user writing that flow by hand gets (tests/test_faithful.py checks ``torch.equal``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator
from torch import nn

from quantzoo.errors import UnsupportedError
from quantzoo.quantizer import Capabilities

from ._compat import engine_scope, torch_ao_api, torch_ao_calls
from .base import EngineConfig, PluginQuantizer, count_quantized, require_layers
from .fusion import check_eager_static, find_fusion_groups
from .observers import build_qconfig, check_observer_name


class TorchStaticConfig(EngineConfig):
    """Observers and weight granularity of the QConfig.

    ``activation_observer``: torch's ``histogram`` (default, L2-minimising range), ``minmax``,
    ``moving_average_minmax``, or ``quantzoo:<name>`` for a registered quantzoo observer.
    ``weight_observer``: ``minmax`` (default), ``moving_average_minmax``, ``histogram`` (per-tensor only),
    or ``quantzoo:<name>``. ``reduce_range``: 7-bit activations; None = the engine's default (True for
    x86/fbgemm). ``fuse``: fuse Conv-BN(-ReLU)/Linear(-ReLU) before observing (torch's recommendation).
    """

    weight_granularity: Literal["per_channel", "per_tensor"] = "per_channel"
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

    def qconfig(self):
        return build_qconfig(self.engine, self.weight_granularity == "per_channel", self.activation_observer,
                             self.weight_observer, self.reduce_range)


_STATIC_CAPS = Capabilities(ptq=True, weight_bits=(8,), activation_bits=(8,), needs_calibration=True,
                            module_types=("Linear", "Conv1d", "Conv2d", "Conv3d"))


def _finish(model: nn.Module, method: str, engine: str) -> nn.Module:
    if count_quantized(model) == 0:
        raise UnsupportedError(f"{method}: convert produced no int8 layer; the model would run in float")
    model._quantzoo_engine = engine
    return model


class TorchStaticQuantizer(PluginQuantizer):
    """Eager-mode static PTQ: the plugin wraps the model in ``QuantWrapper`` (QuantStub on the input,
    DeQuantStub on the output), fuses the Conv-BN(-ReLU)/Linear(-ReLU) chains it finds by tracing, attaches
    the QConfig's observers, and after calibration ``convert`` swaps in int8 modules. Quantization is
    affine, ``r = S(q - Z)`` (Jacob et al. 2018, arXiv:1712.05877 eq. 1), weights symmetric int8."""

    name = "torch-static"
    aliases = ("torch-static-eager", "torch-ptq")
    paper = "Jacob et al. 2018, arXiv:1712.05877; Krishnamoorthi 2018, arXiv:1806.08342; torch.ao eager mode"
    description = ("PyTorch static PTQ, eager mode (QuantWrapper + automatic fusion + prepare/convert), "
                   "real int8 kernels; torch>=2.4,<2.14.")
    Config = TorchStaticConfig
    capabilities = _STATIC_CAPS

    @classmethod
    def availability(cls):
        return torch_ao_api("eager")

    def _prepare(self, model: nn.Module, plan) -> nn.Module:
        from torch.ao.quantization import QuantWrapper, fuse_modules, prepare

        cfg = self.config
        require_layers(model, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d), self.name, "Linear/Conv layer")
        check_eager_static(model, self.name)
        model.eval()  # Conv-BN fusion for inference folds the running statistics (needs eval mode)
        groups = find_fusion_groups(model) if cfg.fuse else []
        with engine_scope(cfg.engine), torch_ao_calls():
            if groups:
                model = fuse_modules(model, groups, inplace=True)
            model.qconfig = cfg.qconfig()
            wrapped = QuantWrapper(model)
            prepare(wrapped, inplace=True)
        wrapped._quantzoo_fused = groups
        return wrapped

    def _convert(self, model: nn.Module) -> nn.Module:
        from torch.ao.quantization import convert

        with engine_scope(self.config.engine), torch_ao_calls():
            convert(model, inplace=True)
        return _finish(model, self.name, self.config.engine)


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

        require_layers(model, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d), self.name, "Linear/Conv layer")
        model.eval()
        with engine_scope(self.config.engine), torch_ao_calls():
            try:
                # example_inputs only feed standalone-module configs, which this method does not use.
                return prepare_fx(model, self._qconfig_mapping(), example_inputs=(),
                                  backend_config=self._backend_config())
            except Exception as exc:  # symbolic tracing failed (data-dependent control flow, ...)
                if "symbolically traced" in str(exc) or isinstance(exc, (TypeError, NotImplementedError)):
                    raise UnsupportedError(f"{self.name}: torch.fx cannot trace the model ({exc}); use "
                                           "'torch-static' (eager) or 'torchao-pt2e' (torch.export)") from exc
                raise

    def _convert(self, model: nn.Module) -> nn.Module:
        from torch.ao.quantization.quantize_fx import convert_fx

        with engine_scope(self.config.engine), torch_ao_calls():
            out = convert_fx(model, backend_config=self._backend_config())
        return _finish(out, self.name, self.config.engine)
