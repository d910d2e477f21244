"""Bias correction beats min-max on real data (slow: harness cells on MNIST-1D)."""

import pytest
import torch

from quantzoo.bench import run_cell

torch.set_num_threads(1)


@pytest.mark.slow
def test_bias_correction_beats_min_max_at_w2a4():
    # seed 0 of the trend run (reconstruct plugin's bench/trend.py --bits 2/4): min-max 86.6 %, BC 88.2 %
    base = run_cell("uniform", "cnn1d", "mnist1d", 2, 4, seed=0)["accuracy"]
    assert run_cell("bias-correction", "cnn1d", "mnist1d", 2, 4, seed=0)["accuracy"] >= base + 0.8
