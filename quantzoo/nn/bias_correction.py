"""Bias correction (Nagel et al. 2019, "Data-Free Quantization", arXiv:1906.04721 §4.2): remove the shift of a
layer's mean output that quantization causes.

With ``ε = W̃ − W`` the output of a quantized layer is ``ỹ = y + εx``, so ``E[ỹ] = E[y] + ε·E[x]`` (eq. 10-11
of the paper) and subtracting ``ε·E[x]`` from the bias restores the mean. ``E[x]`` comes either from data
(*empirical*: compare the mean outputs of the float and quantized models, layer by layer — AIMET's
``correct_bias`` default) or, data-free, from the preceding BatchNorm: a BN output is modelled as
``N(β, γ²)`` per channel, so after a ReLU ``E[x]`` is the mean of a clipped normal (*analytic*, §4.2).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


def clipped_normal_mean(mean: torch.Tensor, std: torch.Tensor, lo: float = 0.0, hi: float = math.inf
                        ) -> torch.Tensor:
    """``E[clip(X, lo, hi)]`` for ``X ~ N(mean, std²)``, elementwise.

    With ``a = (lo − μ)/σ`` and ``b = (hi − μ)/σ``:
    ``E = lo·Φ(a) + hi·(1 − Φ(b)) + μ·(Φ(b) − Φ(a)) + σ·(φ(a) − φ(b))``. For a ReLU (``lo = 0``,
    ``hi = ∞``) this is ``μ·Φ(μ/σ) + σ·φ(μ/σ)`` (DFQ §4.2; AIMET's ``BnBasedBiasCorrection``), and for ReLU6
    ``hi = 6``. ``σ = 0`` gives ``clip(μ, lo, hi)``.
    """
    mean = torch.as_tensor(mean, dtype=torch.float64)
    std = torch.as_tensor(std, dtype=torch.float64).abs()
    if lo > hi:
        raise ConfigError(f"clipped_normal_mean: lo={lo} is above hi={hi}")
    safe = torch.where(std > 0, std, torch.ones_like(std))

    def cdf(z):
        return torch.special.ndtr(z)

    def pdf(z):
        return torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)

    a = (lo - mean) / safe
    b = (hi - mean) / safe
    out = mean * (cdf(b) - cdf(a)) + safe * (pdf(a) - pdf(b))
    if math.isfinite(lo):
        out = out + lo * cdf(a)
    if math.isfinite(hi):
        out = out + hi * (1.0 - cdf(b))
    return torch.where(std > 0, out, mean.clamp(lo, hi)).float()


def output_shift(weight: torch.Tensor, input_mean: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``W·E[x]`` per output channel: the mean output (bias aside) of a Linear/Conv with weight ``W`` on an
    input whose features (Linear) or channels (Conv) have means ``E[x]``. With ``W = ε = W̃ − W_float`` it is
    the mean shift that bias correction removes (DFQ eq. 11); with the next layer's weight and a constant
    ``c`` it is what high-bias absorption adds to that layer's bias (§4.3).

    A convolution's weight is summed over its kernel, which treats every input position as a mean-valued
    sample (zero padding at the borders is ignored, as in AIMET). ``groups`` follows ``nn.Conv2d``.
    """
    e = weight.detach().float()
    if e.dim() > 2:
        e = e.flatten(2).sum(-1)  # [out, in/groups]
    ex = input_mean.detach().float().reshape(-1)
    out_ch, in_per_group = e.shape
    if ex.numel() != in_per_group * groups:
        raise ConfigError(f"output_shift: E[x] has {ex.numel()} entries for a layer with "
                          f"{in_per_group * groups} inputs; give one mean per input feature/channel")
    if groups == 1:
        return e @ ex
    e = e.reshape(groups, out_ch // groups, in_per_group)
    return torch.einsum("goi,gi->go", e, ex.reshape(groups, in_per_group)).reshape(out_ch)


def channel_mean(y: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of ``y`` over every dimension but ``dim``: the channels of a Conv's ``N×C×…`` output (``dim=1``), the
    features of a Linear's ``N×…×F`` output (``dim=-1``, e.g. per token of a sequence)."""
    if y.dim() < 2:
        raise ConfigError(f"channel_mean: expected an output of shape N x C x ..., got {tuple(y.shape)}")
    keep = dim % y.dim()
    dims = [d for d in range(y.dim()) if d != keep]
    return y.detach().float().mean(dim=dims)


def empirical_bias_shift(quantized_output: torch.Tensor, float_output: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``E[ỹ] − E[y]`` per output channel (on axis ``dim``, see :func:`channel_mean`) from the quantized and float
    outputs of one layer on the same data; subtracting it from the bias is empirical bias correction (DFQ §4.2,
    AIMET ``correct_bias``)."""
    if quantized_output.shape[1:] != float_output.shape[1:]:
        raise ConfigError(f"empirical_bias_shift: outputs of shapes {tuple(quantized_output.shape)} and "
                          f"{tuple(float_output.shape)} differ; compare the same layer's outputs")
    return channel_mean(quantized_output, dim) - channel_mean(float_output, dim)
