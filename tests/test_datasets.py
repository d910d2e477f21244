"""Data sets: shapes, fixed splits, the seed-fixed calibration subset, clear errors for missing/corrupt MNIST."""

import gzip
import struct
from pathlib import Path

import pytest
import torch

from quantzoo.bench.data import load_dataset
from quantzoo.datasets import Batches, load_mnist_splits, resolve_data_root
from quantzoo.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAVE_MNIST = (SHARED / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()


@pytest.mark.parametrize("name,shape,n_train,n_test", [("digits", (1, 8, 8), 1437, 360),
                                                       ("mnist1d", (1, 40), 4000, 1000)])
def test_bundled_datasets_shapes_and_split(name, shape, n_train, n_test):
    s = load_dataset(name)
    assert s.input_shape == shape and len(s.train_x) == n_train and len(s.test_x) == n_test
    assert s.train_y.dtype == torch.int64 and set(s.test_y.tolist()) == set(range(10))
    again = load_dataset(name, seed=7)  # the split does not depend on the seed
    assert torch.equal(again.test_x, s.test_x) and torch.equal(again.train_y, s.train_y)


def test_calibration_subset_is_fixed_by_seed_only():
    s = load_dataset("digits")
    a, b = s.calibration_indices(512, seed=0), s.calibration_indices(512, seed=0)
    assert torch.equal(a, b) and len(a) == 512 and len(set(a.tolist())) == 512
    assert not torch.equal(a, s.calibration_indices(512, seed=1))
    batches = s.calibration_batches(300, seed=0, batch_size=128)
    assert [len(x) for x, _ in batches] == [128, 128, 44]
    with pytest.raises(DataError, match="calibration size"):
        s.calibration_indices(0, seed=0)


def test_batches_deterministic_across_instances_and_epochs_differ():
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    b1, b2 = Batches(x, y, 4, shuffle=True, seed=3), Batches(x, y, 4, shuffle=True, seed=3)
    e1, e2 = [yy.tolist() for _, yy in b1], [yy.tolist() for _, yy in b2]
    assert e1 == e2 and len(b1) == 3 and sorted(sum(e1, [])) == list(range(10))
    assert [yy.tolist() for _, yy in b1] != e1  # the second pass is reshuffled


def test_holdout_is_disjoint_from_training_part():
    s = load_dataset("digits")
    held = s.holdout_batches(0.1)
    train = s.train_batches(64, seed=0, holdout=0.1)
    assert len(held.x) + len(train.x) == len(s.train_x)


def test_missing_mnist_names_the_place_and_files(tmp_path):
    with pytest.raises(DataError, match=r"MNIST/raw") as e:
        load_mnist_splits(tmp_path)
    assert str(tmp_path) in str(e.value)
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz"):
        load_mnist_splits(tmp_path)


def _write_idx(path, magic, dims, payload):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">i", magic) + struct.pack(f">{len(dims)}i", *dims) + payload)


@pytest.mark.parametrize("problem", ["truncated", "bad_magic", "not_gzip"])
def test_corrupt_mnist_file_is_a_clear_error(tmp_path, problem):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    stems = {"train-images-idx3-ubyte": (2051, (60000, 28, 28)), "train-labels-idx1-ubyte": (2049, (60000,)),
             "t10k-images-idx3-ubyte": (2051, (10000, 28, 28)), "t10k-labels-idx1-ubyte": (2049, (10000,))}
    for stem, (magic, dims) in stems.items():
        _write_idx(raw / f"{stem}.gz", magic, dims, b"\0" * 10)  # truncated payload everywhere
    target = raw / "train-images-idx3-ubyte.gz"
    if problem == "bad_magic":
        _write_idx(target, 1234, (60000, 28, 28), b"")
    elif problem == "not_gzip":
        target.write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_mnist_splits(tmp_path)


def test_data_root_env_variable(tmp_path, monkeypatch):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    monkeypatch.setenv("QUANTZOO_DATA", str(tmp_path))
    assert resolve_data_root(None, "MNIST/raw") == tmp_path


@pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST IDX files not found under {SHARED}/MNIST/raw")
def test_mnist_from_shared_copy():
    s = load_mnist_splits(SHARED)
    assert s.train_x.shape == (60000, 1, 28, 28) and s.test_x.shape == (10000, 1, 28, 28)
    assert abs(s.train_x.mean().item()) < 0.01 and abs(s.train_x.std().item() - 1) < 0.01
    assert torch.bincount(s.test_y).tolist()[:3] == [980, 1135, 1032]  # the official t10k label counts
