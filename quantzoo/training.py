"""The one training loop used for FP baselines and for every QAT method (same budget for everyone)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .errors import DataError, NonFiniteOutputError
from .quantizer import Quantizer


class TrainConfig(BaseModel):
    """A training budget: epochs, optimizer, learning-rate schedule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(1, ge=0)
    optimizer: str = Field("adam", pattern="^(adam|sgd)$")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: str = Field("cosine", pattern="^(cosine|constant)$")


def fit(
    quantizer: Quantizer | None,
    model: nn.Module,
    loader: Iterable,
    config: TrainConfig | None = None,
    *,
    loss_fn: Callable = F.cross_entropy,
    progress: Callable[[int, int, float], None] | None = None,
) -> nn.Module:
    """Train ``model`` (a prepared model when ``quantizer`` is given, else a float model) in place.

    The quantizer's hooks run at their points: parameter groups, ``on_epoch_start``,
    ``before_optimizer_step`` and ``after_optimizer_step``. Stops at the first step with a non-finite loss
    (:class:`DataError`), gradient or parameter (:class:`NonFiniteOutputError`), naming the step and tensor:
    a finite loss can hide a gradient of 1e36 that leaves the model NaN one step later.
    """
    cfg = config or TrainConfig()
    lr, wd = cfg.lr, cfg.weight_decay
    groups = quantizer.param_groups(model, lr, wd) if quantizer else [
        {"params": [p for p in model.parameters() if p.requires_grad], "lr": lr, "weight_decay": wd}]
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=lr, weight_decay=wd)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    steps_per_epoch = max(len(loader), 1) if hasattr(loader, "__len__") else 1
    total = max(cfg.epochs * steps_per_epoch, 1)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total) if cfg.schedule == "cosine"
             else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    model.train()
    step = 0
    for epoch in range(cfg.epochs):
        if quantizer:
            quantizer.on_epoch_start(model, epoch, cfg.epochs)
        last = float("nan")
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                raise DataError(f"training diverged: loss is {loss.item()} at epoch {epoch}, step {step}; "
                                "lower the learning rate or check the method")
            loss.backward()
            _check_finite(named, step, "gradient", lambda p: p.grad)
            if quantizer:
                quantizer.before_optimizer_step(model)
            opt.step()
            if quantizer:
                quantizer.after_optimizer_step(model)
            _check_finite(named, step, "parameter", lambda p: p)
            sched.step()
            last = loss.item()
            step += 1
        if progress:
            progress(epoch + 1, cfg.epochs, last)
    if quantizer is not None:
        model._quantzoo_trained = True
    model.eval()
    return model


def _check_finite(named: list, step: int, what: str, get) -> None:
    for name, p in named:
        t = get(p)
        if t is not None and not torch.isfinite(t).all():
            worst = t.detach().abs().nan_to_num(nan=float("inf")).max().item()
            raise NonFiniteOutputError(f"training diverged at step {step}: the {what} of {name!r} is not finite "
                                       f"(max |value| {worst:.3g}); lower the learning rate or check the method")
