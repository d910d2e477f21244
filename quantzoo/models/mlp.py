"""A multilayer perceptron for any input shape."""

from __future__ import annotations

import math

from torch import nn


class MLP(nn.Module):
    """Flatten → (Linear → BN → ReLU) × len(hidden) → Linear.

    The shape of BNN's MNIST MLP (Courbariaux/Hubara 2016, §2: fully connected layers with BN), narrower
    (256 units instead of 2048–4096) to fit the 2-core budget.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
