"""HQQ: half-quadratic optimisation of the zero-point of a min-max quantizer, without data.

Badri & Shaji 2023, "Half-Quadratic Quantization of Large Machine Learning Models" (Mobius Labs blog; no
paper). The zero-point ``z`` minimises a sparsity-promoting ``ℓ_p`` (p < 1) error of the de-quantized weights,
``argmin_z φ(W − Q_z⁻¹(Q_z(W)))``, ``φ = ‖·‖_p^p``, split with an auxiliary ``W_e`` into
``φ(W_e) + β/2·‖W_e − (W − Q_z⁻¹(Q_z(W)))‖²`` and solved by alternating closed-form steps:

1. ``W_e ← shrink_p(W − W_r, β)`` with ``shrink_p(x, β) = sign(x)·relu(|x| − |x|^(p−1)/β)`` (generalised
   soft-thresholding; p = 1 is ``relu(|x| − 1/β)``);
2. ``z ← mean(W_q − (W − W_e)·s⁻¹)`` over each group;
3. ``β ← κ·β``.

The scale is stored inverted while optimising, as the official ``hqq/core/quantize.py::Quantizer.quantize``:
``s⁻¹ = (2^b − 1)/(max − min)`` clamped to ``≤ 2e4``, ``z = −min·s⁻¹`` (rounded with ``round_zero``),
``W_q = clamp(round(W·s⁻¹ + z), 0, 2^b − 1)``, ``W_r = (W_q − z)/s⁻¹``. Defaults of
``optimize_weights_proximal_legacy`` (the library's default solver): p = 0.7, β₀ = 10, κ = 1.01, 20
iterations, stopping as soon as the mean ``|W − W_r|`` does not decrease — in that iteration ``z`` has
already been updated, and the legacy solver returns that update (``early_stop="legacy"``);
``early_stop="best"`` returns the zero-point of the lowest error instead (the library's v2 solver).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """``sign(x)·relu(|x| − |x|^(p−1)/β)`` (step 1; ``p = 1``: ``sign(x)·relu(|x| − 1/β)``)."""
    if p == 1:
        return torch.sign(x) * torch.relu(x.abs() - 1.0 / beta)
    return torch.sign(x) * torch.relu(x.abs() - x.abs().pow(p - 1) / beta)


@dataclass
class HQQResult:
    """Codes ``W_q`` and per-row ``scale`` (= 1/s⁻¹) and ``zero``: ``W ≈ (W_q − zero)·scale``."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    errors: list[float]

    def dequantize(self) -> torch.Tensor:
        return (self.codes - self.zero) * self.scale


def hqq_quantize(rows: torch.Tensor, bits: int, *, optimize: bool = True, lp_norm: float = 0.7,
                 beta: float = 10.0, kappa: float = 1.01, iters: int = 20, round_zero: bool = False,
                 early_stop: str = "legacy") -> HQQResult:
    """HQQ of ``rows`` ``[groups, group_size]``: one (scale, zero) per row (the official ``axis=1``).

    ``errors`` lists the mean ``|W − W_r|`` of each iteration (empty without ``optimize``).
    """
    W = rows.detach().float()
    qmax = float(2**bits - 1)
    lo = W.min(dim=1, keepdim=True).values
    hi = W.max(dim=1, keepdim=True).values
    s_inv = (qmax / (hi - lo)).clamp(max=2e4)
    zero = -lo * s_inv
    if round_zero:
        zero = torch.round(zero)
    errors: list[float] = []
    if optimize:
        best, best_zero = float("inf"), zero
        for _ in range(iters):
            W_q = torch.round(W * s_inv + zero).clamp(0, qmax)
            W_r = (W_q - zero) / s_inv
            W_e = shrink_lp(W - W_r, beta, lp_norm)
            new_zero = torch.mean(W_q - (W - W_e) * s_inv, dim=1, keepdim=True)
            beta *= kappa
            err = float((W - W_r).abs().mean())
            errors.append(err)
            if err < best:
                best, best_zero = err, zero
                zero = new_zero
            else:
                zero = new_zero if early_stop == "legacy" else best_zero
                break
    codes = torch.round(W * s_inv + zero).clamp(0, qmax)
    return HQQResult(codes, 1.0 / s_inv, zero, errors)
