"""Task metrics: top-1 for classification, COCO mAP for detection. Pure functions of outputs and labels; the
harness picks one per data set in :mod:`quantzoo.bench.scoring`."""

from __future__ import annotations

from .classification import accuracy
from .detection import IOU_THRESHOLDS, RECALL_POINTS, Detections, GroundTruth, box_iou, coco_map, ground_truth_of, nms

__all__ = ["IOU_THRESHOLDS", "RECALL_POINTS", "Detections", "GroundTruth", "accuracy", "box_iou", "coco_map",
           "ground_truth_of", "nms"]
