"""Uniform affine quantization: qparams, quantize, dequantize and fake-quantize with a clipped STE.

Conventions follow PyTorch (and Jacob et al. 2018, arXiv:1712.05877, eq. 1 ``r = S (q - Z)``):

    q  = clamp(round(x * (1/S)) + Z, qmin, qmax)
    x̂ = (q - Z) * S

``1/S`` is computed once in float32 and rounding is applied before adding ``Z``, exactly as in
``torch.fake_quantize_per_tensor_affine``. :func:`fake_quantize` calls the fused torch kernels wherever
they apply (per-tensor and per-channel, round to nearest even, any width 2..16); the reference autograd
path below serves the rest (per-group, stochastic rounding) and gives bit-for-bit the same values and
gradients as the fused kernels where both apply (tests/test_math_uniform.py forces it to prove that).

Shapes of ``scale``/``zero_point`` by granularity: per_tensor a scalar tensor; per_channel a vector of
length ``x.shape[axis]``; per_group ``x.shape`` with ``axis`` replaced by the number of groups.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, DataError
from ..spec import QuantSpec


def _axis(spec: QuantSpec, x: torch.Tensor) -> int:
    if not x.dim():
        return 0
    if not -x.dim() <= spec.axis < x.dim():
        raise ConfigError(
            f"axis={spec.axis} is out of range for a tensor of shape {tuple(x.shape)}: "
            f"set axis between {-x.dim()} and {x.dim() - 1}"
        )
    return spec.axis % x.dim()


def _group_size(spec: QuantSpec, x: torch.Tensor) -> int:
    n, g = x.shape[_axis(spec, x)], spec.group_size
    if n % g:
        raise ConfigError(
            f"per_group: dimension {spec.axis} has {n} elements, not a multiple of group_size={g}: "
            f"choose a group_size that divides {n}"
        )
    return g


def reduction_rows(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x`` as a 2-D tensor with one row per quantization parameter, and the shape of those parameters.

    per_tensor: one row, shape ``()``; per_channel: ``x.shape[axis]`` rows, shape ``(C,)``; per_group: one
    row per group, shape ``x.shape`` with ``axis`` replaced by the number of groups. A statistic reduced over
    the rows' last dimension and reshaped to ``shape`` is therefore what :func:`expand_qparam` broadcasts.
    """
    if spec.granularity == "per_tensor" or x.dim() == 0:
        return x.reshape(1, -1), ()
    axis = _axis(spec, x)
    if spec.granularity == "per_channel":
        return x.movedim(axis, 0).reshape(x.shape[axis], -1), (x.shape[axis],)
    g = _group_size(spec, x)
    groups = x.unflatten(axis, (-1, g)).movedim(axis + 1, -1)
    shape = tuple(groups.shape[:-1])
    return groups.reshape(-1, g), shape


