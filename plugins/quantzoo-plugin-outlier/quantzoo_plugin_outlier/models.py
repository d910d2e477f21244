"""A benchmark model with activation outlier channels, the setting SmoothQuant and AWQ are made for.

Small models trained from scratch rarely grow the systematic outlier channels of large language models
(SmoothQuant §3: a few channels 100x larger than the rest, in the inputs of the Linear layers after
LayerNorm). :func:`add_outlier_channels` creates them by an exact reparametrisation: the LayerNorm gain and
bias of a few channels are multiplied by ``factor`` and the weight columns of the Linear layers that read that
LayerNorm are divided by it, so the network computes the same function while those input channels are
``factor`` times larger. ``transformer-outlier`` applies it to a freshly built zoo transformer before the
FP baseline is trained; the LayerNorm gains of those channels then stay near ``factor`` (the optimiser moves
them by about one learning rate per step), so the trained model keeps its outliers.
"""

from __future__ import annotations

import torch
from torch import nn

from quantzoo.models.transformer import TinyTransformer

#: the default outlier channels of the 64-wide zoo transformer and their gain
OUTLIER_CHANNELS = (5, 37)
OUTLIER_FACTOR = 50.0


@torch.no_grad()
def add_outlier_channels(model: TinyTransformer, factor: float = OUTLIER_FACTOR,
                         channels: tuple[int, ...] = OUTLIER_CHANNELS) -> TinyTransformer:
    """In every encoder block, scale ``channels`` of ``ln1`` (read by q, k, v) and ``ln2`` (read by ff1) by
    ``factor`` and divide those input columns of the reading Linears by it (in place; the function is kept)."""
    idx = torch.tensor(channels)
    for block in model.blocks:
        for ln, readers in ((block.ln1, (block.attn.q, block.attn.k, block.attn.v)), (block.ln2, (block.ff1,))):
            ln.weight[idx] *= factor
            ln.bias[idx] *= factor
            for lin in readers:
                lin.weight[:, idx] /= factor
    return model


def build_outlier_transformer(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The zoo transformer with :func:`add_outlier_channels` applied at initialisation."""
    return add_outlier_channels(TinyTransformer(input_shape, num_classes))
