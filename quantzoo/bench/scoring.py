"""What the harness scores and trains by for a (model, data set): :func:`evaluate` and :func:`loss_for`.

A data set declares its metric (``DatasetDef.metric``), a model its loss and, for detectors, its decoder
(``ModelDef.loss``, ``ModelDef.decode``). Every metric dict has ``"accuracy"``, the primary number in percent
that the leaderboard ranks by: top-1 for ``"top1"``, ``100 * mAP@0.5`` for ``"map50"`` (which also reports
``map50``, ``map75`` and ``map50_95`` in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NonFiniteOutputError, UnsupportedError
from ..metrics import accuracy, coco_map, ground_truth_of

#: The metrics a data set may declare.
METRICS = ("top1", "map50")


def _defs(model: str, dataset: str, registry=None):
    from ..registry import get_registry

    reg = registry or get_registry()
    mdef, ddef = reg.get("model", model), reg.get("dataset", dataset)
    if ddef.metric not in METRICS:
        raise UnsupportedError(f"data set {ddef.name!r} declares metric {ddef.metric!r}; known metrics: "
                               f"{', '.join(METRICS)}")
    return mdef, ddef


def loss_for(model: str, dataset: str, *, registry=None) -> Callable:
    """The training loss of ``model`` on ``dataset``: the model's declared loss, else cross-entropy."""
    mdef, _ = _defs(model, dataset, registry)
    return mdef.loss or F.cross_entropy



@torch.no_grad()
def evaluate(net: nn.Module, batches: Iterable, *, model: str, dataset: str, registry=None) -> dict[str, float]:
    """Score ``net`` (registered as ``model``) on ``batches`` of ``dataset`` by the data set's metric.

    Raises :class:`~quantzoo.errors.NonFiniteOutputError` when an output is NaN/Inf (a quantized path that blew
    up fails its cell instead of scoring as chance), :class:`UnsupportedError` when a detection data set is
    paired with a model that has no ``decode``.
    """
    mdef, ddef = _defs(model, dataset, registry)
    if ddef.metric == "top1":
        return {"accuracy": accuracy(net, batches)}
    if mdef.decode is None:
        raise UnsupportedError(f"data set {ddef.name!r} is scored by {ddef.metric}, but model {mdef.name!r} declares "
                               "no decode(output) -> detections; register it with ModelDef(decode=...)")
    net.eval()
    detections, truth = [], []
    for i, (x, y) in enumerate(batches):
        out = net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not torch.isfinite(out).all():
            raise NonFiniteOutputError(f"the model produced non-finite outputs (NaN/Inf) on batch {i}")
        detections += mdef.decode(out)
        truth += ground_truth_of(y)
    scores = coco_map(detections, truth)
    return {"accuracy": 100.0 * scores["map50"], **scores}
