"""AWQ: activation-aware per-input-channel weight scaling and clipping, chosen by grid search.

Lin, Tang, Tang, Yang, Chen, Wang, Xiao, Dang, Gan & Han 2024, "AWQ", arXiv:2306.00978. Quantizing
``W·diag(s)`` and feeding ``diag(s)⁻¹X`` leaves the float product unchanged but shrinks the relative rounding
error of the channels with large activations (eq. 2). The scale is searched (eq. 4-5):

    s* = s_X^α*,   α* = argmin_α ‖Q(W·diag(s_X^α))·(diag(s_X^α)⁻¹X) − WX‖,   α ∈ {0, 1/n, …, (n−1)/n}

with ``s_X`` the mean ``|x|`` of each input channel. As the official ``auto_scale.py::_search_module_scale``:
``n_grid = 20``, ``s = s_X^α`` clamped to ``≥ 1e-4`` then normalised by ``√(max s · min s)``, the loss is the
mean squared error of the layer output, and α = 0 (``s = 1``) is plain round-to-nearest. Afterwards
``auto_clip.py::auto_clip_layer`` shrinks each (row, group)'s range: candidates ``max|w|·(1 − i/n_grid)``,
``i < max_shrink·n_grid``, symmetric clamp, error = mean over tokens of the group's partial output error.

The weight quantizer is AWQ's ``pseudo_quantize_tensor``: min-max per row or per group, asymmetric with an
integer zero-point (``zero_point=True``) or symmetric; the range is widened to include 0 as in
:func:`~quantzoo.math.compute_qparams` (AWQ's own code does not widen; rows whose values all share one sign,
the only case where the two differ, do not occur in trained layers).
"""

from __future__ import annotations

import torch

from ..spec import QuantSpec
from .uniform import compute_qparams, fake_quantize, reduce_min_max


def weight_spec(bits: int, group_size: int | None, zero_point: bool = True) -> QuantSpec:
    """The spec of a 2-D ``[rows, cols]`` weight quantized per row (``group_size=None``) or per group of
    ``group_size`` consecutive columns, asymmetric unsigned (``zero_point``) or symmetric signed."""
    kw = dict(bits=bits, signed=not zero_point, symmetric=not zero_point)
    if group_size is None:
        return QuantSpec(granularity="per_channel", axis=0, **kw)
    return QuantSpec(granularity="per_group", axis=1, group_size=group_size, **kw)


def pseudo_quantize(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Min-max round-to-nearest of a 2-D weight at ``spec`` (AWQ's ``pseudo_quantize_tensor``)."""
    scale, zero = compute_qparams(*reduce_min_max(w, spec), spec)
    return fake_quantize(w, scale, zero, spec)


def awq_scales(act_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s = s_X^α`` clamped to ``≥ 1e-4``, divided by ``√(max s · min s)`` (one value per input channel)."""
    s = act_mean.float().pow(alpha).clamp(min=1e-4)
    return s / torch.sqrt(s.max() * s.min())


def scale_search_losses(W: torch.Tensor, X: torch.Tensor, act_mean: torch.Tensor, spec: QuantSpec,
                        kernel: int = 1, n_grid: int = 20) -> tuple[torch.Tensor, list[float]]:
    """AWQ's objective for every α on the grid: ``(alphas, losses)``.

    ``W`` is ``[rows, C·kernel]`` (``weight.flatten(1)``), ``X`` ``[C·kernel, tokens]`` (its input columns),
    ``act_mean`` ``[C]``; a channel's scale applies to its ``kernel`` consecutive columns.
    """
    W, X = W.float(), X.float()
    ref = W @ X
    alphas = torch.arange(n_grid, dtype=torch.float64) / n_grid
    losses = []
    for a in alphas.tolist():
        s = awq_scales(act_mean, a).repeat_interleave(kernel)
        q = pseudo_quantize(W * s, spec)
        losses.append(float(((q @ (X / s.unsqueeze(1))) - ref).pow(2).mean()))
    return alphas, losses


def search_scale(W, X, act_mean, spec, kernel=1, n_grid=20) -> tuple[float, torch.Tensor]:
    """``(α*, s*)`` minimising :func:`scale_search_losses` (the first α on ties, as the official loop)."""
    alphas, losses = scale_search_losses(W, X, act_mean, spec, kernel, n_grid)
    best = min(range(len(losses)), key=losses.__getitem__)
    a = float(alphas[best])
    return a, awq_scales(act_mean, a)


def search_clip(W: torch.Tensor, X: torch.Tensor, spec: QuantSpec, n_grid: int = 20, max_shrink: float = 0.5,
                n_tokens: int = 512) -> torch.Tensor:
    """The clip ``max_val`` per (row, group) ``[rows, groups]`` minimising the group's output error
    (official ``auto_clip_layer``) on ``n_tokens`` tokens. The official code takes every ``T/n_tokens``-th
    token; here they are drawn at random (seeded): in an unfolded convolution input consecutive tokens are the
    positions of one sample, and a stride equal to their count would keep a single (border) position."""
    W, X = W.float(), X.float()
    rows, cols = W.shape
    g = spec.group_size or cols
    if X.shape[1] > n_tokens:
        X = X[:, torch.randperm(X.shape[1], generator=torch.Generator().manual_seed(0))[:n_tokens]]
    wg = W.reshape(rows, 1, cols // g, g)                       # [rows, 1, groups, g]
    xg = X.t().reshape(1, X.shape[1], cols // g, g)              # [1, tokens, groups, g]
    ref = (xg * wg).sum(-1)                                     # partial outputs [rows, tokens, groups]
    org_max = W.abs().reshape(rows, cols // g, g).amax(-1)       # [rows, groups]
    best_err = torch.full_like(org_max, float("inf"))
    best_max = org_max.clone()
    for i in range(int(max_shrink * n_grid)):
        m = org_max * (1 - i / n_grid)
        cur = torch.clamp(W.reshape(rows, -1, g), -m.unsqueeze(-1), m.unsqueeze(-1)).reshape(rows, cols)
        q = pseudo_quantize(cur, spec).reshape(rows, 1, cols // g, g)
        err = ((xg * q).sum(-1) - ref).pow(2).mean(1)           # [rows, groups]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_max = torch.where(better, m, best_max)
    return best_max


def apply_clip(W: torch.Tensor, max_val: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """``clamp(W, −max_val, max_val)`` per (row, group)."""
    rows, cols = W.shape
    g = group_size or cols
    m = max_val.unsqueeze(-1)
    return torch.clamp(W.reshape(rows, -1, g), -m, m).reshape(rows, cols)
