"""``nn.TransformerEncoder``/``nn.TransformerEncoderLayer`` as torch.fx-traceable modules, and batch-first
``nn.MultiheadAttention`` in the layout torch.ao's quantizable attention computes correctly, for eager mode.

Their ``forward`` first decides between a fused inference kernel and the standard path by inspecting tensors
(``src.dim()``, devices, ``requires_grad``), which torch.fx cannot trace, and the fused kernel reads the
weights of the layer's Linear modules directly, which int8 modules do not have. The modules here hold the
*same* submodules (``self_attn``, ``linear1``, ``norm1``, ...; the state_dict keys are unchanged) and run
only the standard path, line for line as torch writes it (``torch/nn/modules/transformer.py``: ``_sa_block``,
``_ff_block``, norm-first or post-norm residuals). The eager preparation then quantizes what is inside:
``MultiheadAttention`` through torch.ao's quantizable module, the Linear and LayerNorm layers, the residual
adds through FloatFunctional.

torch.ao's quantizable ``MultiheadAttention`` (what eager ``prepare`` swaps in) reshapes its output wrongly
when ``batch_first=True`` (pytorch/pytorch#67651, open: the heads are spliced into the sequence; measured
here, its output against the float module's is at -1 dB SQNR before any rounding). :class:`SequenceFirst`
runs such an attention sequence-first, where the quantizable module is right, with transposes around it.
"""

from __future__ import annotations

from torch import nn


class StandardEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer``'s standard (unfused) path, traceable."""

    def __init__(self, layer: nn.TransformerEncoderLayer):
        super().__init__()
        for name in ("self_attn", "linear1", "dropout", "linear2", "norm1", "norm2", "dropout1", "dropout2"):
            setattr(self, name, getattr(layer, name))
        self.activation = layer.activation  # a module or a function (F.relu by default)
        self.norm_first = layer.norm_first

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))


class StandardEncoder(nn.Module):
    """``nn.TransformerEncoder`` without its nested-tensor path: each layer in turn, then the optional norm."""

    def __init__(self, encoder: nn.TransformerEncoder):
        super().__init__()
        self.layers = nn.ModuleList(StandardEncoderLayer(layer) if type(layer) is nn.TransformerEncoderLayer
                                    else layer for layer in encoder.layers)
        self.norm = encoder.norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal: bool = False):
        out = src
        for layer in self.layers:
            out = layer(out, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        return self.norm(out) if self.norm is not None else out


class SequenceFirst(nn.Module):
    """A batch-first ``nn.MultiheadAttention`` run sequence-first: same weights (``.attn``), inputs and output
    transposed (0, 1), so torch.ao's quantizable attention gets the layout it handles correctly."""

    def __init__(self, attn: nn.MultiheadAttention):
        super().__init__()
        attn.batch_first = False
        self.attn = attn

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        out, weights = self.attn(query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1),
                                 key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
                                 average_attn_weights=average_attn_weights, is_causal=is_causal)
        return out.transpose(0, 1), weights


def use_sequence_first_attention(model: nn.Module) -> list[str]:
    """Wrap, in place, every batch-first ``nn.MultiheadAttention`` in :class:`SequenceFirst`; the names."""
    names = [n for n, m in model.named_modules() if n and type(m) is nn.MultiheadAttention and m.batch_first]
    for name in names:
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, attr, SequenceFirst(getattr(owner, attr)))
    return names


def use_standard_encoders(model: nn.Module) -> list[str]:
    """Replace, in place, every ``nn.TransformerEncoder`` and every ``nn.TransformerEncoderLayer`` outside one
    by its standard-path module; returns the qualified names replaced (the model itself cannot be one)."""
    replaced = []
    for name, mod in list(model.named_modules()):
        if not name or any(name.startswith(r + ".") for r in replaced):
            continue
        if type(mod) is nn.TransformerEncoder:
            new = StandardEncoder(mod)
        elif type(mod) is nn.TransformerEncoderLayer:
            new = StandardEncoderLayer(mod)
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
        replaced.append(name)
    return replaced
