"""Harness rows (slow): int8 PTQ within 0.5 points of FP, 4-bit PACT within 1 point, on the digits, MNIST-1D and
MNIST models: the standard suite's rows recomputed (its protocol, budget and seeds; Δ is the mean over seeds, as
the leaderboard prints it)."""

import pytest

from quantzoo.bench.testing import suite_row

pytestmark = pytest.mark.slow

CELLS = [("cnn", "digits"), ("cnn1d", "mnist1d"), ("lenet5", "mnist")]


@pytest.mark.parametrize("model, dataset", CELLS)
def test_int8_ptq_within_half_point(model, dataset):
    r = suite_row("distiller-ptq", model, dataset, 8, 8, mode="ptq")
    assert r["delta"] >= -0.5, r


@pytest.mark.parametrize("model, dataset", CELLS)
def test_pact_w4a4_within_one_point(model, dataset):
    r = suite_row("distiller-pact", model, dataset, 4, 4, mode="qat")
    assert r["delta"] >= -1.0, r
