"""Multi-head attention written with four ``nn.Linear`` projections, so that generic methods quantize them.

``nn.MultiheadAttention`` keeps its query/key/value projection in one raw parameter (``in_proj_weight``) that
it multiplies inside ``F.multi_head_attention_forward``: a method that swaps ``nn.Linear`` layers never sees
it, and ``nn.TransformerEncoderLayer``'s fused inference path skips every submodule, quantizers included.
:class:`QuantizableMultiheadAttention` computes the same function (Vaswani et al. 2017, eq. 1 and §3.2.2)
from ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj``; having no ``in_proj_bias`` it also turns the
encoder's fused path off, so calibration reaches every quantizer. torch.ao's quantizable MHA takes the same
approach for its own flow. :func:`disable_fused_paths` does the same for methods that keep torch's MHA.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedError
from .swap import set_submodule


class QuantizableMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (same constructor, forward signature and outputs) built from ``nn.Linear``."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False, kdim: int | None = None, vdim: int | None = None):
        super().__init__()
        if embed_dim % num_heads:
            raise UnsupportedError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        # What nn.TransformerEncoder(Layer) inspects before its fused path: no packed projection here.
        self.in_proj_weight = None
        self.in_proj_bias = None
        self._qkv_same_embed_dim = False

    @classmethod
    @torch.no_grad()
    def from_float(cls, mha: nn.MultiheadAttention) -> "QuantizableMultiheadAttention":
        if mha.bias_k is not None or mha.add_zero_attn:
            raise UnsupportedError("MultiheadAttention with add_bias_kv or add_zero_attn has no quantizable form "
                                   "here; build it without them, or keep it float with exclude=[...]")
        bias = mha.in_proj_bias is not None
        new = cls(mha.embed_dim, mha.num_heads, mha.dropout, bias, mha.batch_first, mha.kdim, mha.vdim)
        e = mha.embed_dim
        if mha._qkv_same_embed_dim:
            wq, wk, wv = mha.in_proj_weight.split(e)
        else:
            wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        for lin, w in ((new.q_proj, wq), (new.k_proj, wk), (new.v_proj, wv)):
            lin.weight.copy_(w)
        if bias:
            for lin, b in zip((new.q_proj, new.k_proj, new.v_proj), mha.in_proj_bias.split(e)):
                lin.bias.copy_(b)
        new.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.out_proj.bias is not None and new.out_proj.bias is not None:
            new.out_proj.bias.copy_(mha.out_proj.bias)
        return new.train(mha.training).to(mha.out_proj.weight.device)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        batched = query.dim() == 3
        if not batched:  # (L, E): one sequence
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:  # work in (L, N, E) like torch's reference implementation
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        tgt, n, _ = query.shape
        src = key.shape[0]
        h, d = self.num_heads, self.head_dim
        q = self.q_proj(query).reshape(tgt, n * h, d).transpose(0, 1)
        k = self.k_proj(key).reshape(src, n * h, d).transpose(0, 1)
        v = self.v_proj(value).reshape(src, n * h, d).transpose(0, 1)
        scores = torch.bmm(q / math.sqrt(d), k.transpose(1, 2))  # (N·H, L, S)
        mask = _additive_mask(attn_mask, is_causal, tgt, src, scores.dtype, scores.device)
        if mask is not None:
            scores = scores + (mask if mask.dim() == 2 else mask.reshape(n * h, tgt, src))
        if key_padding_mask is not None:
            kpm = _as_additive(key_padding_mask, scores.dtype).reshape(n, 1, 1, src)
            scores = (scores.reshape(n, h, tgt, src) + kpm).reshape(n * h, tgt, src)
        attn = F.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, p=self.dropout)
        out = torch.bmm(attn, v).transpose(0, 1).reshape(tgt, n, self.embed_dim)
        out = self.out_proj(out)
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        weights = attn.reshape(n, h, tgt, src)
        weights = weights.mean(dim=1) if average_attn_weights else weights
        return out, (weights if batched else weights.squeeze(0))


def _as_additive(mask: torch.Tensor, dtype) -> torch.Tensor:
    """A boolean mask (True: not allowed) as -inf/0, a float mask as is."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def _additive_mask(attn_mask, is_causal: bool, tgt: int, src: int, dtype, device):
    if attn_mask is not None:
        return _as_additive(attn_mask, dtype)
    if is_causal:
        return torch.triu(torch.full((tgt, src), float("-inf"), dtype=dtype, device=device), diagonal=1)
    return None


def decompose_attention(model: nn.Module) -> list[str]:
    """Replace every ``nn.MultiheadAttention`` of ``model`` (in place) by its
    :class:`QuantizableMultiheadAttention`; returns the names replaced."""
    names = [n for n, m in model.named_modules() if type(m) is nn.MultiheadAttention and n]
    for name in names:
        set_submodule(model, name, QuantizableMultiheadAttention.from_float(model.get_submodule(name)))
    return names


def _no_fast_path(module, args):
    """A forward pre-hook that does nothing: its presence turns off nn.TransformerEncoderLayer's fused path."""
    return None


def disable_fused_paths(model: nn.Module) -> list[str]:
    """Turn off the fused inference paths of torch's transformer blocks (in place), which run the whole layer in
    one kernel and skip its submodules, so every quantizer inside sees the data: a no-op forward pre-hook on each
    ``nn.TransformerEncoderLayer`` (its fast path refuses modules with hooks) and ``use_nested_tensor=False`` on
    each ``nn.TransformerEncoder``. Returns the names changed."""
    done = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.TransformerEncoderLayer):
            mod.register_forward_pre_hook(_no_fast_path)
            done.append(name)
        elif isinstance(mod, nn.TransformerEncoder):
            mod.use_nested_tensor = False
            done.append(name)
    return done
