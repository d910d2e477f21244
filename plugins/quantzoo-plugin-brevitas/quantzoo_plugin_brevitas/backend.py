"""The ``onnxruntime`` backend: export a converted model to ONNX QCDQ and run it in an ORT session."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from quantzoo.backends import Backend
from quantzoo.errors import UnsupportedError
from quantzoo.spec import QuantSpec

from .export import export_onnx_qcdq


class OrtModule(nn.Module):
    """Runs an ONNX model in onnxruntime (CPU, one thread) on float32 inputs; outputs torch tensors."""

    def __init__(self, onnx_bytes: bytes):
        super().__init__()
        self.onnx_bytes = onnx_bytes
        self._session = None

    def _sess(self):
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self._session = ort.InferenceSession(self.onnx_bytes, opts, providers=["CPUExecutionProvider"])
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sess = self._sess()
        out = sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(np.asarray(out))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None
        return state


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on QCDQ graphs. ORT dequantizes before each float Gemm/Conv, so this is a float
    simulation too (``real_integer=False``); the size is the ONNX file's (weights stored as float32)."""

    name = "onnxruntime"
    aliases = ("ort",)
    description = "ONNX QCDQ export run in onnxruntime (float compute; checks the exported graph)."
    real_integer = False

    def is_available(self):
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return False, f"onnxruntime backend needs onnx and onnxruntime ({exc}); pip install onnx onnxruntime"
        return True, ""

    def check_spec(self, weight: QuantSpec | None, activation: QuantSpec | None) -> list[str]:
        problems = []
        for role, spec in (("weight", weight), ("activation", activation)):
            if spec is not None and spec.bits > 8:
                problems.append(f"{role} has {spec.bits} bits; QCDQ (int8/uint8 QuantizeLinear) holds at most 8")
            if spec is not None and spec.dtype == "int" and not spec.symmetric and spec.granularity == "per_group":
                problems.append(f"{role} is per-group; QuantizeLinear has per-tensor and per-axis scales only")
        return problems

    def lower(self, model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
        ok, why = self.is_available()
        if not ok:
            raise UnsupportedError(why)
        if example_input is None:
            raise UnsupportedError("the onnxruntime backend needs example_input to trace the model for export")
        return OrtModule(export_onnx_qcdq(model, example_input[:1]))

    def model_size_bytes(self, model: nn.Module) -> int:
        if isinstance(model, OrtModule):
            return len(model.onnx_bytes)
        return super().model_size_bytes(model)
