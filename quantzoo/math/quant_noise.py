"""Quant-Noise: quantize (or drop) only a random subset of weight blocks in each training forward pass.

Fan, Stock, Graham, Grave, Gribonval, Jégou & Joulin 2021, "Training with Quantization Noise for Extreme
Model Compression", arXiv:2004.07320, §4: each block ``b_kl`` of ``W`` is in the noised set ``J`` with
probability ``p``; ``W̃ = φ(b_kl)`` for blocks in ``J``, ``b_kl`` otherwise, and the backward pass is the
straight-through estimator (``∂L/∂W = ∂L/∂W̃``).

* iPQ proxy (``fairseq/modules/quant_noise.py``): ``φ(b) = 0`` and the kept blocks are scaled by
  ``1/(1 − p)``; blocks are ``block_size`` consecutive input features of one row of ``weight.flatten(1)``.
* scalar intN (``fairseq/modules/quantization/scalar/modules/qlinear.py``): ``φ = `` fake quantization.

Both are functions of the parameter computed anew in every forward pass; the parameter itself is never
written (fairseq's iPQ hook assigns the noised tensor to ``weight.data``, so dropped weights stay zero and
survivors are rescaled again at every step: fairseq#3783, #3195). The scalar form clamps before it forms the
noise, so that ``p = 1`` gives exactly ``q(w)`` and ``p = 0`` exactly ``clamp(w)`` (fairseq#2968).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError


def block_mask(rows: int, cols: int, block_size: int, p: float, generator: torch.Generator | None = None,
               device=None) -> torch.Tensor:
    """Boolean ``[rows, cols]`` mask, True on the noised blocks: one Bernoulli(``p``) draw per block of
    ``block_size`` consecutive columns of a row, repeated over the block."""
    if cols % block_size:
        raise ConfigError(f"quant-noise: {cols} input features are not a multiple of block_size={block_size}: "
                          "choose a block size that divides them")
    draws = torch.rand(rows, cols // block_size, generator=generator, device=device) < p
    return draws.repeat_interleave(block_size, dim=1)


def drop_blocks(w: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """The iPQ proxy noise ``W̃ = 0`` on ``mask``, ``W/(1 − p)`` elsewhere, with the STE gradient
    (``w`` is 2-D, ``mask`` from :func:`block_mask`)."""
    noised = torch.where(mask, torch.zeros_like(w), w / (1.0 - p))
    return w + (noised - w).detach()


def scalar_noise(w: torch.Tensor, q: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, mask: torch.Tensor
                 ) -> torch.Tensor:
    """``clamp(w, lo, hi)`` with its quantized value ``q`` (``q = quant(clamp(w))``) substituted on ``mask``;
    the noise ``(q − clamp(w))·mask`` is a constant (STE through the clamp)."""
    c = torch.clamp(w, lo, hi)
    return c + ((q - c) * mask).detach()
