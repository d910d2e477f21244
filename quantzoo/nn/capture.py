"""Capturing the tensors that reach chosen modules on calibration data.

Reconstruction and data-aware PTQ methods (AdaRound, BRECQ, GPTQ, AWQ, SmoothQuant, bias correction) all
start the same way: run calibration batches through the model and keep what enters (or leaves) some layers.
This module is the one place that does it, with forward hooks that are always removed again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import DataError


def batch_inputs(batch) -> torch.Tensor:
    """The model input of a calibration batch: a tensor, or the first item of an ``(x, y)`` pair."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@contextmanager
def recording(model: nn.Module, names: Iterable[str], *, outputs: bool = False) -> Iterator[dict[str, list]]:
    """Within the block, every forward call of the named submodules appends its first positional input
    (or, with ``outputs=True``, its output) to ``records[name]``, detached. Hooks are removed on exit."""
    names = list(names)
    records: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = []
    for name in names:
        mod = model.get_submodule(name)

        def hook(_mod, args, out, name=name):
            t = out if outputs else args[0]
            if torch.is_tensor(t):
                records[name].append(t.detach())

        handles.append(mod.register_forward_hook(hook))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def capture(model: nn.Module, names: Iterable[str], batches: Iterable, *, outputs: bool = False,
            ) -> dict[str, torch.Tensor]:
    """Run ``batches`` through ``model`` (eval mode, no grad) and return, per named submodule, its inputs
    (or outputs) concatenated along the batch dimension. The model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    n = 0
    try:
        with recording(model, names, outputs=outputs) as records:
            for batch in batches:
                model(batch_inputs(batch))
                n += 1
    finally:
        model.train(was_training)
    if n == 0:
        raise DataError("the calibration set is empty; give at least one batch")
    missing = [k for k, v in records.items() if not v]
    if missing:
        raise DataError(f"module(s) {', '.join(map(repr, missing[:5]))} never ran on the calibration data; "
                        "check the names, or that the model's forward calls them")
    return {k: torch.cat(v, dim=0) for k, v in records.items()}
