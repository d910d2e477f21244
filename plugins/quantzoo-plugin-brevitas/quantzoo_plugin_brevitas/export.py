"""ONNX export in QCDQ form: ``QuantizeLinear → Clip → DequantizeLinear`` (Brevitas ``export_onnx_qcdq``).

Each quantizer of a converted model becomes ``QuantizeLinear(x, s, z)`` to int8/uint8, a ``Clip`` to the
narrower range where the format is not the full 8-bit one (widths below 8, narrow range, ternary), and
``DequantizeLinear``. Weights are exported as float initializers passed through the same three nodes (exact,
since baked weights already lie on the grid). Per-channel scales need opset ≥ 13 (``axis`` of the Q/DQ
nodes). At most 8 bits: QCDQ has no wider integer type that every runtime runs. The graph computes in float
(onnxruntime dequantizes before each Gemm/Conv), which is why the ``onnxruntime`` backend reports
``real_integer=False`` (Brevitas #834).

The export uses torch's TorchScript exporter (``dynamo=False``) with a custom ``symbolic`` for the QCDQ
function, as Brevitas does.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from quantzoo.errors import UnsupportedError

from .layers import _BrevitasComputeMixin
from .qcdq import qcdq
from .tensor_quant import TensorQuant, WeightQuant

__all__ = ["MIN_OPSET", "export_mode", "export_onnx_qcdq", "qcdq"]

MIN_OPSET = 13


@contextlib.contextmanager
def export_mode(model: nn.Module):
    """Switch every Brevitas-style module of ``model`` to emit QCDQ nodes while inside the block."""

    mods = [m for m in model.modules() if hasattr(m, "export_mode")]
    owners = {id(m.weight_quantizer): m for m in model.modules()
              if isinstance(m, _BrevitasComputeMixin) and m.weight_quantizer is not None}
    with torch.no_grad():
        for m in mods:
            if isinstance(m, WeightQuant):
                owner = owners.get(id(m))
                m.export_scale = m.qparams(owner.weight)[0].detach().clone() if owner is not None else None
            elif isinstance(m, TensorQuant):
                try:
                    m.export_scale = m.qparams()[0].detach().clone()
                except ValueError as exc:
                    raise UnsupportedError(f"cannot export: {exc} (calibrate or train the model first)") from exc
    for m in mods:
        m.export_mode = True
    try:
        yield model
    finally:
        for m in mods:
            m.export_mode = False
            if isinstance(m, TensorQuant):
                m.export_scale = None


def export_onnx_qcdq(model: nn.Module, example_input: torch.Tensor, path: str | Path | None = None,
                     opset_version: int = MIN_OPSET) -> bytes:
    """Export a converted model to ONNX QCDQ; returns the bytes (and writes ``path`` if given).

    Raises :class:`UnsupportedError` for opset < 13 or a model the exporter cannot trace.
    """
    if opset_version < MIN_OPSET:
        raise UnsupportedError(f"QCDQ export needs opset_version >= {MIN_OPSET} (per-channel QuantizeLinear), "
                               f"got {opset_version}")
    model = model.eval()
    buf = io.BytesIO()
    try:
        with export_mode(model), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example_input,), buf, dynamo=False, opset_version=opset_version,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    except UnsupportedError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise UnsupportedError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
