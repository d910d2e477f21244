"""Which activation follows each compute layer (Distiller's adjacency-map "fusions")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quantzoo.nn.graph import trace_modules

_MODULE_KIND = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
_FUNCTION_KIND = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", torch.tanh: "tanh",
                  torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.tanh: "tanh"}
_METHOD_KIND = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}


def successor_kinds(model: nn.Module, layers: list[str]) -> dict[str, str]:
    """``{layer: "relu"|"relu6"|"tanh"|"sigmoid"}`` for layers whose only consumer is that activation.

    Uses the model's dataflow (:class:`quantzoo.nn.graph.ModuleGraph`) where it traces, else adjacent children of
    ``nn.Sequential`` containers.
    """
    wanted = set(layers)
    out: dict[str, str] = {}
    graph = trace_modules(model)
    if graph is not None:
        for name in wanted:
            user = graph.next_call(name)
            # a folded BN is left as nn.Identity: look through it (Distiller rebuilds its graph after folding)
            while user is not None and isinstance(graph.module_of(user), nn.Identity):
                user = graph.single_user(user)
            kind = None
            if user is None:
                continue
            if user.op == "call_module":
                kind = _MODULE_KIND.get(type(graph.module_of(user)))
            elif user.op == "call_function":
                kind = _FUNCTION_KIND.get(user.target)
            elif user.op == "call_method":
                kind = _METHOD_KIND.get(user.target)
            if kind:
                out[name] = kind
        return out
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Sequential):
            children = [(n, c) for n, c in mod.named_children() if not isinstance(c, nn.Identity)]
            for (a_name, _), (_, b) in zip(children, children[1:]):
                full = f"{name}.{a_name}" if name else a_name
                if full in wanted and type(b) in _MODULE_KIND:
                    out[full] = _MODULE_KIND[type(b)]
    return out
