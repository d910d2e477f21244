"""Detection metrics: box IoU, greedy NMS and COCO mean average precision (mAP@0.5, mAP@[.5:.95]).

:func:`coco_map` follows the COCO evaluation (Lin et al. 2014, arXiv:1405.0312; the reference implementation
is ``pycocotools.cocoeval.COCOeval``) for one area range ("all") and ``max_dets`` detections per image and
class:

1. per image and class, detections are taken in decreasing score (stable order on ties) and each is matched
   to the not yet matched ground-truth box of highest IoU among those with IoU >= t (on equal IoU the later
   box wins, as in COCOeval's loop); an unmatched detection is a false positive, so a duplicate of a matched
   box counts against precision;
2. per class, the detections of all images are ranked by score; recall ``tp/n_gt`` and precision
   ``tp/(tp+fp)`` are accumulated, and precision is made non-increasing from the right (the envelope);
3. AP is the mean of the envelope at the 101 recall points ``0, 0.01, ..., 1`` (the precision at the first
   rank whose recall reaches the point, 0 where recall never does);
4. mAP averages AP over the classes that have ground truth; mAP@[.5:.95] also over ``t = 0.50, 0.55, ...,
   0.95``.

Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates; IoU uses areas ``(x2-x1)(y2-y1)`` as COCO's
``[x, y, w, h]`` boxes do (no +1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError

#: COCOeval's thresholds: IoU 0.50:0.05:0.95 and recall 0:0.01:1 (101 points).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass
class Detections:
    """One image's detections: ``boxes`` (K, 4) x1y1x2y2, ``scores`` (K,), integer ``labels`` (K,)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class GroundTruth:
    """One image's ground truth: ``boxes`` (G, 4) x1y1x2y2 and integer ``labels`` (G,)."""

    boxes: np.ndarray
    labels: np.ndarray


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of x1y1x2y2 boxes; 0 where boxes do not overlap."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float = 0.5,
        max_keep: int = 100) -> torch.Tensor:
    """Indices kept by greedy per-class non-maximum suppression, best score first (Girshick et al. 2014):
    a box is dropped when a kept box of the same class overlaps it with IoU > ``iou_threshold``."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order].numpy(), boxes[order].numpy())
    same = (labels[order][:, None] == labels[order][None, :]).numpy()
    suppress = (iou > iou_threshold) & same
    alive = np.ones(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) == max_keep:
            break
        alive[i + 1:] &= ~suppress[i, i + 1:]
    return order[torch.as_tensor(keep, dtype=torch.long)]


def _match(ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """COCOeval's greedy matching for one image: ``matched[t, d]`` for detections in score order (rows of
    ``ious``) against ground-truth boxes (columns; IoU 0 between different classes, so each class is matched
    on its own). Each detection takes the unmatched box of highest IoU >= t; on equal IoU the later box, as
    COCOeval's loop does."""
    n_det, n_gt = ious.shape
    matched = np.zeros((len(thresholds), n_det), dtype=bool)
    if n_gt == 0:
        return matched
    floors = np.minimum(thresholds, 1 - 1e-10)[:, None]
    taken = np.zeros((len(thresholds), n_gt), dtype=bool)
    rows = np.arange(len(thresholds))
    # only detections that reach the lowest threshold with some box can match; the others are FPs everywhere
    for d in np.flatnonzero(ious.max(axis=1) >= floors.min()):
        ok = ~taken & (ious[d] >= floors)
        hit = ok.any(axis=1)
        if not hit.any():
            continue
        cand = np.where(ok, ious[d], -1.0)[:, ::-1]
        g = n_gt - 1 - np.argmax(cand, axis=1)  # the last box of highest IoU
        taken[rows[hit], g[hit]] = True
        matched[hit, d] = True
        if taken.all():
            break
    return matched


