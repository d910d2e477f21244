"""`torch-dynamic`: post-training dynamic quantization with ``torch.ao.quantization.quantize_dynamic``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from quantzoo.quantizer import Capabilities

from ._compat import engine_scope, torch_ao_api, torch_ao_calls
from .base import EngineConfig, PluginQuantizer, count_quantized, require_layers

DynamicModule = Literal["Linear", "LSTM", "GRU", "LSTMCell", "GRUCell", "RNNCell"]
_TYPES = {"Linear": nn.Linear, "LSTM": nn.LSTM, "GRU": nn.GRU, "LSTMCell": nn.LSTMCell,
          "GRUCell": nn.GRUCell, "RNNCell": nn.RNNCell}


class TorchDynamicConfig(EngineConfig):
    """``dtype``: qint8 weights with activations quantized per batch at run time, or float16 weights.
    ``module_types``: the layers to quantize (torch's qint8 default set). ``weight_granularity``:
    per-tensor (torch's ``default_dynamic_qconfig``) or per-channel (``per_channel_dynamic_qconfig``,
    Linear only; RNNs stay per-tensor)."""

    dtype: Literal["qint8", "float16"] = "qint8"
    module_types: tuple[DynamicModule, ...] = ("Linear", "LSTM", "GRU", "LSTMCell", "GRUCell", "RNNCell")
    weight_granularity: Literal["per_tensor", "per_channel"] = "per_tensor"


class TorchDynamicQuantizer(PluginQuantizer):
    """Dynamic PTQ: weights become int8 once; each batch's activations are quantized on the fly from their
    own min/max (Krishnamoorthi 2018, arXiv:1806.08342 §3.1 "dynamic quantization"; scale and zero-point
    by torch.ao's affine rule ``S=(max'-min')/(qmax-qmin)``, ``Z=qmin-round(min'/S)``, Jacob et al. 2018
    eq. 1). Runs on the int8 GEMM of the chosen engine. No calibration."""

    name = "torch-dynamic"
    aliases = ("torch-dynamic-ptq",)
    paper = "Krishnamoorthi 2018, arXiv:1806.08342; PyTorch torch.ao.quantization.quantize_dynamic"
    description = ("PyTorch dynamic PTQ (quantize_dynamic): int8 Linear/LSTM/GRU weights, per-batch int8 "
                   "activations, real int8 kernels; torch>=2.4,<2.14.")
    Config = TorchDynamicConfig
    capabilities = Capabilities(ptq=True, weight_bits=(8,), activation_bits=(8,), needs_calibration=False,
                                module_types=("Linear", "LSTM", "GRU", "LSTMCell", "GRUCell", "RNNCell"))

    @classmethod
    def availability(cls):
        return torch_ao_api("dynamic")

    @classmethod
    def bits_of_config(cls, config):
        # float16 weights with float activations; qint8 quantizes each batch's activations to int8
        return (16, None) if config.dtype == "float16" else (8, 8)

    @classmethod
    def conformance_model(cls):
        """Dynamic quantization covers Linear and RNN layers only, so the kit gets an MLP."""
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        return model, torch.randn(8, 1, 4, 4)

    def _types(self) -> tuple[type, ...]:
        return tuple(_TYPES[t] for t in self.config.module_types)

    def _prepare(self, model: nn.Module, plan) -> nn.Module:
        require_layers(model, self._types(), self.name, "/".join(self.config.module_types))
        return model.eval()

    def _convert(self, model: nn.Module) -> nn.Module:
        from torch.ao.quantization import (
            default_dynamic_qconfig,
            float16_dynamic_qconfig,
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )

        cfg = self.config
        if cfg.dtype == "float16":
            spec = {t: float16_dynamic_qconfig for t in self._types()}
        else:
            spec = {t: default_dynamic_qconfig for t in self._types()}
            if cfg.weight_granularity == "per_channel" and nn.Linear in spec:
                spec[nn.Linear] = per_channel_dynamic_qconfig
        dtype = torch.float16 if cfg.dtype == "float16" else torch.qint8
        with engine_scope(cfg.engine), torch_ao_calls():
            quantize_dynamic(model, qconfig_spec=spec, dtype=dtype, inplace=True)
        if count_quantized(model) == 0:  # never hand back a float model labelled as quantized
            from quantzoo.errors import UnsupportedError

            raise UnsupportedError(f"{self.name}: no layer was quantized")
        model._quantzoo_engine = cfg.engine
        return model
