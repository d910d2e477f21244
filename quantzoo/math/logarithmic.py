"""Logarithmic (power-of-two-root) quantization: HiSilicon NNIE's GFPQ format.

An NNIE code is a sign plus an index ``q``; its value is ``sign(x)·2^((q+z)/S)`` with ``S`` steps per octave
(16 for the 8-bit format, 2048 for the 16-bit one) and ``z`` chosen so that the top code sits just above the
tensor's largest magnitude ``M0 = max|x|`` (the "anchor"). From nnieqat's open CUDA fallback
(aovoc/nnieqat-pytorch ``src/fake_quantize.cu``; docs/methods.md, NNIE), 8-bit:

    k = floor(16·log2 M0) + 1,  M = 2^(k/16)
    x > 0:  q = clamp(rint(16·log2(256·x/M)), 0, 127),  x̂ = (M/256)·2^(q/16)
    x < 0:  q = clamp(−rint(16·log2(−256·x/M)), −127, −1),  x̂ = −(M/256)·2^(−q/16)
    x̂ = 0  where  −M·2^(1/16−9) < x ≤ 2^((k−1)/16)·2^(1/16−9)

Writing ``M/256 = 2^((k−128)/16)`` gives the equivalent form ``x̂ = sign(x)·2^((q+z)/16)``,
``z = floor(16·log2 M0) − 127``, ``q = clamp(round(16·log2|x| − z), q_lo, 127)``, which is what is computed
here; ``q_lo = 0`` for positive and ``1`` for negative values (the negative codes are −127..−1), so the format
has 128 + 127 + 1 (zero) = 256 values. Each zero threshold is half the smallest level of its sign:
``2^(z/16)/2`` and ``2^((1+z)/16)/2``, exactly the CUDA code's two thresholds.

The 16-bit mode is the same construction with 2048 steps per octave and ``q ∈ [0, 32767]`` (``[1, 32767]``
for negatives; 16 octaves), ``z = floor(2048·log2 M0) − 32767``; its zero thresholds follow the 8-bit pattern
(half the smallest level of each sign). The anchor's 16-bit branch divides its zero threshold by 16 where 128
would be expected (probably a bug of nnieqat); that quirk is not reproduced.
"""

from __future__ import annotations

import torch

#: bits -> (steps per octave, largest index). The sign takes the remaining bit.
NNIE_FORMATS: dict[int, tuple[int, int]] = {8: (16, 127), 16: (2048, 32767)}


def _format(bits: int) -> tuple[int, int]:
    if bits not in NNIE_FORMATS:
        raise ValueError(f"NNIE logarithmic quantization has 8-bit and 16-bit formats, not bits={bits}")
    return NNIE_FORMATS[bits]


def log_anchor_exponent(max_abs: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """The offset ``z = floor(S·log2 M0) − qmax`` that anchors the top code at ``M0 = max|x|`` (float64)."""
    steps, qmax = _format(bits)
    m0 = torch.as_tensor(max_abs, dtype=torch.float64)
    return torch.floor(steps * torch.log2(m0)) - qmax


def log_quantize_codes(x: torch.Tensor, max_abs: torch.Tensor | float | None = None, bits: int = 8):
    """Signed NNIE codes of ``x``: returns ``(sign, q, z)`` with ``sign ∈ {−1, 0, +1}`` (0 where ``x̂ = 0``),
    ``q ∈ [0, qmax]`` (``[1, qmax]`` for negatives; int64) and the anchor offset ``z``; ``x̂ = sign·2^((q+z)/S)``.

    ``max_abs`` is the anchor ``M0`` (default ``max|x|``: nnieqat's per-tensor anchor; an activation hook passes
    its running maximum). Magnitudes above the anchor saturate at the top code. Computed in float64 so that
    ``16·log2`` lands on the same integer as the float32 CUDA ``rint`` for exact powers of two.
    """
    steps, qmax = _format(bits)
    xd = x.detach().to(torch.float64)
    if max_abs is None:
        max_abs = xd.abs().max() if xd.numel() else torch.tensor(0.0, dtype=torch.float64)
    m0 = torch.as_tensor(max_abs, dtype=torch.float64, device=xd.device)
    if not torch.isfinite(m0) or not torch.isfinite(xd).all():
        raise ValueError("log_quantize: the tensor or its anchor max|x| contains NaN or Inf")
    if m0 <= 0:  # an all-zero tensor quantizes to zeros
        zeros = torch.zeros_like(xd, dtype=torch.int64)
        return zeros, zeros, torch.zeros((), dtype=torch.float64, device=xd.device)
    z = log_anchor_exponent(m0, bits)
    mag = xd.abs()
    q_lo = (xd < 0).to(torch.float64)  # negative codes stop at index 1 (−127..−1 in the CUDA code)
    q = torch.round(steps * torch.log2(mag.clamp_min(torch.finfo(torch.float64).tiny)) - z)
    q = torch.minimum(torch.maximum(q, q_lo), torch.full_like(q, qmax))
    # Zero region: at most half the smallest level of each sign, 2^(z/S) for positives and 2^((1+z)/S) for
    # negatives (strict inequality on the negative side, as in the CUDA code).
    half_smallest = torch.exp2(z / steps) / 2
    pos_zero = (xd > 0) & (xd <= half_smallest)
    neg_zero = (xd < 0) & (xd > -half_smallest * 2 ** (1 / steps))
    sign = torch.sign(xd).to(torch.int64)
    sign = torch.where(pos_zero | neg_zero, torch.zeros_like(sign), sign)
    return sign, q.to(torch.int64), z


def log_dequantize(sign: torch.Tensor, q: torch.Tensor, z: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Values ``sign·2^((q+z)/S)`` of NNIE codes (float32)."""
    steps, _ = _format(bits)
    return (sign.to(torch.float64) * torch.exp2((q.to(torch.float64) + z) / steps)).to(torch.float32)


def log_quantize(x: torch.Tensor, max_abs: torch.Tensor | float | None = None, bits: int = 8) -> torch.Tensor:
    """NNIE quantize-dequantize of ``x`` (no gradient; wrap with :func:`quantzoo.math.ste` for QAT).

    Appendix test vector (nnieqat ``quantize.py:test()``): ``log_quantize(tensor([0., 1., ..., 9.]))`` is
    ``[0, 1, 2, 2.95365, 4, 4.96743, 5.90730, 7.02501, 8, 8.72406]``.
    """
    sign, q, z = log_quantize_codes(x, max_abs, bits)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return log_dequantize(sign, q, z, bits).to(device=x.device, dtype=dtype)
