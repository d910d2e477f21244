"""BatchNorm folding: merge an eval-mode BN into the Conv/Linear that feeds it (Jacob et al. 2018, §3.2).

``W' = W·γ/σ``, ``b' = (b − μ)·γ/σ + β`` with ``σ = sqrt(var + eps)``; the BN becomes ``nn.Identity``.
Pairs are found with torch.fx where the model traces (the conv's output feeds only that BN), else among
adjacent children of ``nn.Sequential`` containers.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .graph import trace_modules
from .swap import set_submodule

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def fuse_bn(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A new layer computing ``bn(layer(x))`` with ``bn``'s running statistics folded in (both left as they
    are; the result keeps ``layer``'s train/eval mode)."""
    was_training = layer.training
    layer, bn = copy.deepcopy(layer).eval(), copy.deepcopy(bn).eval()
    fused = fuse_conv_bn_eval(layer, bn) if isinstance(layer, _CONV) else fuse_linear_bn_eval(layer, bn)
    return fused.train(was_training)


def find_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer_name, bn_name)`` pairs where the BN directly and only consumes the layer's output."""
    graph = trace_modules(model)
    pairs: list[tuple[str, str]] = []
    if graph is not None:
        for name, calls in graph.calls.items():
            if not isinstance(graph.modules.get(name), (*_CONV, nn.Linear)):
                continue
            user = graph.next_call(name)
            if isinstance(graph.module_of(user), _BN) and user.args and user.args[0] is calls[0]:
                pairs.append((name, user.target))
        return pairs
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Sequential):
            children = list(mod.named_children())
            for (a_name, a), (b_name, b) in zip(children, children[1:]):
                if isinstance(a, (*_CONV, nn.Linear)) and isinstance(b, _BN):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a_name, prefix + b_name))
    return pairs


def fold_batch_norms(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (eval mode) with every foldable BN merged into its producer."""
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for layer_name, bn_name in find_bn_pairs(model):
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        if isinstance(layer, nn.Linear) and not isinstance(bn, nn.BatchNorm1d):
            continue
        set_submodule(model, layer_name, fuse_bn(layer, bn))
        set_submodule(model, bn_name, nn.Identity())
    return model
