"""Harness accuracy of gptq against round-to-nearest (slow: trains/loads FP baselines; `pytest -m slow`).

Protocol of bench/trend.py (512 calibration samples, 8-bit first/last layers); numbers of the 3-seed run are
in bench/trend_output.md (MNIST-1D CNN W3: RTN 93.07 ± 1.67, GPTQ 94.40 ± 0.66, FP 94.40).
"""

import pytest

from quantzoo.bench.testing import run_cell_or_skip

PROTOCOL = {"calibration_samples": 512, "first_layer": "int8", "last_layer": "int8", "latency": False}
ASYM3 = {"weight": {"bits": 3, "signed": False, "symmetric": False, "granularity": "per_channel"}}


@pytest.mark.slow
def test_gptq_w3_recovers_what_rtn_loses_on_the_mnist1d_cnn():
    rtn = run_cell_or_skip("uniform", "cnn1d", "mnist1d", 3, None, seed=0, config=ASYM3, protocol=PROTOCOL)
    gptq = run_cell_or_skip("gptq", "cnn1d", "mnist1d", 3, None, seed=0, protocol=PROTOCOL)
    assert gptq["accuracy"] >= rtn["accuracy"] + 1.0, (gptq["accuracy"], rtn["accuracy"])
    assert gptq["accuracy"] >= gptq["fp_accuracy"] - 1.0
