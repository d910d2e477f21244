"""Harness accuracy of lsq (slow: QAT; `pytest -m slow`). The standard suite's QAT budget (3 epochs, Adam 1e-3,
cosine); 3 seeds on the MNIST-1D CNN gave W4A4 94.00 ± 0.75 (FP 94.40), W2A2 84.33 ± 1.17 (nni-lsq 84.13)."""

import pytest

from quantzoo.bench.testing import run_cell_or_skip

PROTOCOL = {"calibration_samples": 512, "first_layer": "int8", "last_layer": "int8", "latency": False,
            "qat": {"epochs": 3, "lr": 1e-3, "batch_size": 64, "samples": 4096}}


@pytest.mark.slow
def test_lsq_w4a4_within_a_point_and_a_half_of_fp():
    m = run_cell_or_skip("lsq", "cnn1d", "mnist1d", 4, 4, seed=0, protocol=PROTOCOL, mode="qat")
    assert m["accuracy"] >= m["fp_accuracy"] - 1.5, m["accuracy"]
