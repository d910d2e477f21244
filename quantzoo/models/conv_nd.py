"""The layer classes of a convolutional net for 1-D signals or 2-D images, so one model definition serves both."""

from __future__ import annotations

from torch import nn


def conv_layers(ndim: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    """(Conv, BatchNorm, AdaptiveAvgPool) for 1-D signals ``(C, L)`` or 2-D images ``(C, H, W)``."""
    if ndim == 1:
        return nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d
    if ndim == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d
    raise ValueError(f"input_shape must be (C, L) or (C, H, W), got {ndim} spatial dimensions")
