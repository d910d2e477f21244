"""Binary activations and the BatchNorm that precedes them (BNN, XNOR-Net)."""

from __future__ import annotations

from torch import nn

from ..math import binarize
from .swap import set_submodule


class InputBatchNorm(nn.Module):
    """BatchNorm over the channel dimension of a layer's input: dim 1 for convolutions, the last dim for
    Linear (any leading shape). The "BN" that precedes the binary activation in BNN (Alg. 1) and XNOR-Net
    (§3.2, block BN → BinActiv → BinConv → Pool)."""

    def __init__(self, num_features: int, conv: bool):
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(num_features) if conv else nn.BatchNorm1d(num_features)

    def forward(self, x):
        if self.conv:
            if x.dim() == 3:  # Conv1d input (N, C, L)
                return self.bn(x.unsqueeze(-1)).squeeze(-1)
            return self.bn(x)
        shape = x.shape
        return self.bn(x.reshape(-1, shape[-1])).reshape(shape)


def input_batchnorm(mod: nn.Module) -> InputBatchNorm:
    """An :class:`InputBatchNorm` sized for the input of ``mod`` (Linear/Conv1d/Conv2d)."""
    if isinstance(mod, nn.Linear):
        return InputBatchNorm(mod.in_features, conv=False)
    return InputBatchNorm(mod.in_channels, conv=True)


class BinaryActivation(nn.Module):
    """``sign(BN(x))`` with the straight-through gradient cancelled where ``|BN(x)| > 1`` (BNN, Hubara et al.
    2016, arXiv:1602.02830 Alg. 1 and eq. 4). ``norm=None`` binarizes ``x`` directly."""

    bits = 1

    def __init__(self, norm: nn.Module | None = None, clip: float | None = 1.0):
        super().__init__()
        self.norm = norm
        self.clip = clip

    def normalized(self, x):
        return self.norm(x) if self.norm is not None else x

    def forward(self, x):
        return binarize(self.normalized(x), self.clip)


def replace_relus(model: nn.Module, names: list[str], make=nn.Identity) -> int:
    """Replace the ``nn.ReLU`` modules among ``names`` by ``make()`` (binary nets use sign as their
    nonlinearity); returns how many were replaced. Functional ``F.relu`` calls cannot be seen and stay."""
    done = 0
    for name in names:
        if isinstance(model.get_submodule(name), nn.ReLU):
            set_submodule(model, name, make())
            done += 1
    return done
