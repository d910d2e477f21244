"""Helpers for tests of the harness (and of plugins that want a tiny sweep): a small suite file, the CLI in a
subprocess."""

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
