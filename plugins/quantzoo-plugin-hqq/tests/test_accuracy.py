"""Harness accuracy of hqq against round-to-nearest on the same grid (slow; `pytest -m slow`).

Protocol of plugins/quantzoo-plugin-gptq/bench/trend.py (transformer W3: RTN 84.13 ± 0.06, HQQ 85.40 ± 0.26).
"""

import pytest

from quantzoo.bench.testing import run_cell_or_skip

PROTOCOL = {"calibration_samples": 512, "first_layer": "int8", "last_layer": "int8", "latency": False}
ASYM3 = {"weight": {"bits": 3, "signed": False, "symmetric": False, "granularity": "per_channel"}}


@pytest.mark.slow
def test_hqq_w3_beats_min_max_rounding_on_the_transformer():
    kw = dict(seed=0, protocol=PROTOCOL, baseline={"epochs": 15, "lr": 2e-3})
    rtn = run_cell_or_skip("uniform", "transformer", "mnist1d", 3, None, config=ASYM3, **kw)
    hqq = run_cell_or_skip("hqq", "transformer", "mnist1d", 3, None, **kw)
    assert hqq["accuracy"] >= rtn["accuracy"] + 0.5, (hqq["accuracy"], rtn["accuracy"])
