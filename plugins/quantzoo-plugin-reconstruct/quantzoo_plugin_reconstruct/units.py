"""The units a reconstruction optimises one at a time: single layers (AdaRound) or blocks (BRECQ, QDrop).

The model is traced with torch.fx (quantized layers and their quantizers as leaves). A unit is a run of
graph nodes with one input; it is executed as a small ``GraphModule`` that shares the model's modules, so
optimising it changes the model. The partition follows MQBench's automatic rule (``advanced_ptq.py``
``extract_layer``/``extract_block``), which BRECQ's hand-written ResNet blocks agree with:

* a *layer* is a Linear/Conv plus the single-input operations after it (folded BN, ReLU, pooling, flatten)
  up to the next compute layer, a fork or a join;
* a *block* starts at a compute layer; where its input forks (a residual connection) it runs to the node
  where the branches join, plus the layer tail after it; a plain chain stacks up to ``chain`` layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx, nn

from quantzoo import UnsupportedError
from quantzoo.nn import FakeQuant, QuantLayerMixin

COMPUTE = (nn.Linear, nn.Conv1d, nn.Conv2d)


class _LeafTracer(fx.Tracer):
    """torch.fx's tracer, with quantized layers and quantizers kept whole (their forward has control flow)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (QuantLayerMixin, FakeQuant)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.Graph:
    """The fx graph of ``model``; :class:`UnsupportedError` when it cannot be traced."""
    try:
        return _LeafTracer().trace(model)
    except Exception as e:  # fx raises many types for untraceable code; re-raised as UnsupportedError
        raise UnsupportedError(
            f"reconstruction needs a torch.fx-traceable model to find its layers and blocks, and tracing "
            f"{type(model).__name__} failed ({type(e).__name__}: {e}); remove data-dependent control flow "
            "from forward()") from e


@dataclass
class Unit:
    """One reconstruction unit: its graph nodes (in order) and the node whose value is its input."""

    nodes: list[fx.Node]
    input: fx.Node
    layers: list[str] = field(default_factory=list)  # names of the compute layers inside, in order

    @property
    def entry(self) -> str:
        """The compute layer that consumes the unit's input (its input is what the unit is fed)."""
        return self.layers[0]

    @property
    def output(self) -> fx.Node:
        return self.nodes[-1]

    def module(self, root: nn.Module) -> fx.GraphModule:
        """A ``GraphModule`` computing this unit from its input, sharing ``root``'s submodules."""
        graph = fx.Graph()
        env = {self.input: graph.placeholder("x")}
        for n in self.nodes:
            env[n] = graph.node_copy(n, lambda a: env[a])
        graph.output(env[self.output])
        return fx.GraphModule(root, graph)


def _is_compute(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules.get(node.target), COMPUTE)


def _tail(node: fx.Node, modules) -> list[fx.Node]:
    """Single-input operations that follow ``node`` alone, up to the next compute layer, fork or join."""
    out, cur = [], node
    while len(cur.users) == 1:
        user = next(iter(cur.users))
        if user.op == "output" or _is_compute(user, modules) or user.all_input_nodes != [cur]:
            break
        out.append(user)
        cur = user
    return out


def _region(start: fx.Node, order: list[fx.Node]) -> list[fx.Node] | None:
    """Nodes from the consumers of ``start`` to the first node after which no other value is live (the
    join of a residual block; the compute layer itself when ``start`` has one user). ``None`` if a node
    needs a value from outside, or the graph output comes first."""
    region: list[fx.Node] = []
    inside = {start}
    for node in order[order.index(start) + 1:]:
        if node.op == "output":
            return None
        if not any(a in inside for a in node.all_input_nodes):
            continue
        if not all(a in inside for a in node.all_input_nodes):
            return None
        region.append(node)
        inside.add(node)
        live = [k for k in inside if any(u not in inside for u in k.users)]
        if live == [node]:
            return region
    return None


def partition(model: nn.Module, graph: fx.Graph, pattern: str, chain: int) -> list[Unit]:
    """The reconstruction units of ``model`` in execution order; ``pattern`` is ``"layer"`` or ``"block"``
    (plain chains of up to ``chain`` layers).

    Only units that contain a quantized layer are returned (a layer kept float has nothing to learn).
    """
    modules = dict(model.named_modules())
    order = list(graph.nodes)
    units: list[Unit] = []
    covered: set[fx.Node] = set()
    for node in order:
        if node in covered or not _is_compute(node, modules):
            continue
        if len(node.all_input_nodes) != 1:
            raise UnsupportedError(f"layer {node.target!r} takes {len(node.all_input_nodes)} tensor inputs; "
                                   "reconstruction handles layers with one input")
        start = node.all_input_nodes[0]
        if pattern == "layer":
            nodes = [node, *_tail(node, modules)]
        else:
            nodes = _block(node, start, order, modules, chain)
        covered.update(nodes)
        layers = [n.target for n in nodes if _is_compute(n, modules)]
        if any(isinstance(modules[name], QuantLayerMixin) for name in layers):
            # the compute layer that consumes the input comes first (it is where the input is captured)
            layers.sort(key=lambda name: name != node.target)
            units.append(Unit(nodes, start, layers))
    return units


def _block(node, start, order, modules, chain: int) -> list[fx.Node]:
    region = _region(start, order) if len(start.users) > 1 else None
    if region is not None:  # a residual block: fork .. join, then the join's tail
        return [*region, *_tail(region[-1], modules)]
    nodes: list[fx.Node] = []
    cur = node
    for _ in range(max(chain, 1)):  # a plain chain of up to `chain` layers
        nodes += [cur, *_tail(cur, modules)]
        last = nodes[-1]
        if len(last.users) != 1:
            break
        nxt = next(iter(last.users))
        if not _is_compute(nxt, modules) or nxt.all_input_nodes != [last]:
            break
        cur = nxt
    return nodes


def run_in_chunks(module: nn.Module, x: torch.Tensor, size: int = 256) -> torch.Tensor:
    """``module(x)`` without gradient, ``size`` samples at a time."""
    with torch.no_grad():
        return torch.cat([module(x[i:i + size]) for i in range(0, len(x), size)])
