"""Where data-free quantization applies: pairs of compute layers joined by a chain of per-channel operations.

A *link* runs from a producer (Linear/Conv) through its BatchNorm and activation (and pooling, flatten) to
the one consumer of that output. Cross-layer equalization needs every operation in between to commute with
a positive per-channel scaling (ReLU does, ReLU6 does not); high-bias absorption also needs the activation
to be a ReLU (or none); analytic bias correction needs the consumer's input mean to follow from the
producer's BatchNorm (no max-pooling in between). A layer whose output feeds more than one consumer, or any
other operation, ends the chain (as AIMET's ``find_downstream_layer_groups_to_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx, nn

from quantzoo import UnsupportedError

COMPUTE = (nn.Linear, nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_NEUTRAL = (nn.Identity, nn.Dropout)
_MEAN_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_ACTIVATIONS = {nn.ReLU: "relu", nn.ReLU6: "relu6"}


@dataclass(frozen=True)
class Link:
    """The path from ``producer``'s output to ``consumer``'s input."""

    producer: str
    consumer: str
    bn: str | None  # the BatchNorm right after the producer
    activation: str  # "relu", "relu6" or "none"
    mean_preserving: bool  # no max-pooling: the consumer's input mean is the activation's mean
    flatten: bool  # a Flatten before a Linear consumer: each producer channel feeds several features

    @property
    def scalable(self) -> bool:
        """Positive per-channel scaling commutes with the path (CLE applies): not through ReLU6."""
        return self.activation in ("relu", "none")


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # fx raises many types for untraceable code; re-raised as UnsupportedError
        raise UnsupportedError(
            f"data-free quantization needs a torch.fx-traceable model to find its layer chains, and tracing "
            f"{type(model).__name__} failed ({type(e).__name__}: {e}); remove data-dependent control flow "
            "from forward()") from e


def find_links(model: nn.Module) -> list[Link]:
    """Every producer → consumer link of ``model`` (a float model, BatchNorms not yet folded), in order."""
    gm = trace(model)
    modules = dict(model.named_modules())
    links = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), COMPUTE):
            link = _follow(node, modules)
            if link is not None:
                links.append(link)
    return links


def _follow(producer: fx.Node, modules: dict[str, nn.Module]) -> Link | None:
    bn, activation, mean_preserving, flatten = None, "none", True, False
    cur = producer
    while True:
        if len(cur.users) != 1:
            return None
        node = next(iter(cur.users))
        mod = modules.get(node.target) if node.op == "call_module" else None
        if mod is None or node.all_input_nodes != [cur]:
            return None
        if isinstance(mod, COMPUTE):
            groups = [getattr(m, "groups", 1) for m in (modules[producer.target], mod)]
            if groups != [1, 1] or (flatten and not isinstance(mod, nn.Linear)):
                return None
            return Link(producer.target, node.target, bn, activation, mean_preserving, flatten)
        if isinstance(mod, _BN) and cur is producer:
            bn = node.target
        elif type(mod) in _ACTIVATIONS and activation == "none":
            activation = _ACTIVATIONS[type(mod)]
        elif isinstance(mod, _MAX_POOLS):
            mean_preserving = False
        elif isinstance(mod, nn.Flatten):
            flatten = True
        elif not isinstance(mod, (*_NEUTRAL, *_MEAN_POOLS)):
            return None
        cur = node
