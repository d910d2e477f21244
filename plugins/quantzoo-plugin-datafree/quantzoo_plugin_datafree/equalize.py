"""Cross-layer equalization and high-bias absorption (Nagel et al. 2019, arXiv:1906.04721 §4.1, §4.3), on a
float model whose BatchNorms are already folded; both leave its function unchanged.

Each producer's pre-activation is tracked as ``N(β, γ²)`` per channel, the BatchNorm's statistics (DFQ
§4.2-4.3): equalization scales them with the channel, absorption shifts their mean. Those statistics are
what analytic bias correction later reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from quantzoo.nn.bias_correction import clipped_normal_mean, output_shift

from .links import Link


@dataclass
class ChannelStats:
    """Per-channel mean and standard deviation of a producer's pre-activation output (BN's β and |γ|)."""

    mean: torch.Tensor
    std: torch.Tensor


def equalization_scale(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """``s_i = √(r¹_i·r²_i)/r²_i`` (DFQ §4.1): dividing output channel ``i`` of layer 1 (range ``r¹_i``) by
    ``s_i`` and multiplying input channel ``i`` of layer 2 (range ``r²_i``) by it leaves both with range
    ``√(r¹_i·r²_i)``, which maximises the sum of the two layers' per-channel precisions. ``s_i = 1`` where a
    range is 0 (AIMET ``ScaleFactorCalculator``)."""
    prod = r1 * r2
    safe = torch.where(prod > 0, r2, torch.ones_like(r2))
    return torch.where(prod > 0, torch.sqrt(prod.clamp_min(0)) / safe, torch.ones_like(r1))


def _consumer_view(consumer: nn.Module, channels: int) -> torch.Tensor:
    """The consumer's weight as ``[out, channels, k]``: column group ``i`` reads producer channel ``i``
    (a conv's kernel, or the ``k`` features a Flatten makes of one channel, channel-major)."""
    w = consumer.weight.data
    if w.reshape(w.shape[0], -1).shape[1] % channels:
        raise ValueError(f"consumer with {w[0].numel()} inputs per output does not split into {channels} channels")
    return w.reshape(w.shape[0], channels, -1)


def _producer_range(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1).abs().amax(dim=1)


@torch.no_grad()
def equalize_pair(producer: nn.Module, consumer: nn.Module, stats: ChannelStats | None = None) -> torch.Tensor:
    """Equalize one producer/consumer pair in place and return the scales ``s``:
    ``W¹ ← S⁻¹W¹, b¹ ← S⁻¹b¹, W² ← W²S`` (DFQ eq. 5), valid through ReLU since ``relu(x/s) = relu(x)/s``."""
    c = producer.weight.shape[0]
    w2 = _consumer_view(consumer, c)
    s = equalization_scale(_producer_range(producer.weight.data), w2.abs().amax(dim=(0, 2)))
    shape = (-1,) + (1,) * (producer.weight.dim() - 1)
    producer.weight.data.div_(s.reshape(shape))
    if producer.bias is not None:
        producer.bias.data.div_(s)
    w2.mul_(s.reshape(1, -1, 1))  # a view of consumer.weight
    if stats is not None:
        stats.mean, stats.std = stats.mean / s, stats.std / s
    return s


def cross_layer_equalize(model: nn.Module, links: list[Link], stats: dict[str, ChannelStats], *,
                         sweeps: int = 100, tol: float = 1e-6) -> int:
    """Equalize every scalable link, sweeping the chain until no scale moves more than ``tol`` from 1 (the
    paper iterates pairs to convergence; AIMET does one sweep). Returns the number of sweeps made."""
    pairs = [link for link in links if link.scalable]
    for sweep in range(1, sweeps + 1):
        worst = 0.0
        for link in pairs:
            s = equalize_pair(model.get_submodule(link.producer), model.get_submodule(link.consumer),
                              stats.get(link.producer))
            worst = max(worst, float((s - 1).abs().max()))
        if worst <= tol:
            return sweep
    return sweeps


def absorbable_bias(stats: ChannelStats, activation: str) -> torch.Tensor:
    """``c = max(0, β − 3|γ|)`` before a ReLU (DFQ §4.3: ``relu(x − c) = relu(x) − c`` for the ≈99.9 % of a
    ``N(β, γ²)`` pre-activation above ``c``), ``c = β`` without activation (a linear path absorbs it all)."""
    if activation == "relu":
        return (stats.mean - 3.0 * stats.std.abs()).clamp_min(0.0)
    if activation == "none":
        return stats.mean.clone()
    raise ValueError(f"high-bias absorption through {activation!r} is not defined; only relu or none")


@torch.no_grad()
def absorb_high_bias(producer: nn.Module, consumer: nn.Module, stats: ChannelStats, activation: str) -> torch.Tensor:
    """Move ``c`` (:func:`absorbable_bias`) from the producer's bias into the consumer's:
    ``b¹ ← b¹ − c``, ``b² ← b² + W²c`` (conv kernels summed; exact without zero padding). Returns ``c``."""
    c = absorbable_bias(stats, activation)
    producer.bias.data.sub_(c)
    if consumer.bias is None:
        consumer.bias = nn.Parameter(torch.zeros(consumer.weight.shape[0], dtype=consumer.weight.dtype))
    consumer.bias.data.add_(output_shift(consumer.weight.data, per_input(c, consumer)))
    stats.mean = stats.mean - c
    return c


def per_input(channel_values: torch.Tensor, consumer: nn.Module) -> torch.Tensor:
    """One value per consumer input: a Linear after a Flatten reads several features of each channel."""
    if consumer.weight.dim() == 2:
        return channel_values.repeat_interleave(consumer.weight.shape[1] // channel_values.numel())
    return channel_values


def expected_input(link: Link, stats: ChannelStats, consumer: nn.Module) -> torch.Tensor:
    """The consumer's per-input mean ``E[x]`` from the producer's ``N(β, γ²)``: the clipped-normal mean after a
    ReLU/ReLU6, ``β`` without activation (DFQ §4.2), one value per feature after a Flatten."""
    hi = {"relu": float("inf"), "relu6": 6.0}.get(link.activation)
    mean = stats.mean if hi is None else clipped_normal_mean(stats.mean, stats.std, 0.0, hi)
    return per_input(mean, consumer)
