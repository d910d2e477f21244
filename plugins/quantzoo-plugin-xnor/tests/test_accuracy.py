"""Paper-suite accuracy on MNIST through the harness (slow: trains; run with `pytest -m slow`).

Budget (the same as benchmarks/suites/paper.toml): QAT from the cached FP checkpoint, 2 epochs, Adam lr
1e-3, cosine, batch 128 (XNOR W1A1: 5 epochs; BNN MLP: 6 epochs at 3e-3); first/last layers as the
method's defaults.
"""

import pytest

from quantzoo.bench.testing import run_cell_or_skip

PROTOCOL = {"qat": {"epochs": 2, "lr": 1e-3, "batch_size": 128}, "first_layer": "method", "last_layer": "method"}


@pytest.mark.slow
def test_bwn_lenet5_within_one_point_of_fp():
    m = run_cell_or_skip("xnor", "lenet5", "mnist", 1, None, seed=0, protocol=PROTOCOL)
    assert m["accuracy"] >= m["fp_accuracy"] - 1.0, m


@pytest.mark.slow
def test_xnor_w1a1_lenet5_at_least_98_5():
    m = run_cell_or_skip("xnor", "lenet5", "mnist", 1, 1, seed=0, protocol=PROTOCOL, qat={"epochs": 5})
    assert m["accuracy"] >= 98.5, m  # RedBit: 99.37
