"""Helpers for tests of the harness (and of plugins that want a tiny sweep): a small suite file, the CLI in a
subprocess, one harness cell that skips the calling test when MNIST is absent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TINY_SUITE = """
name = "tiny"
seeds = [0]

[protocol]
calibration_samples = 128
latency = false

[protocol.qat]
epochs = 1
lr = 5e-4
batch_size = 64
samples = {qat_samples}

[[targets]]
model = "{model}"
dataset = "digits"
baseline = {{ epochs = 2, lr = 3e-3 }}

[[entries]]
methods = ["uniform"]
bits = {bits}
modes = {modes}
"""


def write_suite(tmp_path: Path, *, model="mlp", bits=("W8A8", "W4A4"), modes=("ptq",), qat_samples=256,
                name="tiny.toml") -> Path:
    text = TINY_SUITE.format(model=model, bits=list(bits), modes=list(modes), qat_samples=qat_samples)
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("'", '"'))
    return path


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from quantzoo.cli import main; main()", *args]


def run_cli(*args: str, env=None, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run(cli_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def run_cell_or_skip(method: str, model: str, dataset: str, w_bits: int | None, a_bits: int | None, *,
                     protocol: dict | None = None, qat: dict | None = None, **kw) -> dict:
    """:func:`~quantzoo.bench.run_cell`, except that on ``dataset="mnist"`` a :class:`~quantzoo.errors.DataError`
    (the IDX files are absent) skips the calling test with its message, which names every place looked.

    ``qat`` overrides single fields of ``protocol["qat"]`` (e.g. a longer budget for one row); ``kw`` goes to
    ``run_cell`` as is. A DataError on the other data sets (generated or bundled, never absent) still fails.
    """
    import pytest

    from quantzoo.bench import run_cell
    from quantzoo.errors import DataError

    if qat:
        protocol = protocol or {}
        protocol = {**protocol, "qat": {**protocol.get("qat", {}), **qat}}
    try:
        return run_cell(method, model, dataset, w_bits, a_bits, protocol=protocol, **kw)
    except DataError as e:
        if dataset != "mnist":
            raise
        pytest.skip(f"MNIST not available: {e}")


def suite_row(method: str, model: str, dataset: str, w_bits: int | None, a_bits: int | None, *, mode: str,
              suite: str = "standard", config: dict | None = None) -> dict:
    """One leaderboard row of a built-in suite, recomputed for a test: the suite's protocol (without latency
    timing), the target's seeds and baseline recipe. Returns ``{"delta", "accuracy", "deltas", "seeds"}``
    with the means over seeds, as the leaderboard prints them; skips like :func:`run_cell_or_skip`."""
    import statistics

    from .suite import load_suite

    s = load_suite(suite)
    target = next((t for t in s.targets if (t.model, t.dataset) == (model, dataset)), None)
    if target is None:
        raise ValueError(f"suite {suite!r} has no target {model}/{dataset}")
    protocol = s.protocol.model_copy(update={"latency": False})
    seeds = target.seeds or s.seeds
    rows = [run_cell_or_skip(method, model, dataset, w_bits, a_bits, seed=seed, config=config, mode=mode,
                             protocol=protocol, baseline=target.baseline) for seed in seeds]
    deltas = [r["delta"] for r in rows]
    return {"delta": statistics.fmean(deltas), "accuracy": statistics.fmean(r["accuracy"] for r in rows),
            "deltas": deltas, "seeds": list(seeds)}
