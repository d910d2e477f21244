"""Top-1 accuracy, the metric of the classification data sets (``DatasetDef.metric = "top1"``)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import NonFiniteOutputError


@torch.no_grad()
def accuracy(model: nn.Module, batches) -> float:
    """Top-1 in percent; :class:`NonFiniteOutputError` if any logit is NaN/Inf (a quantized path that blew up
    must fail its cell, not score as chance)."""
    model.eval()
    correct = total = 0
    for x, y in batches:
        out = model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not torch.isfinite(out).all():
            raise NonFiniteOutputError(f"the model produced non-finite outputs (NaN/Inf) on batch {total // len(x)}")
        correct += (out.argmax(dim=1) == y).sum().item()
        total += y.numel()
    return 100.0 * correct / max(total, 1)
