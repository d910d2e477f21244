"""The zoo's data sets: ``digits``, ``mnist1d``, ``mnist`` and the detection set ``shapes``, with fixed splits
and a seed-fixed calibration subset that is identical for every method (MQBench/BiBench fairness rule 3).

The registry holds one :class:`~quantzoo.catalog.DatasetDef` per data set (registered by
:mod:`quantzoo.builtins`); :func:`quantzoo.bench.data.load_dataset` loads one by name.
"""

from __future__ import annotations

from .base import Batches, Splits, data_root_candidates, resolve_data_root
from .digits import DIGITS, load_digits_splits
from .mnist import MNIST, load_mnist_splits, read_idx
from .mnist1d import MNIST1D, load_mnist1d_splits
from .shapes import SHAPES, load_shapes_splits

CORE_DATASETS = [DIGITS, MNIST1D, MNIST, SHAPES]


__all__ = [
    "CORE_DATASETS", "Batches", "Splits", "DIGITS", "MNIST", "MNIST1D", "SHAPES", "data_root_candidates",
    "load_digits_splits", "load_mnist1d_splits", "load_mnist_splits", "load_shapes_splits", "read_idx",
    "resolve_data_root",
]
