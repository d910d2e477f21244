"""Reconstruction beats min-max on real data (slow: harness cells on MNIST-1D, about a minute each)."""

import pytest
import torch

from quantzoo.bench import run_cell

torch.set_num_threads(1)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adaround", "brecq", "qdrop"])
def test_reconstruction_beats_min_max_at_w2a4(method):
    # seed 0 of the trend run (bench/trend.py --bits 2/4): min-max 86.6 %, FP 93.6 %
    base = run_cell("uniform", "cnn1d", "mnist1d", 2, 4, seed=0)["accuracy"]
    got = run_cell(method, "cnn1d", "mnist1d", 2, 4, seed=0)
    assert got["accuracy"] >= base + 2.0, (got["accuracy"], base)
    assert got["accuracy"] <= got["fp_accuracy"] + 0.5
