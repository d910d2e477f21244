"""Backends `torch-x86`, `torch-onednn`, `torch-qnnpack`: torch.ao int8 models on that engine's CPU kernels.

A quantized Linear/Conv holds its weights *packed* for the engine active when it was built (``convert``),
and the packed object carries the kernel that runs it. So ``lower`` re-packs every int8 weight under this
backend's engine (the int8 values and qparams are unchanged: only their memory layout changes) and
returns a module that sets ``torch.backends.quantized.engine`` around each forward. Activation qparams
were fixed at prepare time: a model calibrated for x86 (``reduce_range``, 7-bit activations) runs on
qnnpack unchanged, just with one bit of activation resolution unused.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from torch import nn

from quantzoo.backends import Backend
from quantzoo.errors import UnsupportedError

from ._compat import engine_available, engine_scope, torch_ao_calls
from .base import count_quantized


def repack(model: nn.Module, engine: str) -> int:
    """Re-pack every torch.ao int8 weight of ``model`` (in place) for ``engine``; returns how many."""
    import torch.ao.nn.quantized as nnq
    from torch.ao.nn.quantized.dynamic.modules.rnn import RNNBase, RNNCellBase
    from torch.ao.nn.quantized.modules.linear import LinearPackedParams

    n = 0
    with engine_scope(engine), torch_ao_calls():
        for mod in model.modules():
            if isinstance(mod, LinearPackedParams):  # static and dynamic Linear
                if mod.dtype == torch.float16 and engine not in ("x86", "fbgemm"):
                    raise UnsupportedError(f"engine {engine!r} has no float16 dynamic Linear kernel; use "
                                           "torch-x86 or dtype='qint8'")
                mod.set_weight_bias(*mod._weight_bias())
            elif isinstance(mod, (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d)):
                mod.set_weight_bias(mod.weight(), mod.bias())
            elif isinstance(mod, RNNBase):  # dynamic LSTM/GRU: {"weight": {...}, "bias": {...}} -> flat dict
                wb = mod._weight_bias()
                mod.set_weight_bias({**wb["weight"], **wb["bias"]})
            elif isinstance(mod, RNNCellBase):  # dynamic cells take the nested dict as it comes
                mod.set_weight_bias(mod._weight_bias())
            else:
                continue
            n += 1
    return n


class EngineModule(nn.Module):
    """Runs a converted int8 model with ``torch.backends.quantized.engine`` set to ``engine``."""

    def __init__(self, model: nn.Module, engine: str):
        super().__init__()
        self.model = model
        self.engine = engine

    def forward(self, *args, **kwargs):
        with engine_scope(self.engine):
            return self.model(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"engine={self.engine!r}"


class TorchEngineBackend(Backend):
    """Shared logic of the three engines; subclasses set ``engine`` and the spec rules."""

    real_integer = True
    engine: ClassVar[str] = ""

    def is_available(self):
        return engine_available(self.engine)

    def lower(self, model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
        ok, why = self.is_available()
        if not ok:
            raise UnsupportedError(f"{self.name}: {why}")
        if count_quantized(model) == 0:
            raise UnsupportedError(f"{self.name} runs torch.ao int8 models (from torch-static, torch-fx, "
                                   "torch-qat or torch-dynamic); this model has no int8 layer")
        lowered = copy.deepcopy(model)
        if getattr(model, "_quantzoo_engine", None) != self.engine:
            repack(lowered, self.engine)
        lowered.eval()
        return EngineModule(lowered, self.engine).eval()


class TorchX86Backend(TorchEngineBackend):
    name = "torch-x86"
    aliases = ("torch-fbgemm",)
    engine = "x86"
    description = ("torch.ao int8 on the x86 engine (fbgemm for Linear/most convs, oneDNN where faster): "
                   "qint8 symmetric weights per-tensor or per-channel, quint8 per-tensor activations; the "
                   "default qconfig uses 7-bit activations (reduce_range) against u8*s8 int16 saturation in "
                   "VPMADDUBSW on non-VNNI CPUs (MQBench's FBGEMM constraint).")


class TorchOneDNNBackend(TorchEngineBackend):
    name = "torch-onednn"
    engine = "onednn"
    description = ("torch.ao int8 on oneDNN (VNNI/AMX GEMM): qint8 symmetric weights (zero-point 0), "
                   "per-tensor or per-channel; quint8 per-tensor activations, full 8-bit range.")


class TorchQNNPACKBackend(TorchEngineBackend):
    name = "torch-qnnpack"
    engine = "qnnpack"
    description = ("torch.ao int8 on QNNPACK (ARM-oriented; on x86 it runs far slower than fp32): "
                   "qint8 weights per-tensor or per-channel, quint8 per-tensor activations, no reduce_range.")


BACKENDS = [TorchX86Backend, TorchOneDNNBackend, TorchQNNPACKBackend]
