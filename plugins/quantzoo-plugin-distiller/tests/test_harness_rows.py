"""Harness rows (slow): int8 PTQ within 0.5 points of FP, 4-bit PACT within 1 point, on the digits, MNIST-1D and
MNIST models, measured with quantzoo.bench.run_cell (the protocol's defaults: 8-bit first/last layers).

QAT budget: 3 epochs at lr 1e-3 for digits/MNIST-1D; MNIST uses the protocol's default budget (1 epoch)."""

import pytest

from quantzoo.bench.testing import run_cell_or_skip

pytestmark = pytest.mark.slow

CELLS = [("cnn", "digits"), ("cnn1d", "mnist1d"), ("lenet5", "mnist")]


@pytest.mark.parametrize("model, dataset", CELLS)
def test_int8_ptq_within_half_point(model, dataset):
    r = run_cell_or_skip("distiller-ptq", model, dataset, 8, 8)
    assert r["delta"] >= -0.5, r


@pytest.mark.parametrize("model, dataset", CELLS)
def test_pact_w4a4_within_one_point(model, dataset):
    train = None if dataset == "mnist" else {"epochs": 3, "lr": 1e-3}
    r = run_cell_or_skip("distiller-pact", model, dataset, 4, 4, train=train, mode="qat")
    assert r["delta"] >= -1.0, r
