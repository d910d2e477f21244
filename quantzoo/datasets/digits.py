"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), offline."""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..catalog import DatasetDef
from .base import Splits

#: Fixed split: 80/20 stratified, split seed 0.
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _arrays():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]  # pixel values 0..16 -> [0, 1], shape N,1,8,8
    y = d.target.astype(np.int64)
    return train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)


def load_digits_splits(root=None, seed: int = 0) -> Splits:
    """Digits as ``(N, 1, 8, 8)`` floats in [0, 1]; ``root`` and ``seed`` are unused (bundled, fixed split)."""
    xtr, xte, ytr, yte = _arrays()
    return Splits("digits", torch.from_numpy(xtr.copy()), torch.from_numpy(ytr.copy()),
                  torch.from_numpy(xte.copy()), torch.from_numpy(yte.copy()), num_classes=10,
                  info={"source": "sklearn.datasets.load_digits", "split": "80/20 stratified, seed 0"})


DIGITS = DatasetDef(name="digits", load=load_digits_splits, input_shape=(1, 8, 8), num_classes=10,
                    description="scikit-learn 8x8 digits: 1437 train / 360 test, 1x8x8 in [0, 1]")
