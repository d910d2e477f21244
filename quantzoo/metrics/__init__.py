"""Task metrics: top-1 for classification, COCO mAP for detection, and :func:`evaluate`, which scores a model
by the metric its data set declares (``DatasetDef.metric``)."""

from __future__ import annotations

from .classification import accuracy
from .detection import IOU_THRESHOLDS, RECALL_POINTS, Detections, GroundTruth, box_iou, coco_map, nms
from .task import METRICS, evaluate, ground_truth_of, loss_for

__all__ = ["IOU_THRESHOLDS", "METRICS", "RECALL_POINTS", "Detections", "GroundTruth", "accuracy", "box_iou",
           "coco_map", "evaluate", "ground_truth_of", "loss_for", "nms"]
