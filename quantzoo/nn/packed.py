"""Bit-packed storage of converted low-bit layers (what the ``packed`` backend runs).

:func:`pack_model` turns every converted layer whose weight grid is recorded (see
:meth:`quantzoo.nn.QuantLayerMixin.bake`) into a :class:`PackedLayer`: the weight is stored as ``pack_bits``
bytes (1, 2, 4 or 8 bits a weight) plus its scale/offset and unpacked on every forward pass: storage, not
integer arithmetic. The state dict of a packed model is the file format (``torch.save`` of tensors only,
loadable with ``weights_only=True``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedError
from ..math import PACKABLE_BITS, dequantize_codes, pack_bits, unpack_bits
from .layers import QuantLayerMixin, is_packable, run_layer
from ..state_dict import AdoptSavedShapes


def storage_bits(bits: int) -> int:
    """The packable width a ``bits``-bit code is stored in (3 → 4, 5..8 → 8)."""
    for b in PACKABLE_BITS:
        if bits <= b:
            return b
    raise UnsupportedError(f"weights of {bits} bits cannot be bit-packed (at most 8); keep them on 'fakequant'")


class PackedLayer(AdoptSavedShapes, nn.Module):
    """A Linear/Conv1d/Conv2d whose weight is stored bit-packed (``packed_weight``, uint8) with its
    ``weight_scale``/``weight_offset``; the float weight is rebuilt on each forward pass.

    ``weight_bits`` and :meth:`dequantized_weight` (also the read-only ``weight`` property) expose the grid
    to the conformance kit. Input/output quantizers of the source layer are kept and run as there.
    """

    def __init__(self, kind: str, weight_shape: tuple[int, ...], bits: int, *, bias: bool,
                 stride=1, padding=0, dilation=1, groups=1, input_quantizer=None, output_quantizer=None,
                 per_channel: bool = False):
        super().__init__()
        if kind not in ("linear", "conv1d", "conv2d"):
            raise ValueError(f"PackedLayer kind must be linear, conv1d or conv2d, not {kind!r}")
        self.kind = kind
        self.weight_shape = tuple(weight_shape)
        self.weight_bits = bits
        self.storage_bits = storage_bits(bits)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        numel = 1
        for d in self.weight_shape:
            numel *= d
        self.numel = numel
        n_bytes = (numel * self.storage_bits + 7) // 8
        self.register_buffer("packed_weight", torch.zeros(n_bytes, dtype=torch.uint8))
        n_ch = self.weight_shape[0] if per_channel else None
        self.register_buffer("weight_scale", torch.ones(n_ch) if n_ch else torch.tensor(1.0))
        self.register_buffer("weight_offset", torch.tensor(0.0))
        self.register_buffer("bias", torch.zeros(self.weight_shape[0]) if bias else None)
        self.input_quantizer = input_quantizer
        self.output_quantizer = output_quantizer

    @classmethod
    @torch.no_grad()
    def from_converted(cls, layer: QuantLayerMixin) -> "PackedLayer":
        """Pack a converted layer (see :meth:`QuantLayerMixin.bake`); its codes are recovered exactly from its
        weight."""
        if not is_packable(layer):
            raise UnsupportedError(f"{type(layer).__name__} has no recorded weight grid; convert it with a "
                                   "method that records its weight grid (dorefa, twn, bnn, xnor, uniform) before "
                                   "packing")
        kind = {nn.Linear: "linear", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d"}
        k = next((v for t, v in kind.items() if isinstance(layer, t)), None)
        if k is None:
            raise UnsupportedError(f"cannot pack {type(layer).__name__}")
        if k != "linear" and layer.padding_mode != "zeros":
            raise UnsupportedError(f"packed convolutions support padding_mode='zeros', not {layer.padding_mode!r}")
        conv = {} if k == "linear" else dict(stride=layer.stride, padding=layer.padding,
                                             dilation=layer.dilation, groups=layer.groups)
        scale, offset = layer.weight_scale, layer.weight_offset
        new = cls(k, tuple(layer.weight.shape), layer.weight_bits, bias=layer.bias is not None,
                  input_quantizer=copy.deepcopy(layer.input_quantizer),
                  output_quantizer=copy.deepcopy(layer.output_quantizer),
                  per_channel=scale.numel() > 1, **conv)
        new.weight_scale.copy_(scale)
        new.weight_offset = offset.clone()
        codes = recover_codes(layer.weight, scale, offset, layer.weight_bits)
        new.packed_weight.copy_(pack_bits(codes, new.storage_bits))
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
        return new.train(layer.training)

    def dequantized_weight(self) -> torch.Tensor:
        codes = unpack_bits(self.packed_weight, self.storage_bits, self.numel).reshape(self.weight_shape)
        return dequantize_codes(codes, self.weight_scale, self.weight_offset, axis=0)

    @property
    def weight(self) -> torch.Tensor:
        return self.dequantized_weight()

    def _compute(self, x, w):
        if self.kind == "linear":
            return F.linear(x, w, self.bias)
        conv = F.conv1d if self.kind == "conv1d" else F.conv2d
        return conv(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x):
        return run_layer(self, x, self.dequantized_weight())

    def extra_repr(self) -> str:
        return (f"{self.kind}, weight={list(self.weight_shape)}, bits={self.weight_bits} "
                f"(stored in {self.storage_bits}), bias={self.bias is not None}")


def recover_codes(w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int) -> torch.Tensor:
    """The codes ``c`` with ``w = (c − offset)·scale`` (exact for baked weights; 0-scale channels give the
    code nearest to ``offset``, which dequantizes to 0)."""
    shape = [-1] + [1] * (w.dim() - 1)
    s = scale.reshape(shape) if scale.numel() > 1 else scale
    o = offset.reshape(shape) if offset.numel() > 1 else offset
    safe = torch.where(s == 0, torch.ones_like(s), s)
    c = torch.where(s == 0, torch.floor(o + 0.5).expand_as(w), torch.round(w / safe + o))
    return torch.clamp(c, 0, 2**bits - 1).to(torch.int64)


def pack_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every packable converted layer by a :class:`PackedLayer` (others stay as they are)."""
    model = model if inplace else copy.deepcopy(model)
    names = [n for n, m in model.named_modules() if n and is_packable(m)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, PackedLayer.from_converted(model.get_submodule(name)))
    return model.eval()


def packed_layers(model: nn.Module) -> dict[str, PackedLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, PackedLayer)}


def save_packed(model: nn.Module, path: str | Path) -> int:
    """Save a packed model's state dict (tensors only); returns the file size in bytes."""
    torch.save(model.state_dict(), path)
    return Path(path).stat().st_size


def load_packed(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a file written by :func:`save_packed` into a packed model of the same architecture
    (``torch.load(weights_only=True)``: the file cannot carry code)."""
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return model.eval()
