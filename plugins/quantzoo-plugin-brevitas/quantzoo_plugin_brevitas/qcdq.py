"""The QCDQ operator: fake-quantization in PyTorch that exports as ``QuantizeLinear → Clip → DequantizeLinear``
(Brevitas ``export_onnx_qcdq``). The layers use it in export mode; :mod:`.export` drives the export."""

from __future__ import annotations

import torch

from quantzoo.errors import UnsupportedError
from quantzoo.math import fake_quantize
from quantzoo.spec import QuantSpec


class _QCDQ(torch.autograd.Function):
    """Fake-quantize in PyTorch; Q → Clip → DQ in ONNX."""

    @staticmethod
    def forward(ctx, x, scale, spec):
        return fake_quantize(x, scale, torch.zeros(scale.shape, dtype=torch.int32), spec)

    @staticmethod
    def symbolic(g, x, scale, spec):
        dtype = torch.int8 if spec.signed else torch.uint8
        full = (-128, 127) if spec.signed else (0, 255)
        n = 1
        for d in (scale.type().sizes() or []):
            n *= d
        zp_shape = [n] if spec.granularity == "per_channel" else []
        zp = g.op("Constant", value_t=torch.zeros(zp_shape, dtype=dtype))
        axis = spec.axis if spec.granularity == "per_channel" else 1
        q = g.op("QuantizeLinear", x, scale, zp, axis_i=axis)
        if (spec.qmin, spec.qmax) != full:
            lo = g.op("Constant", value_t=torch.tensor(spec.qmin, dtype=dtype))
            hi = g.op("Constant", value_t=torch.tensor(spec.qmax, dtype=dtype))
            q = g.op("Clip", q, lo, hi)
        return g.op("DequantizeLinear", q, scale, zp, axis_i=axis)


def qcdq(x: torch.Tensor, scale: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Fake-quantize ``x`` with ``scale`` (zero-point 0) in a form that exports as Q → Clip → DQ."""
    if spec.bits > 8:
        raise UnsupportedError(f"QCDQ export supports at most 8 bits, not {spec.bits}; quantize to <= 8 bits")
    return _QCDQ.apply(x, scale.detach().float(), spec)
