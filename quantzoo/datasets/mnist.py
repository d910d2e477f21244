"""MNIST from the standard IDX files in the torchvision layout ``ROOT/MNIST/raw/`` (gzip or plain)."""

from __future__ import annotations

import functools
import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from ..catalog import DatasetDef
from ..errors import DataError
from .base import Splits, resolve_data_root

RAW = "MNIST/raw"
FILES = {
    "train_x": ("train-images-idx3-ubyte", 2051, (60000, 28, 28)),
    "train_y": ("train-labels-idx1-ubyte", 2049, (60000,)),
    "test_x": ("t10k-images-idx3-ubyte", 2051, (10000, 28, 28)),
    "test_y": ("t10k-labels-idx1-ubyte", 2049, (10000,)),
}
#: The usual normalisation of MNIST (mean and std of the training pixels in [0, 1]).
MEAN, STD = 0.1307, 0.3081


def read_idx(path: Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """Parse one IDX file (``.gz`` or plain): big-endian magic, dimension sizes, then uint8 data.

    Raises :class:`DataError` naming the file when the magic number, the sizes or the length are wrong.
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"mnist: cannot read {path}: {e}; replace it with the original IDX file") from None
    ndim = len(shape)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"mnist: {path} is truncated ({len(raw)} bytes); replace it with the original IDX file")
    got_magic = struct.unpack(">i", raw[:4])[0]
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    if got_magic != magic or tuple(dims) != shape:
        raise DataError(f"mnist: {path} is not the expected IDX file (magic {got_magic}, shape {dims}; expected "
                        f"magic {magic}, shape {shape})")
    n = int(np.prod(shape))
    if len(raw) - header != n:
        raise DataError(f"mnist: {path} holds {len(raw) - header} data bytes, expected {n} (corrupt or truncated)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(raw_dir: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (raw_dir / name).is_file():
            return raw_dir / name
    raise DataError(f"mnist: {raw_dir} has no {stem}.gz (nor {stem}); expected the four IDX files "
                    + ", ".join(f[0] + ".gz" for f in FILES.values()))


@functools.lru_cache(maxsize=2)
def _arrays(raw_dir: str):
    d = Path(raw_dir)
    return {k: read_idx(_find(d, stem), magic, shape) for k, (stem, magic, shape) in FILES.items()}


def load_mnist_splits(root=None, seed: int = 0) -> Splits:
    """MNIST as ``(N, 1, 28, 28)`` floats normalised by (x/255 − 0.1307)/0.3081; the official 60k/10k split.

    ``root`` is the directory that contains ``MNIST/raw/`` (default: ``$QUANTZOO_DATA``, then
    ``../shared/data`` next to the checkout).
    """
    base = resolve_data_root(root, RAW)
    a = _arrays(str(base / RAW))

    def images(arr):
        return ((torch.from_numpy(arr.copy()).float() / 255.0 - MEAN) / STD).unsqueeze(1)

    return Splits("mnist", images(a["train_x"]), torch.from_numpy(a["train_y"].astype(np.int64)),
                  images(a["test_x"]), torch.from_numpy(a["test_y"].astype(np.int64)), num_classes=10,
                  info={"source": str(base / RAW)})


MNIST = DatasetDef(name="mnist", load=load_mnist_splits, input_shape=(1, 28, 28), num_classes=10,
                   description="MNIST IDX files from ROOT/MNIST/raw (60k train / 10k test, 1x28x28)")
