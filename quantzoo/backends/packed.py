"""The ``packed`` backend: converted low-bit models stored with bit-packed weights, binary/ternary layers run on
bit-serial kernels.

Binary weights take 1 bit, ternary 2 bits, k-bit DoReFa weights ``k`` bits rounded up to 1/2/4/8, each
tensor with its scale (see :mod:`quantzoo.nn.packed`). :meth:`PackedBackend.lower` packs the model and puts
every layer whose weights are binary or ternary AND whose input quantizer yields bits (XNOR-Net, BNN,
DoReFa W1A1, TWN with 8-bit inputs) on the bit-serial kernels of :mod:`quantzoo.kernels`; the other layers
(float inputs such as BWN or TWN W2A32, 8-bit first/last layers, k-bit DoReFa weights) compute as before, by
unpacking their weights to float32. The lowered model's ``kernel_report()`` says which layer ran on what.

``real_integer`` stays False (not every packed model computes in integers); :meth:`measures_latency` is
True for a lowered model with at least one layer on the kernels, and the harness times those.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..errors import UnsupportedError
from ..nn.layers import is_packable
from ..nn.packed import PackedLayer, pack_model, packed_layers
from .base import Backend, state_dict_bytes

_COMPUTE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def kernel_report(model: nn.Module, why: bool = False) -> dict[str, str]:
    """``{layer name: what computed it}`` for every Linear/Conv layer: a kernel name such as ``"xnor-avx2"`` or
    ``"ternary-i8-avx2"`` for packed layers on the bit-serial kernels (the last forward pass's, else the
    planned one), ``"float"`` otherwise. ``why=True`` appends the reason to each ``"float"``."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, PackedLayer):
            ran = m.ran_on or (m.kernel.name if m.kernel is not None else "float")
            if why and ran == "float":
                ran = f"float: {m.kernel_note or 'the kernel did not accept the last input'}"
            out[name] = ran
        elif isinstance(m, _COMPUTE):
            out[name] = "float: not quantized" if why else "float"
    return out


class FoldedBatchNorm1d(nn.BatchNorm1d):
    """A BatchNorm1d computed by the kernel layer before it (its ``folded_norm``): it keeps its parameters and
    buffers, so the state dict is unchanged, and passes its input through."""

    def forward(self, x):
        return x


class FoldedBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d computed by the kernel layer before it (its ``folded_norm``): it keeps its parameters and
    buffers, so the state dict is unchanged, and passes its input through."""

    def forward(self, x):
        return x


_FOLDED = {nn.BatchNorm1d: FoldedBatchNorm1d, nn.BatchNorm2d: FoldedBatchNorm2d}


def fold_batch_norms_into_kernels(model: nn.Module) -> list[str]:
    """Fold each eval-mode BatchNorm that directly follows a kernel layer in an ``nn.Sequential`` into that
    layer (its epilogue computes ``y·γ/√(σ²+ε) + β − μ·γ/√(σ²+ε)``; the float path, should a call fall back to
    it, applies the BN itself); the BN becomes a :class:`FoldedBatchNorm2d`/``1d``. Returns the BNs' names.
    Layers with an output quantizer are left alone (the BN sees its output)."""
    folded = []
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (_, a), (b_name, b) in zip(children, children[1:]):
            if not (isinstance(a, PackedLayer) and a.kernel is not None and a.output_quantizer is None):
                continue
            if type(b) not in _FOLDED or b.training or b.running_mean is None:
                continue
            if (a.kind == "conv2d") != isinstance(b, nn.BatchNorm2d):
                continue
            b.__class__ = _FOLDED[type(b)]
            object.__setattr__(a, "folded_norm", b)  # a reference, not a submodule: the state dict stays as it is
            folded.append(f"{parent_name}.{b_name}" if parent_name else b_name)
    return folded


class PackedBackend(Backend):
    """Bit-packed weight storage of converted low-bit models; binary/ternary layers with bit inputs run on the
    bit-serial kernels, the rest by unpacking to float32."""

    name = "packed"
    description = ("Bit-packed 1/2/4/8-bit weight storage with scales; binary/ternary layers with binary or "
                   "k-bit inputs run on bit-serial popcount kernels, the rest by unpacking to float32.")
    real_integer = False

    def lower(self, model: nn.Module, example_input: torch.Tensor | None = None, *, kernels: bool = True,
              isa: str | None = None, fold_bn: bool = True) -> nn.Module:
        """Pack ``model``; with ``kernels`` put its binary/ternary layers on the bit-serial kernels (``isa``:
        see :func:`quantzoo.kernels.select_isa`) and, with ``fold_bn``, fold the BatchNorms that follow them
        into their epilogues. The result has ``kernel_report()`` (:func:`kernel_report`)."""
        if not any(is_packable(m) for m in model.modules()):
            raise UnsupportedError("packed: the model has no layer with a recorded low-bit weight grid; convert "
                                   "it with dorefa, twn, bnn or xnor first (or run it on 'fakequant')")
        packed = pack_model(model)
        if kernels:
            for layer in packed_layers(packed).values():
                layer.use_kernel(isa)
            if fold_bn:
                fold_batch_norms_into_kernels(packed)
        packed.kernel_report = functools.partial(kernel_report, packed)
        if example_input is not None:
            with torch.no_grad():
                packed(example_input)
        return packed

    def measures_latency(self, model: nn.Module) -> bool:
        """True where at least one layer of the lowered ``model`` runs on the bit-serial kernels."""
        return any(layer.kernel is not None for layer in packed_layers(model).values())

    def model_size_bytes(self, model: nn.Module) -> int:
        """Serialized size of the packed state dict (packs the model first if it is not packed yet)."""
        if not packed_layers(model) and any(is_packable(m) for m in model.modules()):
            model = pack_model(model)
        return state_dict_bytes(model)
