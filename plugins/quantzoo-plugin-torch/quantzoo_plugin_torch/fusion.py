"""Find the module groups torch.ao's ``fuse_modules`` can fuse.

The user never edits the model: the dataflow between modules (:mod:`quantzoo.nn.graph`) shows which module
feeds which (Conv→BN→ReLU, Conv→BN, Conv→ReLU, Linear→BN1d, Linear→ReLU), and the module names of each
chain are handed to ``fuse_modules`` / ``fuse_modules_qat``. A link is only taken when the producer's
output has that single consumer (fusing a tensor someone else also reads would change their input).
Models that do not trace fall back to adjacent children of ``nn.Sequential`` containers.
"""

from __future__ import annotations

import torch
from torch import nn

from quantzoo.nn.graph import ModuleGraph, trace_modules

_BN_FOR = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d,
           nn.Linear: nn.BatchNorm1d}


def _next_in_chain(graph: ModuleGraph, node: torch.fx.Node, types) -> torch.fx.Node | None:
    """The single user of ``node`` if it is a call of a module of ``types`` taking ``node`` as only input."""
    user = graph.single_user(node)
    if user is None or not isinstance(graph.module_of(user), types) or len(user.args) != 1 or user.kwargs:
        return None
    return user


def _chain(graph: ModuleGraph, start: torch.fx.Node) -> list[str]:
    """The fusable chain starting at a Conv/Linear call node (module names), or ``[]``."""
    layer = graph.module_of(start)
    names = [start.target]
    node = start
    bn = _next_in_chain(graph, node, _BN_FOR[type(layer)])
    if bn is not None:
        names.append(bn.target)
        node = bn
    relu = _next_in_chain(graph, node, nn.ReLU)
    if relu is not None and not (isinstance(layer, nn.Linear) and bn is not None):  # no Linear-BN-ReLU fuser
        names.append(relu.target)
    return names if len(names) > 1 else []


def find_fusion_groups(model: nn.Module) -> list[list[str]]:
    """Module-name groups for ``fuse_modules``, e.g. ``[['features.0', 'features.1', 'features.2']]``."""
    graph = trace_modules(model)
    if graph is None:
        return _sequential_groups(model)
    groups = []
    for node in graph.graph.nodes:
        if type(graph.module_of(node)) in _BN_FOR:
            chain = _chain(graph, node)
            if chain and all(len(graph.calls[n]) == 1 for n in chain):  # a module reused twice cannot be fused
                groups.append(chain)
    return groups


def _sequential_groups(model: nn.Module) -> list[list[str]]:
    groups = []
    for prefix, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        kids = list(mod.named_children())
        i = 0
        while i < len(kids):
            name, m = kids[i]
            chain = [name]
            if type(m) in _BN_FOR:
                if i + 1 < len(kids) and isinstance(kids[i + 1][1], _BN_FOR[type(m)]):
                    chain.append(kids[i + 1][0])
                j = i + len(chain)
                if j < len(kids) and isinstance(kids[j][1], nn.ReLU) and not (
                        isinstance(m, nn.Linear) and len(chain) == 2):
                    chain.append(kids[j][0])
            if len(chain) > 1:
                groups.append([f"{prefix}.{c}" if prefix else c for c in chain])
            i += len(chain)
    return groups
