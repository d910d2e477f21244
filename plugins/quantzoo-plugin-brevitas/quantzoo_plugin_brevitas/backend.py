"""The ``onnxruntime`` backend: export a converted model to ONNX QCDQ and run exactly that graph in onnxruntime.

The session runs with ``ORT_DISABLE_ALL`` graph optimizations, so every node executes as written:
``DequantizeLinear`` feeds a float ``Conv``/``Gemm`` and the result goes through ``QuantizeLinear → Clip →
DequantizeLinear``, which is what the PyTorch model computes. onnxruntime's default level fuses Q/DQ pairs into
``QLinearConv``/``QLinearMatMul`` instead; on x86-64 CPUs without VNNI their u8s8 kernels add pairs of
``uint8·int8`` products in int16 with saturation (``vpmaddubsw``), so an 8-bit signed input (shifted to uint8)
times a full 8-bit weight overflows: 53 LSB off on the plugin's test CNN at W8, 1 LSB with 7-bit weights
(``tests/test_export_ptq.py``). The graph is therefore checked as a float simulation (``real_integer=False``);
:attr:`OrtModule.ops` lists the operators the session ran.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from torch import nn

from quantzoo.backends import Backend
from quantzoo.errors import DataError, UnsupportedError
from quantzoo.spec import QuantSpec

from .export import export_onnx_qcdq

#: ONNX tensor types of the inputs we feed, as numpy dtypes.
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
              "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


class OrtModule(nn.Module):
    """Runs an ONNX model in onnxruntime (CPU, one thread, no graph optimizations); outputs torch tensors.

    Each input is given in the dtype the graph declares: float inputs are cast to it (float64 to float32),
    integer inputs (token ids) keep their integer type; a float tensor for an integer input is a DataError."""

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
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            try:
                self._session = ort.InferenceSession(self.onnx_bytes, opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind exception types
                raise UnsupportedError(f"onnxruntime cannot load the exported graph: {exc}") from exc
        return self._session

    @property
    def ops(self) -> Counter:
        """How many nodes of each operator type the session runs (the exported graph as is: no fusion)."""
        import onnx

        return Counter(n.op_type for n in onnx.load_from_string(self.onnx_bytes).graph.node)

    def _feed(self, spec, x) -> np.ndarray:
        want = _ORT_TYPES.get(spec.type)
        arr = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
        if want is None:
            return arr
        if np.issubdtype(want, np.integer) and not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"onnxruntime input {spec.name!r} takes {spec.type} (e.g. token ids), got {arr.dtype}; "
                            "pass an integer tensor")
        return arr.astype(want, copy=False)

    def forward(self, *inputs) -> torch.Tensor:
        sess = self._sess()
        specs = sess.get_inputs()
        if len(inputs) != len(specs):
            raise DataError(f"the exported graph takes {len(specs)} input(s) ({', '.join(s.name for s in specs)}), "
                            f"got {len(inputs)}")
        feed = {s.name: self._feed(s, x) for s, x in zip(specs, inputs)}
        try:
            out = sess.run(None, feed)[0]
        except Exception as exc:  # noqa: BLE001 - InvalidArgument, Fail, ... from onnxruntime's bindings
            shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in feed.items())
            raise DataError(f"onnxruntime rejected the input ({shapes}): {exc}; give inputs shaped like the "
                            "example input the model was lowered with") from exc
        return torch.from_numpy(np.asarray(out))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None
        return state


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on QCDQ graphs, run node by node as exported (no Q/DQ fusion into integer kernels), so it
    computes what the PyTorch QCDQ model computes: a float simulation (``real_integer=False``); the size is
    the ONNX file's (weights stored as float32)."""

    name = "onnxruntime"
    aliases = ("ort",)
    description = "ONNX QCDQ export run in onnxruntime as exported (float compute; checks the exported graph)."
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
