"""Harness accuracy of pact (slow: QAT; `pytest -m slow`). With the paper's α₀ = 10 and the standard suite's
short fine-tuning (3 epochs, Adam 1e-3) α barely moves, so a 4-bit step stays near 10/15: 3 seeds on the
MNIST-1D CNN gave W4A4 92.20 ± 1.45 (FP 94.40; distiller-pact, whose harness rows start α at the MSE clip,
94.10) and W2A2 70.10 ± 2.51 (distiller-pact 88.50)."""

import pytest

from quantzoo.bench.testing import run_cell_or_skip

PROTOCOL = {"calibration_samples": 512, "first_layer": "int8", "last_layer": "int8", "latency": False,
            "qat": {"epochs": 3, "lr": 1e-3, "batch_size": 64, "samples": 4096}}


@pytest.mark.slow
def test_pact_w4a4_with_the_paper_init():
    m = run_cell_or_skip("pact", "cnn1d", "mnist1d", 4, 4, seed=0, protocol=PROTOCOL, mode="qat")
    assert m["accuracy"] >= m["fp_accuracy"] - 4.0, m["accuracy"]