def reduce_min_max(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of ``x`` at the spec's granularity (the statistic every min-max observer starts from)."""
    x = x.detach()
    if x.dtype != torch.float32:
        x = x.float()
    if spec.granularity == "per_tensor" or x.dim() == 0:
        return torch.aminmax(x)
    rows, shape = reduction_rows(x, spec)
    lo, hi = torch.aminmax(rows, dim=1)
    return lo.reshape(shape), hi.reshape(shape)


def expand_qparam(p: torch.Tensor, x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Broadcast a per-tensor/per-channel/per-group parameter against ``x``."""
    if p.dim() == 0 or spec.granularity == "per_tensor":
        return p
    axis = _axis(spec, x)
    if spec.granularity == "per_channel":
        if p.numel() != x.shape[axis]:
            raise ConfigError(
                f"per_channel: {p.numel()} qparams for {x.shape[axis]} channels along axis {spec.axis} of a "
                f"tensor of shape {tuple(x.shape)}: compute the qparams on this tensor (or fix axis)"
            )
        shape = [1] * x.dim()
        shape[axis] = -1
        return p.reshape(shape)
    g = _group_size(spec, x)
    want = list(x.shape)
    want[axis] //= g
    if list(p.shape) != want:
        raise ConfigError(
            f"per_group: qparams of shape {tuple(p.shape)} do not match {tuple(want)} (tensor {tuple(x.shape)}, "
            f"axis={spec.axis}, group_size={g}): compute the qparams with reduce_min_max on this tensor"
        )
    return p.repeat_interleave(g, dim=axis)


def round_to_power_of_two(scale: torch.Tensor) -> torch.Tensor:
    """Round a scale up to the next power of two, ``2^ceil(log2 s)`` (Brevitas' POWER_OF_TWO with CeilSte).

    Rounding up keeps the observed range representable (no extra clipping).
    """
    return torch.exp2(torch.ceil(torch.log2(scale)))


def compute_qparams(
    min_val: torch.Tensor, max_val: torch.Tensor, spec: QuantSpec, eps: float = torch.finfo(torch.float32).eps
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero-point covering ``[min_val, max_val]`` (torch.ao's ``_calculate_qparams``).

    The range is first widened to include 0 (``min'=min(min,0)``, ``max'=max(max,0)``) so that zero is
    exactly representable (Jacob et al. 2018, §2.1).

    * asymmetric: ``S=(max'-min')/(qmax-qmin)``, ``Z=clamp(qmin-round(min'/S), qmin, qmax)``;
    * symmetric, signed: ``S=max(-min',max')/((qmax-qmin)/2)``, ``Z=0``;
    * symmetric, unsigned: ``S=max'/qmax``, ``Z=0`` (the range of a ReLU output, as Brevitas' Uint8).

    ``S`` is at least ``eps``; with ``scale_type='power_of_two'`` it is rounded up to ``2^ceil(log2 S)``
    and ``Z`` is recomputed for it.
    """
    if spec.dtype != "int":
        raise ConfigError(f"compute_qparams is for dtype 'int', not {spec.dtype!r}: use binarize/ternary_codes")
    min_val = torch.as_tensor(min_val, dtype=torch.float32)
    max_val = torch.as_tensor(max_val, dtype=torch.float32)
    if not (torch.isfinite(min_val).all() and torch.isfinite(max_val).all()):
        raise DataError("compute_qparams: the observed range contains NaN or Inf; check the input data")
    zero = torch.zeros_like(min_val)
    lo, hi = torch.minimum(min_val, zero), torch.maximum(max_val, zero)
    qmin, qmax = spec.qmin, spec.qmax
    if spec.symmetric:
        if spec.signed:
            scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
        else:
            scale = hi / qmax
        scale = torch.clamp(scale, min=eps)
        if spec.scale_type == "power_of_two":
            scale = round_to_power_of_two(scale)
        zp = torch.zeros_like(scale, dtype=torch.int32)
        return scale, zp
    scale = torch.clamp((hi - lo) / float(qmax - qmin), min=eps)
    if spec.scale_type == "power_of_two":
        scale = round_to_power_of_two(scale)
    zp = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax).to(torch.int32)
    return scale, zp


def _rounded(x: torch.Tensor, scale: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``round(x * (1/S))`` with the spec's rounding, in float32 (the integer part before ``+Z``)."""
    y = x * (1.0 / scale)  # a fresh tensor: the in-place steps below save allocations, not values
    if spec.rounding == "stochastic":
        # Gupta et al. 2015 (arXiv:1502.02551) eq. 3: round down with probability 1-(y-floor y).
        return y.add_(torch.rand_like(y)).floor_()
    return y.round_()  # round half to even, as torch's nearbyint


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Integer codes ``clamp(round(x/S)+Z, qmin, qmax)`` as int32 (no gradient)."""
    x = x.detach().float()
    s = expand_qparam(scale.float(), x, spec)
    z = expand_qparam(zero_point, x, spec)
    q = _rounded(x, s, spec) + z
    return torch.clamp(q, spec.qmin, spec.qmax).to(torch.int32)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Real values ``(q - Z) * S`` of integer codes."""
    s = expand_qparam(scale.float(), q, spec)
    z = expand_qparam(zero_point, q, spec)
    return (q.float() - z) * s


class _FakeQuantSTE(torch.autograd.Function):
    """Reference fake-quantize with the clipped straight-through estimator.

    Forward: ``(clamp(round(x/S)+Z, qmin, qmax) - Z) * S``. Backward: the identity where the unclamped code
    lies inside ``[qmin, qmax]`` and zero outside (Bengio et al. 2013, arXiv:1308.3432; the clipped form of
    Hubara et al. 2016, arXiv:1609.07061 eq. 5), the same mask as torch's fused kernel.
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, spec):
        s = expand_qparam(scale, x, spec)
        z = expand_qparam(zero_point, x, spec)
        q = _rounded(x, s, spec).add_(z)
        mask = (q >= spec.qmin) & (q <= spec.qmax)
        ctx.save_for_backward(mask)
        return q.clamp_(spec.qmin, spec.qmax).sub_(z).mul_(s)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None


def uses_fused_kernel(spec: QuantSpec) -> bool:
    """True where torch's fused fake-quantize kernel computes exactly what the spec asks."""
    return spec.dtype == "int" and spec.rounding == "nearest_even" and spec.granularity != "per_group"


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Quantize then dequantize ``x`` with a clipped STE gradient for ``x`` (scale and zero-point are constants).

    Uses ``torch.fake_quantize_per_tensor_affine`` / ``torch.fake_quantize_per_channel_affine`` where they
    apply (bit-for-bit the same result as the reference path, see tests/test_math_uniform.py). Inputs of
    another floating dtype are computed in float32 and cast back.
    """
    if spec.dtype != "int":
        raise ConfigError(f"fake_quantize is for dtype 'int'; use binarize/ternary_codes for {spec.dtype!r}")
    in_dtype = x.dtype
    xf = x if in_dtype == torch.float32 else x.float()
    qmin, qmax = spec.qmin, spec.qmax
    if spec.rounding == "nearest_even" and spec.granularity != "per_group" and xf.dim() > 0:
        if spec.granularity == "per_tensor" or scale.dim() == 0:
            if xf.device.type == "cpu" and scale.device.type == "cpu":
                # The scalar overload: the same kernel arithmetic (float32 scale, 1/S in float32) with less
                # dispatch than the tensor-qparams overload; .item() is free on CPU (no device sync).
                out = torch.fake_quantize_per_tensor_affine(xf, float(scale), int(zero_point), qmin, qmax)
            else:
                s = scale.detach().to(device=xf.device, dtype=torch.float32).reshape(())
                z = zero_point.detach().to(device=xf.device, dtype=torch.int32).reshape(())
                out = torch.fake_quantize_per_tensor_affine(xf, s, z, qmin, qmax)
        else:
            axis = _axis(spec, xf)
            n = xf.shape[axis]
            if scale.numel() != n or zero_point.numel() != n:
                for p in (scale, zero_point):  # raises the ConfigError naming the mismatch
                    expand_qparam(p.reshape(-1), xf, spec)
            # detach() is a view and .to() returns self when nothing changes: no copies in the common case.
            s = scale.detach().to(device=xf.device, dtype=torch.float32)
            z = zero_point.detach().to(device=xf.device, dtype=torch.int32)
            out = torch.fake_quantize_per_channel_affine(xf, s, z, axis, qmin, qmax)
    else:
        s = scale.detach().to(device=xf.device, dtype=torch.float32)
        # Integer zero-points, as the fused kernels take them (a float zero-point is truncated alike).
        z = zero_point.detach().to(device=xf.device, dtype=torch.int32).float()
        out = _FakeQuantSTE.apply(xf, s, z, spec)
    return out if in_dtype == torch.float32 else out.to(in_dtype)
