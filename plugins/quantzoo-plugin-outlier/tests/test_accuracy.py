"""Harness accuracy of awq and smoothquant (slow: trains/loads FP baselines; `pytest -m slow`).

Protocol of plugins/quantzoo-plugin-gptq/bench/trend.py; the 3-seed numbers are in its trend_output.md.
"""

import pytest

from quantzoo.bench.testing import run_cell_or_skip

PROTOCOL = {"calibration_samples": 512, "first_layer": "int8", "last_layer": "int8", "latency": False}
TRANSFORMER = {"epochs": 15, "lr": 2e-3}
ASYM3 = {"weight": {"bits": 3, "signed": False, "symmetric": False, "granularity": "per_channel"}}


@pytest.mark.slow
def test_awq_w3_beats_rtn_on_the_mnist1d_cnn():
    rtn = run_cell_or_skip("uniform", "cnn1d", "mnist1d", 3, None, seed=0, config=ASYM3, protocol=PROTOCOL)
    awq = run_cell_or_skip("awq", "cnn1d", "mnist1d", 3, None, seed=0, protocol=PROTOCOL)
    assert awq["accuracy"] >= rtn["accuracy"] + 1.0, (awq["accuracy"], rtn["accuracy"])


@pytest.mark.slow
def test_smoothquant_w8a8_beats_min_max_on_the_outlier_transformer():
    kw = dict(seed=0, protocol=PROTOCOL, baseline=TRANSFORMER)
    naive = run_cell_or_skip("uniform", "transformer-outlier", "mnist1d", 8, 8, **kw)
    sq = run_cell_or_skip("smoothquant", "transformer-outlier", "mnist1d", 8, 8, **kw)
    assert sq["accuracy"] >= naive["accuracy"] + 2.0, (sq["accuracy"], naive["accuracy"])
    assert sq["accuracy"] >= sq["fp_accuracy"] - 1.0
