"""The small models and data of the Distiller anchor fixtures, shared by ``make_distiller_refs.py`` (which runs
Distiller on them) and ``test_anchor_distiller.py`` (which runs the plugin on them).

Each call builds a fresh subclass: Distiller's range-linear QAT patches ``type(model).forward`` to quantize the
model input, so two models must never share a class.
"""

from __future__ import annotations

import torch
from torch import nn


class _ConvNet(nn.Module):
    """Conv2d → BN → ReLU → Conv2d → ReLU → MaxPool → Linear on 1×8×8 inputs (10 classes)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.conv2, self.relu2, self.pool = nn.Conv2d(4, 6, 3), nn.ReLU(), nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 3 * 3, 10)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.conv2(x)))
        return self.fc(x.flatten(1))


class _Conv1dNet(nn.Module):
    """Conv1d → ReLU → Linear on 1×12 inputs (Distiller quantizes no Conv1d weights)."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.fc = nn.Conv1d(1, 3, 3), nn.ReLU(), nn.Linear(3 * 10, 4)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return type("ConvNet", (_ConvNet,), {})()


def conv1d_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return type("Conv1dNet", (_Conv1dNet,), {})()


def batches(n: int, shape=(1, 8, 8), classes: int = 10, size: int = 16, seed: int = 1):
    """``n`` seeded ``(x, y)`` batches."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, *shape, generator=g), torch.randint(0, classes, (size,), generator=g))
            for _ in range(n)]
