"""Paper-suite accuracy on MNIST through the harness (slow: trains; run with `pytest -m slow`).

Budget (the same as the paper suite's low-bit entries): QAT from the cached FP checkpoint, 2 epochs,
Adam lr 1e-3, cosine, batch 128; first/last layers as the method's paper does.
"""

import pytest

PROTOCOL = {"qat": {"epochs": 2, "lr": 1e-3, "batch_size": 128}, "first_layer": "method", "last_layer": "method"}


def _run(method, model, w_bits, a_bits):
    bench = pytest.importorskip("quantzoo.bench")
    from quantzoo.errors import DataError

    try:
        return bench.run_cell(method, model, "mnist", w_bits, a_bits, seed=0, protocol=PROTOCOL)
    except DataError as e:  # MNIST files absent: say where they were looked for
        pytest.skip(f"MNIST not available: {e}")


@pytest.mark.slow
def test_bnn_w1a1_mlp_at_least_97_5():
    m = _run("bnn", "mlp", 1, 1)
    assert m["accuracy"] >= 97.5, m  # paper (3x2048 MLP, long training): 98.6
