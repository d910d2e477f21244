"""`Backend`: where a converted model runs (float simulation, int8 kernels, ONNX Runtime, packed storage)."""

from __future__ import annotations

import io
from typing import ClassVar

import torch
from torch import nn



class Backend:
    """A target that executes converted models.

    Subclasses set ``name`` and ``description``, lower a converted model (:meth:`lower`, which raises
    :class:`~quantzoo.errors.UnsupportedError` naming what it cannot run) and measure its real size
    (:meth:`model_size_bytes`). ``real_integer`` is True where the arithmetic really runs on integers (so its
    latency is meaningful to compare).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    real_integer: ClassVar[bool] = False

    def is_available(self) -> tuple[bool, str]:
        """``(True, "")`` or ``(False, reason)`` where a dependency or CPU feature is missing."""
        return True, ""

    def lower(self, model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
        """A module that runs ``model`` on this backend (raise :class:`~quantzoo.errors.UnsupportedError`)."""
        raise NotImplementedError

    def model_size_bytes(self, model: nn.Module) -> int:
        """Bytes of the model as this backend stores it (default: a serialised ``state_dict``)."""
        return state_dict_bytes(model)


def state_dict_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())`` in bytes."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes
