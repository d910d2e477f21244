"""GPTQ: quantize a weight matrix column by column, compensating each column's error on the columns not yet
quantized through the inverse Hessian of the layer-wise objective.

Frantar, Ashkboos, Hoefler & Alistarh 2023, "GPTQ", arXiv:2210.17323 (and OBQ, Frantar, Singh & Alistarh
2022, arXiv:2208.11580). The layer problem is ``argmin_Q ‖WX − QX‖²`` with Hessian ``H = 2XXᵀ``. The OBQ
step for column ``q`` (eq. 2):

    w_q → quant(w_q),   δ = −(w_q − quant(w_q)) / [H⁻¹]_qq · H⁻¹_{:,q}

and ``H⁻¹`` loses row/column ``q`` by Gaussian elimination (eq. 3). GPTQ quantizes the columns of every row
in one fixed order, so all rows share these inverses; their needed rows are the rows of the upper Cholesky
factor ``U`` of ``H⁻¹`` (``H⁻¹ = UᵀU``): with ``e = (w_j − q_j)/U_jj`` the update of the later columns is
``W[:, j:] −= e·U[j, j:]``, which is eq. 2 because ``U_jk/U_jj = [H⁻¹_j]_jk/[H⁻¹_j]_jj`` for the current
inverse. The loss of the step is ``(w_j − q_j)²/U_jj²/2``; summed, it equals ``½ tr(ΔHΔᵀ)`` with
``Δ = W − Q`` (the damped objective), a check the tests use.

Algorithm as the official ``gptq.py::GPTQ.fasterquant``: dead inputs (``H_jj = 0``) get ``H_jj = 1`` and a
zero weight; optional act-order (columns by descending ``H_jj``); dampening ``H += percdamp·mean(diag H)·I``
(1 % by default); lazy batch updates in blocks of ``block_size`` columns. Quantization parameters come from
the whole row (min-max, the caller's spec) or, with ``group_size``, from each group of columns when the
loop reaches its first column (on the error-updated weights) or, with ``static_groups``, from the original
weights before the loop (the official ``--static-groups``, needed with act-order so that groups stay
contiguous in the stored order). Where a group starts inside a block, the official code reads that block's
columns without their intra-block updates; here they include them (the error-updated weights the algorithm
describes); both agree when ``group_size`` is a multiple of ``block_size``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError
from ..spec import QuantSpec
from .uniform import compute_qparams, fake_quantize, reduce_min_max


def accumulate_hessian(H: torch.Tensor | None, nsamples: int, columns: torch.Tensor, batch: int
                       ) -> tuple[torch.Tensor, int]:
    """The running mean of ``2·XXᵀ`` over samples (official ``add_batch``): ``columns`` is ``[features, tokens]``
    from ``batch`` samples; ``nsamples`` counts samples seen so far (not tokens, as the official code)."""
    cols = columns.double()
    if H is None:
        H = torch.zeros(cols.shape[0], cols.shape[0], dtype=torch.float64)
    total = nsamples + batch
    H = H * (nsamples / total) + (2.0 / total) * (cols @ cols.t())
    return H, total


@dataclass
class GPTQResult:
    """The quantized matrix and the per-element losses ``(w − q)²/U_jj²/2`` (their sum is the objective)."""

    weight: torch.Tensor
    losses: torch.Tensor

    @property
    def loss(self) -> float:
        return float(self.losses.sum())


def _row_qparams(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row min-max qparams of ``w`` ``[rows, cols]`` (GPTQ's ``Quantizer.find_params(weight=True)``)."""
    return compute_qparams(*reduce_min_max(w, spec), spec)


def inverse_hessian_factor(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor ``U`` of ``(H + percdamp·mean(diag H)·I)⁻¹`` (float64)."""
    H = H.double().clone()
    n = H.shape[0]
    H[range(n), range(n)] += percdamp * torch.mean(torch.diag(H))
    try:
        L = torch.linalg.cholesky(H)
        return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    except torch.linalg.LinAlgError as e:
        raise DataError(f"GPTQ: the layer Hessian is not positive definite after {percdamp:.2%} dampening "
                        "(too few calibration samples for its inputs?): raise percdamp or give more data") from e


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, spec: QuantSpec, *, block_size: int = 128,
                  percdamp: float = 0.01, group_size: int | None = None, act_order: bool = False,
                  static_groups: bool = False) -> GPTQResult:
    """GPTQ of ``W`` ``[rows, cols]`` given ``H`` ``[cols, cols]`` (see the module docstring).

    ``spec`` is the per-row format (``granularity="per_channel"``, ``axis=0``), e.g. asymmetric unsigned
    ``bits``-bit as GPTQ's default or symmetric signed as its ``--sym``. Returns the quantized ``W`` in the
    original column order.
    """
    W = W.detach().float().clone()
    H = H.detach().double().clone()
    rows, cols = W.shape
    # as the official code: row params before dead inputs are zeroed, static group params after
    scale, zero = _row_qparams(W, spec) if group_size is None else (None, None)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    groups = None
    if group_size is not None and static_groups:
        groups = [_row_qparams(W[:, i:i + group_size], spec) for i in range(0, cols, group_size)]

    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]

    U = inverse_hessian_factor(H, percdamp).float()
    Q = torch.zeros_like(W)
    losses = torch.zeros_like(W)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()
        err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            if group_size is not None:
                if groups is not None:
                    orig = int(perm[j]) if perm is not None else j
                    scale, zero = groups[orig // group_size]
                elif j % group_size == 0:
                    # the group's params on the current (error-updated) weights: this block's columns from W1
                    # (their intra-block updates included), later ones from W (lazy updates of earlier blocks)
                    cur = torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :group_size]
                    scale, zero = _row_qparams(cur, spec)
            w = W1[:, i]
            q = fake_quantize(w, scale, zero, spec)
            d = U1[i, i]
            Q[:, j] = q
            losses[:, j] = (w - q) ** 2 / d**2 / 2
            e = (w - q) / d
            W1[:, i:] -= e.unsqueeze(1) * U1[i, i:].unsqueeze(0)
            err1[:, i] = e
        W[:, i2:] -= err1 @ U[i1:i2, i2:]
    if perm is not None:
        inv = torch.argsort(perm)
        Q, losses = Q[:, inv], losses[:, inv]
    return GPTQResult(Q, losses)
