"""Reading the quantized weights out of a converted model: the one reader of weight widths.

A module declares a quantized weight in one of two ways:

* an integer attribute ``weight_bits`` with a ``dequantized_weight()`` method (packed or wrapped storage)
  or a tensor ``weight`` (quantzoo's layers after :meth:`~quantzoo.nn.QuantLayerMixin.bake`); an optional
  integer ``weight_group_size`` says the weight is quantized per group of that many input elements;
* torch.ao quantized modules, whose ``weight()`` (or ``get_weight()`` for RNNs) returns quantized tensors
  (8 bits).

The conformance kit checks these weights lie on their grid; the harness counts them for the ideal size.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

_TORCH_QUANTIZED = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torch.nn.quantized")


def find_quantized_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor, int, int | None]]:
    """``(module name, float weight values, bits, group size or None)`` of every quantized weight in ``model``."""
    for name, mod in model.named_modules():
        bits = getattr(mod, "weight_bits", None)
        if isinstance(bits, int) and not isinstance(bits, bool):
            getter = getattr(mod, "dequantized_weight", None)
            w = getter() if callable(getter) else getattr(mod, "weight", None)
            if isinstance(w, torch.Tensor):
                yield name, w.detach(), bits, getattr(mod, "weight_group_size", None)
                continue
        for label, w in _torch_quantized_weights(mod):
            yield f"{name}.{label}" if label else name, w.dequantize(), 8, None


def _torch_quantized_weights(mod: nn.Module) -> list[tuple[str, torch.Tensor]]:
    if not type(mod).__module__.startswith(_TORCH_QUANTIZED):
        return []
    found = []
    getter = getattr(mod, "get_weight", None)  # dynamic RNNs: {name: weight}
    if callable(getter):
        try:
            weights = getter()
        except Exception:  # noqa: BLE001 - a module without weights of that kind
            weights = {}
        if isinstance(weights, dict):
            found += [(k, w) for k, w in weights.items() if isinstance(w, torch.Tensor) and w.is_quantized]
    weight = getattr(mod, "weight", None)
    if callable(weight) and not found:
        try:
            w = weight()
        except Exception:  # noqa: BLE001 - packed params of another kind
            w = None
        if isinstance(w, torch.Tensor) and w.is_quantized:
            found.append(("", w))
    return found


def max_distinct(w: torch.Tensor, group_size: int | None = None) -> int:
    """The largest number of distinct values in one output channel (dim 0) of ``w``, or in one group."""
    rows = w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)
    if group_size:
        if rows.shape[1] % group_size:
            raise ValueError(f"weight_group_size {group_size} does not divide {rows.shape[1]}")
        rows = rows.reshape(-1, group_size)
    return max(int(torch.unique(r).numel()) for r in rows)


def ideal_size_bytes(converted: nn.Module, fp_model: nn.Module) -> float:
    """Bytes of the model with every quantized weight of ``converted`` at its bit width and every other
    parameter of the float model at 32 bits: ``fp bytes − Σ n·4 + Σ n·bits/8`` over the quantized weights."""
    total = 4.0 * sum(p.numel() for p in fp_model.parameters())
    for _, w, bits, _ in find_quantized_weights(converted):
        total += w.numel() * (bits / 8 - 4)
    return total
