"""The zoo's data sets: ``digits``, ``mnist1d``, ``mnist`` and the detection set ``shapes``, with fixed splits and a seed-fixed
calibration subset that is identical for every method (MQBench/BiBench fairness rule 3).

``load_dataset(name, root=None)`` returns a :class:`Splits`; the registry holds one
:class:`~quantzoo.catalog.DatasetDef` per data set (registered by :mod:`quantzoo.builtins`).
"""

from __future__ import annotations

from .base import Batches, Splits, data_root_candidates, resolve_data_root
from .digits import DIGITS, load_digits_splits
from .mnist import MNIST, load_mnist_splits, read_idx
from .mnist1d import MNIST1D, load_mnist1d_splits
from .shapes import SHAPES, load_shapes_splits

CORE_DATASETS = [DIGITS, MNIST1D, MNIST, SHAPES]


def load_dataset(name: str, root: str | None = None, seed: int = 0) -> Splits:
    """The :class:`Splits` of the data set registered as ``name`` (``root``: where MNIST-like files live)."""
    from ..registry import get_registry

    return get_registry().get("dataset", name).load(root, seed)


__all__ = [
    "CORE_DATASETS", "Batches", "Splits", "DIGITS", "MNIST", "MNIST1D", "data_root_candidates", "load_dataset",
    "SHAPES", "load_digits_splits", "load_mnist1d_splits", "load_mnist_splits", "load_shapes_splits", "read_idx",
    "resolve_data_root",
]
