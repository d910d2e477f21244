"""`Splits` (train/test tensors of one data set) and deterministic batch iteration."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import DataError

#: Seed offsets, so that the calibration subset, the hold-out split and the shuffling never share a stream.
CALIBRATION_STREAM = 1_000_003
HOLDOUT_STREAM = 2_000_003
SUBSET_STREAM = 3_000_017


class Batches:
    """Iterate ``(x, y)`` mini-batches of in-memory tensors; reshuffled on each pass from a seeded generator.

    Deterministic across processes and executors (no worker processes, no global RNG): the n-th pass of a
    ``Batches(seed=s)`` always yields the same batches. Much faster than a ``DataLoader`` over a
    ``TensorDataset`` because it slices instead of collating single samples.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False):
        if len(x) != len(y):
            raise DataError(f"inputs and labels differ in length ({len(x)} vs {len(y)})")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self._gen) if self.shuffle else None
        stop = (n // self.batch_size) * self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            if order is None:
                yield self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                yield self.x[idx], self.y[idx]


@dataclass
class Splits:
    """A data set in memory: float inputs shaped ``(N, *input_shape)`` and int64 labels.

    The split itself is fixed (it does not depend on the run seed), so every seed and every method is scored
    on the same test set; the seed only picks the calibration subset and the training order.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        for part, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if len(x) == 0:
                raise DataError(f"{self.name}: the {part} split is empty")
            if len(x) != len(y):
                raise DataError(f"{self.name}: {part} inputs and labels differ in length ({len(x)} vs {len(y)})")
            if not torch.isfinite(x).all():
                raise DataError(f"{self.name}: the {part} inputs contain NaN or Inf")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def train_batches(self, batch_size: int, seed: int, *, holdout: float = 0.0, samples: int | None = None) -> Batches:
        """Shuffled training batches (seeded); ``holdout > 0`` leaves out the :meth:`holdout_batches` part;
        ``samples`` keeps a fixed subset of that many samples (drawn by ``seed``, the same for every method)."""
        x, y = (self.train_x, self.train_y) if holdout <= 0 else self._holdout_parts(holdout)[0]
        if samples is not None and samples < len(x):
            idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(SUBSET_STREAM + int(seed)))[:samples]
            x, y = x[idx], y[idx]
        return Batches(x, y, batch_size, shuffle=True, seed=seed)

    def test_batches(self, batch_size: int = 1000) -> Batches:
        return Batches(self.test_x, self.test_y, batch_size)

    def holdout_batches(self, fraction: float, batch_size: int = 1000) -> Batches:
        """The validation part carved from the training split (fixed, seed-independent); used to choose a
        learning rate without looking at the test set."""
        x, y = self._holdout_parts(fraction)[1]
        return Batches(x, y, batch_size)

    def _holdout_parts(self, fraction: float):
        if not 0 < fraction < 1:
            raise DataError(f"holdout fraction must lie in (0, 1), got {fraction}")
        n = len(self.train_x)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_STREAM))
        k = max(1, int(round(n * fraction)))
        keep, held = order[k:], order[:k]
        return (self.train_x[keep], self.train_y[keep]), (self.train_x[held], self.train_y[held])

    def calibration_indices(self, n: int, seed: int) -> torch.Tensor:
        """Indices of the calibration subset: ``n`` training samples drawn by ``seed`` alone, so every method
        calibrates on exactly the same samples."""
        if n < 1:
            raise DataError(f"{self.name}: calibration size must be >= 1, got {n}")
        gen = torch.Generator().manual_seed(CALIBRATION_STREAM + int(seed))
        return torch.randperm(len(self.train_x), generator=gen)[: min(n, len(self.train_x))]

    def calibration_batches(self, n: int, seed: int, batch_size: int = 128) -> list[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.calibration_indices(n, seed)
        x, y = self.train_x[idx], self.train_y[idx]
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def data_root_candidates(root: str | os.PathLike | None = None) -> list[Path]:
    """Where MNIST-like files are looked for, in order: ``root``, ``$QUANTZOO_DATA``, ``../shared/data`` next
    to the checkout, ``~/.quantzoo/data``."""
    if root is not None:
        return [Path(root).expanduser()]
    out = []
    env = os.environ.get("QUANTZOO_DATA")
    if env:
        out.append(Path(env).expanduser())
    out.append(_repo_root().parent / "shared" / "data")
    out.append(Path.home() / ".quantzoo" / "data")
    return out


def resolve_data_root(root: str | os.PathLike | None, must_contain: str) -> Path:
    """The first candidate root that holds ``must_contain``; :class:`DataError` naming every place looked."""
    cands = data_root_candidates(root)
    for c in cands:
        if (c / must_contain).exists():
            return c
    looked = ", ".join(str(c / must_contain) for c in cands)
    raise DataError(f"data not found: looked in {looked}; pass --data-dir ROOT (or set QUANTZOO_DATA) so that "
                    f"ROOT/{must_contain} exists")
