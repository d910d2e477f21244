"""BatchNorm folding: merge an eval-mode BN into the Conv/Linear that feeds it (Jacob et al. 2018, §3.2).

``W' = W·γ/σ``, ``b' = (b − μ)·γ/σ + β`` with ``σ = sqrt(var + eps)``; the BN becomes ``nn.Identity``.
Pairs are found with torch.fx where the model traces (the conv's output feeds only that BN), else among
adjacent children of ``nn.Sequential`` containers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .swap import set_submodule

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _fuse(layer: nn.Module, bn: nn.Module) -> nn.Module:
    if isinstance(layer, _CONV):
        return fuse_conv_bn_eval(layer, bn)
    return fuse_linear_bn_eval(layer, bn)


def find_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer_name, bn_name)`` pairs where the BN directly and only consumes the layer's output."""
    pairs: list[tuple[str, str]] = []
    try:
        gm = torch.fx.symbolic_trace(model)
        mods = dict(model.named_modules())
        for node in gm.graph.nodes:
            if node.op != "call_module" or not isinstance(mods.get(node.target), _BN):
                continue
            src = node.args[0] if node.args else None
            if (isinstance(src, torch.fx.Node) and src.op == "call_module"
                    and isinstance(mods.get(src.target), (*_CONV, nn.Linear)) and len(src.users) == 1):
                pairs.append((src.target, node.target))
        return pairs
    except Exception:  # untraceable models (data-dependent control flow): fall back to Sequential adjacency
        pass
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
        set_submodule(model, layer_name, _fuse(layer, bn))
        set_submodule(model, bn_name, nn.Identity())
    return model
