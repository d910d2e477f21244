"""``shapes``: a detection data set generated offline — 1 to 4 filled shapes on a noisy 48x48 canvas.

Classes: 0 rectangle, 1 disk, 2 triangle (apex up), 3 plus sign. Each object is 10-20 px wide and high
(disks and plus signs square), drawn at a gray level in [0.55, 1] on a background level in [0, 0.25], never
touching another object (1 px apart at least); Gaussian pixel noise (sd 0.08) is added and the image clipped to
[0, 1]. A box is the tight box of the object's drawn pixels, ``(x1, y1, x2, y2)`` in pixel units with pixel
``i`` covering ``[i, i+1)``, so ``0 <= x1 < x2 <= 48``.

Targets are one padded tensor per image, shape ``(MAX_OBJECTS, 5)``: rows ``(class, x1, y1, x2, y2)``, padding
rows have class ``-1`` (the count of objects is ``(y[:, 0] >= 0).sum()``). That keeps a batch a pair of tensors,
so :class:`~quantzoo.datasets.Batches`, calibration subsets and every executor work unchanged.

Train and test images come from two independent numpy generators (seed sequences ``(GENERATOR_SEED, 0)`` and
``(GENERATOR_SEED, 1)``); the split is fixed, the run seed only picks calibration samples and training order.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..catalog import DatasetDef
from .base import Splits

CANVAS = 48
MAX_OBJECTS = 4
CLASSES = ("rectangle", "disk", "triangle", "plus")
MIN_SIZE, MAX_SIZE = 10, 20
N_TRAIN, N_TEST = 4000, 1000
GENERATOR_SEED = 18  # issue 18
TRAIN_STREAM, TEST_STREAM = 0, 1
NOISE_SD = 0.08
PLACEMENT_TRIES = 50


@functools.lru_cache(maxsize=None)
def _shape_mask(cls: int, w: int, h: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Boolean (h, w) mask of class ``cls`` filling a w x h box, sampled at pixel centres, and the tight box
    ``(x1, y1, x2, y2)`` of its pixels within the w x h box."""
    uu, vv = np.meshgrid((np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h)  # pixel centres in [0, 1]^2
    if cls == 0:
        mask = np.ones((h, w), dtype=bool)
    elif cls == 1:
        mask = (uu - 0.5) ** 2 + (vv - 0.5) ** 2 <= 0.25
    elif cls == 2:
        mask = np.abs(uu - 0.5) <= vv / 2
    else:
        mask = (np.abs(uu - 0.5) <= 1 / 6) | (np.abs(vv - 0.5) <= 1 / 6)
    rows, cols = np.nonzero(mask)
    return mask, (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)


def _overlaps(box, boxes, margin: int = 1) -> bool:
    x1, y1, x2, y2 = box
    return any(x1 < bx2 + margin and bx1 < x2 + margin and y1 < by2 + margin and by1 < y2 + margin
               for bx1, by1, bx2, by2 in boxes)


def generate(n: int, stream: int, *, seed: int = GENERATOR_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, 1, 48, 48)`` float32 and targets ``(n, MAX_OBJECTS, 5)`` float32 from one stream.

    Every random quantity is drawn up front in one array per kind (fast, and the draws do not depend on
    where placement succeeds); placement tries positions in order and skips an object that finds no room.
    """
    rng = np.random.default_rng([seed, stream])
    counts = rng.integers(1, MAX_OBJECTS + 1, size=n)
    classes = rng.integers(len(CLASSES), size=(n, MAX_OBJECTS))
    sizes = rng.integers(MIN_SIZE, MAX_SIZE + 1, size=(n, MAX_OBJECTS, 2))
    sizes[..., 1] = np.where(np.isin(classes, (1, 3)), sizes[..., 0], sizes[..., 1])  # disks, plus signs: square
    levels = rng.uniform(0.55, 1.0, size=(n, MAX_OBJECTS))
    places = rng.random(size=(n, MAX_OBJECTS, PLACEMENT_TRIES, 2))
    images = rng.uniform(0.0, 0.25, size=(n, 1, 1)) + np.zeros((n, CANVAS, CANVAS))
    noise = rng.normal(0.0, NOISE_SD, size=(n, CANVAS, CANVAS))
    # candidate top-left corners, uniform over the positions where the object fits
    corners = (places * (CANVAS - sizes[:, :, None, :] + 1)).astype(np.int64)
    classes, sizes, levels = classes.tolist(), sizes.tolist(), levels.tolist()
    targets = np.zeros((n, MAX_OBJECTS, 5), dtype=np.float32)
    targets[:, :, 0] = -1
    for i in range(n):
        boxes: list[tuple[int, int, int, int]] = []
        for j in range(int(counts[i])):
            cls, (w, h) = classes[i][j], sizes[i][j]
            for x0, y0 in corners[i, j].tolist():
                if not _overlaps((x0, y0, x0 + w, y0 + h), boxes):
                    break
            else:
                continue  # no free place: the image keeps fewer objects
            mask, (bx1, by1, bx2, by2) = _shape_mask(cls, w, h)
            images[i, y0:y0 + h, x0:x0 + w][mask] = levels[i][j]
            targets[i, len(boxes)] = (cls, x0 + bx1, y0 + by1, x0 + bx2, y0 + by2)
            boxes.append((x0, y0, x0 + w, y0 + h))
    return np.clip(images + noise, 0.0, 1.0).astype(np.float32)[:, None], targets


@functools.lru_cache(maxsize=1)
def _arrays():
    return generate(N_TRAIN, TRAIN_STREAM), generate(N_TEST, TEST_STREAM)


def load_shapes_splits(root=None, seed: int = 0) -> Splits:
    """The ``shapes`` splits; ``root`` and ``seed`` are unused (generated, fixed split)."""
    (xtr, ytr), (xte, yte) = _arrays()
    return Splits("shapes", torch.from_numpy(xtr.copy()), torch.from_numpy(ytr.copy()),
                  torch.from_numpy(xte.copy()), torch.from_numpy(yte.copy()), num_classes=len(CLASSES),
                  info={"source": "quantzoo.datasets.shapes.generate", "classes": CLASSES,
                        "split": f"{N_TRAIN} train (stream {TRAIN_STREAM}) / {N_TEST} test (stream {TEST_STREAM}),"
                                 f" generator seed {GENERATOR_SEED}",
                        "target": "(MAX_OBJECTS, 5) rows (class, x1, y1, x2, y2), class -1 = padding"})


SHAPES = DatasetDef(name="shapes", load=load_shapes_splits, input_shape=(1, CANVAS, CANVAS),
                    num_classes=len(CLASSES), metric="map50",
                    description="detection: 1-4 rectangles/disks/triangles/plus signs on a noisy 48x48 canvas, "
                                f"{N_TRAIN} train / {N_TEST} test, scored by COCO mAP@0.5")