def _average_precision(scores: np.ndarray, matched: np.ndarray, n_gt: int) -> np.ndarray:
    """AP per threshold (rows of ``matched``) from pooled detections of one class: 101-point interpolation
    of the precision envelope."""
    order = np.argsort(-scores, kind="mergesort")
    if len(scores) == 0:
        return np.zeros(len(matched))
    tp = np.cumsum(matched[:, order], axis=1, dtype=np.float64)
    fp = np.cumsum(~matched[:, order], axis=1, dtype=np.float64)
    ap = np.zeros(len(matched))
    for t in range(len(matched)):
        recall = tp[t] / n_gt
        precision = tp[t] / (tp[t] + fp[t] + np.spacing(1))
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        reached = idx < len(envelope)  # recall points beyond the last rank's recall score 0
        q = np.zeros(len(RECALL_POINTS))
        q[reached] = envelope[idx[reached]]
        ap[t] = q.mean()
    return ap


def coco_map(detections: Sequence[Detections], ground_truth: Sequence[GroundTruth], *,
             max_dets: int = 100, iou_thresholds: np.ndarray = IOU_THRESHOLDS) -> dict[str, float]:
    """COCO mAP over images (see the module docstring): ``{"map50", "map75", "map50_95"}`` in [0, 1].

    ``map50``/``map75`` need 0.5/0.75 among ``iou_thresholds`` (the default has both). Raises
    :class:`DataError` when no image has ground truth (mAP is undefined).
    """
    if len(detections) != len(ground_truth):
        raise DataError(f"coco_map: {len(detections)} detection lists for {len(ground_truth)} images; "
                        "give one Detections per ground-truth image")
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    classes = sorted({int(c) for g in ground_truth for c in np.asarray(g.labels).ravel()})
    if not classes:
        raise DataError("coco_map: no ground-truth boxes in any image; mAP is undefined")
    scores, labels, matched, n_gt = [], [], [], dict.fromkeys(classes, 0)
    for det, gt in zip(detections, ground_truth):
        d_scores, d_labels = np.asarray(det.scores, dtype=np.float64).ravel(), np.asarray(det.labels).ravel()
        g_labels = np.asarray(gt.labels).ravel()
        for c in g_labels.tolist():
            n_gt[int(c)] += 1
        order = np.argsort(-d_scores, kind="mergesort")  # stable: per class, the same order as COCOeval's
        d_scores, d_labels = d_scores[order], d_labels[order]
        d_boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)[order]
        # at most max_dets per image and class, the best-scored ones
        rank = np.zeros(len(order), dtype=np.int64)
        for c in np.unique(d_labels):
            rank[d_labels == c] = np.arange(int((d_labels == c).sum()))
        keep = rank < max_dets
        d_scores, d_labels, d_boxes = d_scores[keep], d_labels[keep], d_boxes[keep]
        ious = box_iou(d_boxes, np.asarray(gt.boxes).reshape(-1, 4))
        ious[d_labels[:, None] != g_labels[None, :]] = 0.0
        scores.append(d_scores)
        labels.append(d_labels)
        matched.append(_match(ious, thresholds))
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    matched = np.concatenate(matched, axis=1)
    aps = [_average_precision(scores[labels == c], matched[:, labels == c], n_gt[c]) for c in classes]
    ap = np.mean(aps, axis=0)  # per threshold, over classes with ground truth
    out = {"map50_95": float(ap.mean())}
    for key, t in (("map50", 0.5), ("map75", 0.75)):
        hit = np.flatnonzero(np.isclose(thresholds, t))
        if len(hit):
            out[key] = float(ap[hit[0]])
    return out

def ground_truth_of(target: torch.Tensor) -> list[GroundTruth]:
    """Per-image ground truth from padded targets ``(N, M, 5)``: rows ``(class, x1, y1, x2, y2)``, class -1 =
    padding."""
    out = []
    for t in target.detach().cpu().numpy().astype(np.float64):
        t = t[t[:, 0] >= 0]
        out.append(GroundTruth(t[:, 1:5], t[:, 0].astype(np.int64)))
    return out
