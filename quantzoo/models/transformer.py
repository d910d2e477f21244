"""A small transformer encoder whose every projection is an ``nn.Linear`` (so every method can quantize it,
and dynamic int8 quantization has its usual workload)."""

from __future__ import annotations

import math

import torch
from torch import nn


def tokens_of(input_shape: tuple[int, ...]) -> tuple[int, int]:
    """How an input becomes a token sequence: images → one token per row (width features, times channels);
    1-D signals ``(C, L)`` → tokens of 4 consecutive steps (``L/4`` tokens of ``4·C`` features)."""
    if len(input_shape) == 3:
        c, h, w = input_shape
        return h, c * w
    c, length = input_shape
    patch = 4 if length % 4 == 0 else 1
    return length // patch, c * patch


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (Vaswani et al. 2017, Eq. 1:
    softmax(QKᵀ/√d_k)V), with separate Linear projections for Q, K, V and the output."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        # reshape with -1 and unflatten/flatten (no Python unpacking of x.shape) keeps torch.fx tracing working
        def split(z):
            return z.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
        return self.out((att @ v).transpose(1, 2).flatten(2))


class EncoderBlock(nn.Module):
    """Pre-LN block: x + Attn(LN(x)), then x + FFN(LN(x)) with FFN = Linear-GELU-Linear."""

    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ffn)
        self.act = nn.GELU()
        self.ff2 = nn.Linear(ffn, dim)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.ff2(self.act(self.ff1(self.ln2(x))))


class TinyTransformer(nn.Module):
    """Linear token embedding + learned positions → 2 encoder blocks (dim 64, 4 heads, FFN 128) → LN →
    mean over tokens → Linear classifier."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, dim: int = 64, heads: int = 4,
                 ffn: int = 128, depth: int = 2):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_tokens, feat = tokens_of(self.input_shape)
        self.embed = nn.Linear(feat, dim)
        self.pos = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, ffn) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        if len(self.input_shape) == 3:  # (N, C, H, W) -> (N, H, C*W): one token per row
            x = x.permute(0, 2, 1, 3).flatten(2)
        else:  # (N, C, L) -> (N, L/p, p*C)
            x = x.transpose(1, 2).unflatten(1, (self.num_tokens, -1)).flatten(2)
        x = self.blocks(self.embed(x) + self.pos)
        return self.head(self.norm(x).mean(dim=1))
