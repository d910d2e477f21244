"""MNIST-1D (Greydanus 2020, arXiv:2011.14439), generated offline from the ``mnist1d`` package."""

from __future__ import annotations

import contextlib
import functools
import io

import numpy as np
import torch

from ..catalog import DatasetDef
from ..errors import DataError
from .base import Splits


@functools.lru_cache(maxsize=1)
def _arrays():
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - a core dependency
        raise DataError(f"mnist1d: the 'mnist1d' package is not importable ({e}); pip install mnist1d") from None
    args = get_dataset_args()  # the paper's defaults: 4000 train / 1000 test, length 40, seed 42
    with contextlib.redirect_stdout(io.StringIO()):  # make_dataset prints progress
        data = make_dataset(args)  # generates locally; never the download path
    return (np.asarray(data["x"], np.float32), np.asarray(data["y"], np.int64),
            np.asarray(data["x_test"], np.float32), np.asarray(data["y_test"], np.int64))


def load_mnist1d_splits(root=None, seed: int = 0) -> Splits:
    """MNIST-1D as ``(N, 1, 40)`` floats (one channel, 40 steps); its own fixed split (4000/1000)."""
    xtr, ytr, xte, yte = _arrays()
    return Splits("mnist1d", torch.from_numpy(xtr[:, None, :].copy()), torch.from_numpy(ytr.copy()),
                  torch.from_numpy(xte[:, None, :].copy()), torch.from_numpy(yte.copy()), num_classes=10,
                  info={"source": "mnist1d.make_dataset(get_dataset_args())"})


MNIST1D = DatasetDef(name="mnist1d", load=load_mnist1d_splits, input_shape=(1, 40), num_classes=10,
                     aliases=("mnist-1d",), description="MNIST-1D: 4000 train / 1000 test sequences, 1x40")
