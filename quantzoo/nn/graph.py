"""Which module feeds which: a model's dataflow between named modules, from one torch.fx trace.

Several jobs need it: BN folding (the BN that alone consumes a conv's output), fusion (Conv→BN→ReLU chains),
the activation that follows a layer (Distiller's clip fusions), and the layer policy (which compute layers an
activation quantizer's output reaches). They all ask :class:`ModuleGraph`. Models that torch.fx cannot trace
(data-dependent control flow) get ``None`` from :func:`trace_modules`; callers fall back to registration
order, which is forward order for ``nn.Sequential`` models.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModuleGraph:
    """The fx graph of a model seen through its named modules.

    A *node* is a ``torch.fx.Node``; ``module_of(node)`` is the submodule a ``call_module`` node runs.
    """

    def __init__(self, model: nn.Module, graph: torch.fx.Graph):
        self.model = model
        self.graph = graph
        self.modules = dict(model.named_modules())
        self.calls: dict[str, list[torch.fx.Node]] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                self.calls.setdefault(node.target, []).append(node)

    def module_of(self, node) -> nn.Module | None:
        if isinstance(node, torch.fx.Node) and node.op == "call_module":
            return self.modules.get(node.target)
        return None

    def order(self, types: tuple[type, ...]) -> list[str]:
        """Names of the modules of ``types`` in the order forward() first calls them."""
        out: list[str] = []
        for node in self.graph.nodes:
            mod = self.module_of(node)
            if mod is not None and type(mod) in types and node.target not in out and node.target:
                out.append(node.target)
        return out

    def single_user(self, node: torch.fx.Node) -> torch.fx.Node | None:
        """The only consumer of ``node``'s output, or None where there are several or none."""
        return next(iter(node.users)) if len(node.users) == 1 else None

    def next_call(self, name: str) -> torch.fx.Node | None:
        """The single consumer of the only call of module ``name`` (None if called twice or consumed twice)."""
        calls = self.calls.get(name, [])
        return self.single_user(calls[0]) if len(calls) == 1 else None

    def reached_layers(self, name: str, layers: set[str]) -> set[str]:
        """The modules in ``layers`` that the output of module ``name`` reaches first, through any chain of
        other operations (a path stops at the first layer it meets)."""
        found: set[str] = set()
        seen: set[torch.fx.Node] = set()
        stack = [u for n in self.calls.get(name, []) for u in n.users]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if node.op == "call_module" and node.target in layers:
                found.add(node.target)
                continue
            stack.extend(node.users)
        return found


def trace_modules(model: nn.Module) -> ModuleGraph | None:
    """:class:`ModuleGraph` of ``model``, or None when torch.fx cannot trace it. A copy is traced: symbolic
    tracing runs ``forward`` with proxies, and a module that updates its own state in forward (a running
    range, a counter) would keep proxies in its buffers."""
    copy_ = copy.deepcopy(model)
    try:
        gm = torch.fx.symbolic_trace(copy_)
    except Exception:  # noqa: BLE001 - any tracing failure means "no graph"; callers fall back
        return None
    return ModuleGraph(copy_, gm.graph)
