"""Make ``coco_map_reference.json``: random detection cases scored by pycocotools' COCOeval (the anchor of
``quantzoo.metrics.coco_map``). Needs only numpy and pycocotools, e.g. in a throwaway venv::

    python -m venv /tmp/coco && /tmp/coco/bin/pip install pycocotools numpy
    /tmp/coco/bin/python tests/data/make_coco_map_reference.py

Boxes are stored as (x1, y1, x2, y2) with x2 = x1 + w computed in float64, as handed to COCO as [x, y, w, h].
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

OUT = Path(__file__).with_name("coco_map_reference.json")


def make_case(rng: np.random.Generator, n_images: int, n_classes: int, *, tie_decimals: int | None = None,
              crowd_dets: int = 0, good: bool = False) -> dict:
    """Ground truth of 0-5 boxes per image, detections that jitter them by small to large amounts (IoU
    spread over 0.3-1), duplicates, wrong classes, random false positives, and an image without ground truth.
    ``good``: a better detector, whose true detections are tighter and score higher than its false ones."""
    images = []
    for i in range(n_images):
        n_gt = 0 if i == 0 else int(rng.integers(0, 6))
        gxy = rng.uniform(0, 80, size=(n_gt, 2))
        gwh = rng.uniform(4, 30, size=(n_gt, 2))
        glab = rng.integers(0, n_classes, size=n_gt)
        dets = []
        for g in range(n_gt):
            for _ in range(int(rng.integers(0, 3))):  # 0, 1 or 2 (a duplicate) detections per box
                jitter = rng.choice([0.02, 0.05] if good else [0.02, 0.1, 0.25])
                xy = gxy[g] + rng.normal(0, jitter, 2) * gwh[g]
                wh = gwh[g] * np.exp(rng.normal(0, jitter, 2))
                lab = glab[g] if rng.random() > 0.1 else rng.integers(0, n_classes + 1)  # some wrong / unknown
                dets.append((*xy, *wh, int(lab), 0.5 if good else 0.0))
        for _ in range(int(rng.integers(0, 4)) + crowd_dets):  # false positives anywhere
            dets.append((*rng.uniform(0, 80, 2), *rng.uniform(4, 30, 2), int(rng.integers(0, n_classes)), 0.0))
        scores = np.array([bonus for *_, bonus in dets]) + rng.random(len(dets)) * (0.5 if good else 1.0)
        if tie_decimals is not None:
            scores = np.round(scores, tie_decimals)
        images.append({"gt": [[float(a), float(b), float(a + c), float(b + d), int(lab)]
                               for (a, b), (c, d), lab in zip(gxy, gwh, glab)],
                       "dets": [[float(x), float(y), float(x + w), float(y + h), int(lab), float(s)]
                                for (x, y, w, h, lab, _), s in zip(dets, scores)]})
    return {"images": images, "num_classes": n_classes + 1}


def cocoeval(case: dict) -> dict:
    gt = {"images": [{"id": i + 1} for i in range(len(case["images"]))],
          "categories": [{"id": c + 1} for c in range(case["num_classes"])], "annotations": []}
    results = []
    for i, im in enumerate(case["images"]):
        for x1, y1, x2, y2, lab in im["gt"]:
            w, h = x2 - x1, y2 - y1
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": lab + 1,
                                      "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
        for x1, y1, x2, y2, lab, s in im["dets"]:
            results.append({"image_id": i + 1, "category_id": lab + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map50_95": float(ev.stats[0]), "map50": float(ev.stats[1]), "map75": float(ev.stats[2])}


def main():
    rng = np.random.default_rng(20260418)
    cases = [make_case(rng, 40, 3), make_case(rng, 25, 1), make_case(rng, 60, 5),
             make_case(rng, 30, 3, tie_decimals=1),   # tied scores: COCOeval's stable orders decide
             make_case(rng, 3, 2, crowd_dets=140),     # > 100 detections in an image: max_dets truncation
             make_case(rng, 50, 4, good=True)]
    for c in cases:
        c["pycocotools"] = cocoeval(c)
    from importlib.metadata import version

    OUT.write_text(json.dumps({"generator": "tests/data/make_coco_map_reference.py",
                               "pycocotools": version("pycocotools"),
                               "cases": cases}, indent=None))
    for c in cases:
        print(c["pycocotools"])


if __name__ == "__main__":
    main()
