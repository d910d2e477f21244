"""Tensor quantizers whose values a PTQ solver computes from calibration data (GPTQ, AWQ, SmoothQuant).

A prepared model of such a method has no quantized values until the solver has run. Until then these modules
refuse to run (:class:`~quantzoo.errors.NotCalibratedError`: a quantized path never silently runs in full
precision), except inside :func:`solving`, where the solver itself runs the model and the layers it has not
reached yet pass their input through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import NotCalibratedError
from ..state_dict import AdoptSavedShapes


class _Solvable(AdoptSavedShapes, nn.Module):
    """Shared state: a ``solved`` buffer and the pass-through switch of :func:`solving` (a saved ``value``
    keeps its solved shape on load)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("solved", torch.tensor(False))
        self.passthrough = False

    def _unsolved(self, x: torch.Tensor) -> torch.Tensor:
        if self.passthrough:
            return x
        raise NotCalibratedError(f"{type(self).__name__}: the calibration solver has not computed this layer's "
                                 "quantized values; run calibrate(model, batches) first")


@contextmanager
def solving(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, layers not yet solved pass their inputs through (the solver runs the model)."""
    mods = [m for m in model.modules() if isinstance(m, _Solvable)]
    for m in mods:
        m.passthrough = True
    try:
        yield model
    finally:
        for m in mods:
            m.passthrough = False


class SolvedWeight(_Solvable):
    """A weight quantizer returning the quantized weight a solver stored with :meth:`set` (``value``).

    ``bits`` and ``group_size`` describe the grid the solver used (read by :meth:`QuantLayerMixin.bake` and the
    conformance kit); the group size counts consecutive elements of ``weight.flatten(1)``.
    """

    def __init__(self, bits: int, group_size: int | None = None):
        super().__init__()
        self.bits = bits
        self.group_size = group_size
        self.register_buffer("value", torch.empty(0))

    @torch.no_grad()
    def set(self, w: torch.Tensor) -> None:
        self.value = w.detach().clone().float()
        self.solved.fill_(True)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if bool(self.solved):
            return self.value.to(w.dtype).reshape(w.shape)
        return self._unsolved(w)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, group_size={self.group_size}, solved={bool(self.solved)}"


class ScaledInput(_Solvable):
    """``x·diag(s)⁻¹`` per input channel, then an optional input quantizer: the activation side of an exact
    channel rescaling ``(X·diag(s)⁻¹)·(diag(s)·W)`` (SmoothQuant eq. 3, AWQ eq. 2), kept as an explicit
    multiply as AWQ's ``ScaledActivation`` does where no preceding layer can absorb it.

    ``channels`` and ``shape`` (e.g. ``(-1, 1)`` for a Conv1d input) place the scale on the channel axis.
    """

    def __init__(self, channels: int, shape: tuple[int, ...] = (-1,), quantizer: nn.Module | None = None):
        super().__init__()
        self.shape = tuple(shape)
        self.quantizer = quantizer
        self.register_buffer("inv_scale", torch.ones(channels))

    @property
    def bits(self) -> int | None:
        return getattr(self.quantizer, "bits", None)

    @torch.no_grad()
    def set_scale(self, s: torch.Tensor) -> None:
        self.inv_scale.copy_(1.0 / s.float())
        self.solved.fill_(True)

    def freeze(self) -> "ScaledInput":
        if self.quantizer is not None and hasattr(self.quantizer, "freeze"):
            self.quantizer.freeze()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.solved):
            return self._unsolved(x)
        x = x * self.inv_scale.reshape(self.shape).to(x.dtype)
        return self.quantizer(x) if self.quantizer is not None else x

    def extra_repr(self) -> str:
        return f"channels={self.inv_scale.numel()}, solved={bool(self.solved)}"
