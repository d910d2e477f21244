"""The float reference backend: converted models run as fake-quantized float32 modules."""

from __future__ import annotations

import torch
from torch import nn

from .base import Backend


class FakeQuantBackend(Backend):
    """Runs the converted model as is, in float32 with quantized weight values and fake-quantized
    activations. Every spec is executable; the stored size is the float size (no real compression)."""

    name = "fakequant"
    description = "Float32 simulation of quantization (the reference every other backend is compared to)."

    def lower(self, model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
        return model.eval()
