"""A compute layer as one matrix product: ``out = W₂ · X`` with ``W₂ = weight.flatten(1)`` and ``X`` the
layer's input arranged as columns (im2col for convolutions).

The layer-wise PTQ methods (GPTQ's Hessian ``2XXᵀ``, AWQ's search objective ``‖Q(W·diag(s))·(diag(s)⁻¹X) −
WX‖``) are stated for a Linear layer; a convolution is the same problem once its input is unfolded into
patches whose feature order matches ``weight.flatten(1)`` (GPTQ's ``nn.Unfold`` path, Frantar et al. 2023,
arXiv:2210.17323, official ``gptq.py::GPTQ.add_batch``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedError

#: the layer types this module can unfold
MATRIX_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def check_matrix_layer(layer: nn.Module, name: str = "") -> None:
    """Raise :class:`UnsupportedError` for a layer that is not one plain matrix product over its input."""
    label = f"layer {name!r} " if name else ""
    if not isinstance(layer, MATRIX_LAYERS):
        raise UnsupportedError(f"{label}is a {type(layer).__name__}; only Linear, Conv1d and Conv2d unfold into a "
                               "matrix product")
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        if layer.groups != 1:
            raise UnsupportedError(f"{label}is a grouped convolution (groups={layer.groups}); its weight is one "
                                   "matrix per group, which this unfolding does not handle: exclude the layer")
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise UnsupportedError(f"{label}uses padding={layer.padding!r}, padding_mode={layer.padding_mode!r}; "
                                   "only explicit zero padding unfolds exactly: rebuild it with integer padding")


def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """``weight.flatten(1)``: ``[out, in·∏kernel]`` (a view of the parameter's data)."""
    return layer.weight.detach().flatten(1)


def kernel_size(layer: nn.Module) -> int:
    """Columns of :func:`weight_matrix` per input channel: 1 for Linear, ``∏kernel_size`` for a convolution
    (the flattened order is channel-major, so channel ``c`` owns columns ``c·k … c·k + k − 1``)."""
    if isinstance(layer, nn.Linear):
        return 1
    k = 1
    for d in layer.kernel_size:
        k *= d
    return k


def input_columns(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input ``x`` of ``layer`` as ``[in·∏kernel, tokens]`` columns, so that ``weight_matrix(layer) @ X``
    is the layer's output without bias (tokens: every position of every sample)."""
    check_matrix_layer(layer)
    x = x.detach().float()
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, layer.in_features).t()
    if isinstance(layer, nn.Conv1d):
        # a 1-D convolution is a 2-D one over a height-1 image
        cols = F.unfold(x.unsqueeze(2), (1, layer.kernel_size[0]), dilation=(1, layer.dilation[0]),
                        padding=(0, layer.padding[0]), stride=(1, layer.stride[0]))
    else:
        cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    return cols.permute(1, 0, 2).flatten(1)  # [N, C·k, L] -> [C·k, N·L]


def channel_values(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input ``x`` as ``[in_channels, values]``: every value each input channel takes (per-channel
    activation statistics: SmoothQuant's ``max|X_j|``, AWQ's mean ``|x|``)."""
    x = x.detach().float()
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, layer.in_features).t()
    return x.transpose(0, 1).flatten(1)


def expand_to_columns(per_channel: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """A per-input-channel vector repeated over each channel's kernel columns of :func:`weight_matrix`."""
    return per_channel.repeat_interleave(kernel_size(layer))


def channel_shape(layer: nn.Module) -> tuple[int, ...]:
    """The shape that broadcasts a per-input-channel vector against the layer's input (``[C]`` for Linear,
    ``[C, 1]`` / ``[C, 1, 1]`` for Conv1d / Conv2d inputs ``[N, C, L]`` / ``[N, C, H, W]``)."""
    if isinstance(layer, nn.Linear):
        return (-1,)
    return (-1,) + (1,) * len(layer.kernel_size)
