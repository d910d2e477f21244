"""The ``packed`` backend: converted low-bit models stored with bit-packed weights.

Binary weights take 1 bit, ternary 2 bits, k-bit DoReFa weights ``k`` bits rounded up to 1/2/4/8, each
tensor with its scale (see :mod:`quantzoo.nn.packed`). The model computes by unpacking the weights to
float on every call, so ``real_integer`` is False: the point is the storage, and its measured size.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedError
from ..nn.layers import is_packable
from ..nn.packed import pack_model, packed_layers
from .base import Backend, state_dict_bytes


class PackedBackend(Backend):
    """Bit-packed weight storage of converted low-bit models; runs by unpacking to float32."""

    name = "packed"
    description = "Bit-packed 1/2/4/8-bit weight storage with scales; computes by unpacking (storage, not speed)."
    real_integer = False

    def lower(self, model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
        if not any(is_packable(m) for m in model.modules()):
            raise UnsupportedError("packed: the model has no layer with a recorded low-bit weight grid; convert "
                                   "it with dorefa, twn, bnn or xnor first (or run it on 'fakequant')")
        packed = pack_model(model)
        if example_input is not None:
            with torch.no_grad():
                packed(example_input)
        return packed

    def model_size_bytes(self, model: nn.Module) -> int:
        """Serialized size of the packed state dict (packs the model first if it is not packed yet)."""
        if not packed_layers(model) and any(is_packable(m) for m in model.modules()):
            model = pack_model(model)
        return state_dict_bytes(model)
