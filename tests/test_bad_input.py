"""Bad input at every user-facing entry point: a clear one-line error, exit code 2, no traceback (issue 8).

Each bad input is one entry of :data:`CLI_CASES` (the ``quantzoo`` command line, run in-process with click's
runner) or :data:`API_CASES` (the Python API); the number of distinct bad inputs tested is
``len(CLI_CASES) + len(API_CASES) + len(SUBPROCESS_CASES)`` (printed by ``test_count_of_distinct_bad_inputs``).

"Before long work starts" is enforced, not hoped for: the CLI cases run with the FP-baseline trainer replaced
by a function that raises :class:`LongWorkStarted` (a ``BaseException`` that no error handler catches), so a
bad input that is only noticed after training would fail its test.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import quantzoo
from quantzoo import QuantSpec
from quantzoo.cli import main
from quantzoo.errors import ConfigError, DataError, QuantzooError, UnknownNameError, UnsupportedError

MNIST_RAW = Path("/work/shared/data/MNIST/raw")


class LongWorkStarted(BaseException):
    """Raised if a bad input reaches the FP baseline (training or loading): it was not rejected up front."""


@dataclass(frozen=True)
class Bad:
    """One bad CLI input: ``args`` (``{tmp}`` is the test's directory), files to create first, and a piece of
    text the one-line error must contain (it names the field and usually the fix)."""

    id: str
    args: tuple[str, ...]
    needle: str
    files: dict = field(default_factory=dict)  # relative path -> str | bytes


def Q(*extra, method="uniform", model="mlp", dataset="digits", out="{tmp}/out.pt"):
    """``quantzoo quantize`` arguments with the defaults replaced/extended."""
    return ("quantize", "--method", method, "--model", model, "--dataset", dataset, "--out", out, *extra)


TARGET = '[[targets]]\nmodel = "mlp"\ndataset = "digits"\n'
ENTRY = '[[entries]]\nmethods = ["uniform"]\n'


def suite(text: str) -> dict:
    return {"s.toml": text}


def _idx_gz(magic: int, dims: tuple, payload: bytes) -> bytes:
    import struct

    return gzip.compress(struct.pack(f">i{len(dims)}i", magic, *dims) + payload)


def mnist_dir(broken: str | None, content: bytes | None) -> dict:
    """A data directory ``{tmp}/data/MNIST/raw`` with tiny stand-ins for the four IDX files, one of them
    replaced by ``content`` (or missing when ``content`` is None). The stand-ins are tiny but well-formed
    headers, so the reader fails on the first file it checks, which is what the message must name."""
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    files = {f"data/MNIST/raw/{n}.gz": _idx_gz(2051, (1, 28, 28), bytes(784)) for n in names}
    if broken is not None:
        key = f"data/MNIST/raw/{broken}.gz"
        if content is None:
            del files[key]
        else:
            files[key] = content
    return files


DISTILLER_BITS_OVERRIDES = """
quantizers:
  q:
    class: PostTrainLinearQuantizer
    bits_activations: 8
    bits_overrides:
      conv1: {acts: null, wts: null}
"""
DISTILLER_BAD_REGEX = """
quantizers:
  q:
    class: PostTrainLinearQuantizer
    bits_activations: 8
    bits_parameters: 8
    overrides:
      'fc[': {bits_weights: 4}
"""
DISTILLER_BAD_BITS = "quantizers:\n  q:\n    class: PostTrainLinearQuantizer\n    bits_activations: 33\n"
DISTILLER_UNKNOWN_CLASS = "quantizers:\n  q:\n    class: MagicQuantizer\n    bits_activations: 8\n"

def _empty_results_db() -> bytes:
    """The bytes of a results database that `quantzoo bench` created and that holds no rows yet."""
    import tempfile

    from quantzoo.bench.db import ResultsDB

    with tempfile.TemporaryDirectory() as d:
        db = ResultsDB(Path(d) / "r.sqlite")
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        return (Path(d) / "r.sqlite").read_bytes()


EMPTY_RESULTS_DB = _empty_results_db()

CLI_CASES: list[Bad] = [
    # -- options of every command -----------------------------------------------------------------------
    Bad("list-bad-kind", ("list", "--kind", "quantiser"), "quantiser"),
    Bad("list-unknown-option", ("list", "--colour"), "--colour"),
    Bad("info-unknown-name", ("info", "unifrom"), "Did you mean"),
    Bad("info-wrong-kind", ("info", "uniform", "--kind", "model"), "Unknown model"),
    Bad("info-missing-name", ("info",), "Missing argument"),
    Bad("plugins-typo-option", ("plugins", "--jsn"), "--jsn"),
    Bad("unknown-command", ("benchmark",), "benchmark"),
    Bad("new-plugin-bad-name", ("new-plugin", "My Method!", "--dir", "{tmp}"), "My Method!"),
    Bad("bench-no-suite", ("bench",), "--suite"),
    Bad("bench-unknown-suite", ("bench", "--suite", "quik"), "unknown suite"),
    Bad("bench-missing-suite-file", ("bench", "--suite", "{tmp}/missing.toml"), "does not exist"),
    Bad("bench-jobs-0", ("bench", "--suite", "quick", "--jobs", "0"), "--jobs"),
    Bad("bench-jobs-word", ("bench", "--suite", "quick", "--jobs", "many"), "many"),
    Bad("bench-executor", ("bench", "--suite", "quick", "--executor", "dask"), "dask"),
    Bad("bench-format", ("bench", "--suite", "quick", "--format", "xml"), "xml"),
    Bad("bench-methods-match-nothing", ("bench", "--suite", "quick", "--methods", "zzz*"), "selects no cell"),
    Bad("bench-models-match-nothing", ("bench", "--suite", "quick", "--models", "vgg16"), "selects no target"),
    Bad("bench-db-is-a-directory", ("bench", "--suite", "quick", "--db", "{tmp}"), "directory"),
    Bad("bench-db-not-a-database", ("bench", "--suite", "{tmp}/s.toml", "--db", "{tmp}/junk.sqlite"),
        "junk.sqlite", {"s.toml": f'name = "s"\n{TARGET}', "junk.sqlite": "this is not SQLite\n" * 100}),
    Bad("bench-data-dir-is-a-file", ("bench", "--suite", "quick", "--data-dir", "{tmp}/s.toml"), "s.toml",
        {"s.toml": "x"}),
    Bad("leaderboard-missing-db", ("leaderboard", "--db", "{tmp}/missing.sqlite"), "does not exist"),
    Bad("leaderboard-not-a-database", ("leaderboard", "--db", "{tmp}/junk.sqlite"), "junk.sqlite",
        {"junk.sqlite": b"\x00\x01garbage" * 200}),
    Bad("leaderboard-format", ("leaderboard", "--format", "xml"), "xml"),
    Bad("leaderboard-empty-file", ("leaderboard", "--db", "{tmp}/empty.sqlite"), "not a quantzoo results database",
        {"empty.sqlite": b""}),
    Bad("leaderboard-unknown-suite", ("leaderboard", "--db", "{tmp}/r.sqlite", "--suite", "quik"), "quik",
        {"r.sqlite": EMPTY_RESULTS_DB}),
    # -- quantize: names, bits, modes, numbers ------------------------------------------------------------
    Bad("quantize-no-out", ("quantize", "--method", "uniform", "--model", "mlp", "--dataset", "digits"), "--out"),
    Bad("quantize-unknown-method", Q(method="unifrom"), "Did you mean: uniform"),
    Bad("quantize-unknown-model", Q(model="resnet50"), "Unknown model"),
    Bad("quantize-unknown-dataset", Q(dataset="cifar10"), "Unknown dataset 'cifar10'"),
    Bad("quantize-model-misfit", Q(model="lenet5"), "does not fit"),
    Bad("quantize-bits-eight", Q("--bits", "eight"), "W<n>A<m>"),
    Bad("quantize-bits-0", Q("--bits", "W0A8"), "weight widths lie in 1..16"),
    Bad("quantize-bits-33", Q("--bits", "W33A8"), "weight widths lie in 1..16"),
    Bad("quantize-bits-negative", Q("--bits", "W-1A8"), "W<n>A<m>"),
    Bad("quantize-bits-unsupported", Q("--bits", "W1A1"), "uniform supports"),
    Bad("quantize-bits-unsupported-binary", Q("--bits", "W4A4", method="bnn"), "W1A1"),
    Bad("quantize-xnor-w4a4", Q("--bits", "W4A4", method="xnor"), "xnor supports W1A1 or W1A32"),
    Bad("quantize-twn-w8a8", Q("--bits", "W8A8", method="twn"), "twn supports W2A8 or W2A32"),
    Bad("quantize-int8-only-w4a4", Q("--bits", "W4A4", method="torch-dynamic"), "torch-dynamic supports W8A8"),
    Bad("quantize-brevitas-w1", Q("--bits", "W1A1", method="brevitas-ptq"), "weights 2..8 bits"),
    Bad("quantize-mode", Q("--mode", "train"), "train"),
    Bad("quantize-mode-unsupported", Q("--mode", "qat", method="torch-dynamic"), "QAT"),
    Bad("quantize-epochs-negative", Q("--epochs", "-1"), "--epochs"),
    Bad("quantize-seed-word", Q("--seed", "abc"), "abc"),
    Bad("quantize-out-is-a-directory", Q(out="{tmp}"), "directory"),
    # -- --set key=value ----------------------------------------------------------------------------------
    Bad("set-no-equals", Q("--set", "oops"), "key=value"),
    Bad("set-bits-0", Q("--set", "weight.bits=0"), "bits=0"),
    Bad("set-bits-minus-1", Q("--set", "weight.bits=-1"), "bits=-1"),
    Bad("set-bits-33", Q("--set", "weight.bits=33"), "bits=33"),
    Bad("set-bits-eight", Q("--set", "weight.bits=eight"), "weight: bits must be an integer such as 8, got 'eight'"),
    Bad("set-bits-fraction", Q("--set", "weight.bits=8.5"), "got 8.5"),
    Bad("set-unknown-field", Q("--set", "wieght.bits=4"), "wieght"),
    Bad("set-bad-literal", Q("--set", "first_layer=fp16"), "first_layer"),
    Bad("set-binary-asymmetric", Q("--set", "activation.dtype=binary", "--set", "activation.bits=1",
                                   "--set", "activation.symmetric=false"), "symmetric"),
    Bad("set-per-group-without-size", Q("--set", "weight.granularity=per_group"), "group_size"),
    Bad("set-unknown-observer", Q("--set", "weight_observer=minimax"), "minimax"),
    Bad("set-bool-word", Q("--set", "learnable_scale=maybe"), "learnable_scale"),
    Bad("set-nested-into-scalar", Q("--set", "first_layer.bits=4"), "first_layer"),
    # -- --config files -----------------------------------------------------------------------------------
    Bad("config-missing", Q("--config", "{tmp}/missing.yaml"), "does not exist"),
    Bad("config-malformed-json", Q("--config", "{tmp}/c.json"), "c.json", {"c.json": '{"weight": {"bits": 4,'}),
    Bad("config-truncated-yaml", Q("--config", "{tmp}/c.yaml"), "c.yaml", {"c.yaml": "weight:\n  bits: [4\n"}),
    Bad("config-truncated-toml", Q("--config", "{tmp}/c.toml"), "c.toml", {"c.toml": "[weight]\nbits = "}),
    Bad("config-unknown-extension", Q("--config", "{tmp}/c.ini"), ".ini", {"c.ini": "[weight]\nbits=4\n"}),
    Bad("config-not-a-mapping", Q("--config", "{tmp}/c.yaml"), "mapping", {"c.yaml": "- 4\n- 8\n"}),
    Bad("config-wrong-type", Q("--config", "{tmp}/c.json"), "learnable_scale",
        {"c.json": '{"learnable_scale": "sometimes"}'}),
    Bad("config-bits-33-yaml", Q("--config", "{tmp}/c.yaml"), "bits=33", {"c.yaml": "weight:\n  bits: 33\n"}),
    Bad("config-unknown-key-toml", Q("--config", "{tmp}/c.toml"), "bogus", {"c.toml": "bogus = 1\n"}),
    Bad("config-other-method", Q("--config", "{tmp}/c.json"), "dorefa",
        {"c.json": '{"method": "dorefa", "version": 1, "config": {}}'}),
    Bad("config-binary-file", Q("--config", "{tmp}/c.yaml"), "c.yaml", {"c.yaml": b"\xff\xfe\x00\x81" * 64}),
    Bad("config-yaml-python-tag", Q("--config", "{tmp}/c.yaml"), "c.yaml",
        {"c.yaml": "weight: !!python/object/apply:os.system ['touch {tmp}/pwned']\n"}),
    # -- Distiller YAML and NNI config_list -------------------------------------------------------------------
    Bad("distiller-bits-overrides", Q("--config", "{tmp}/d.yaml", method="distiller-ptq"), "bits_overrides",
        {"d.yaml": DISTILLER_BITS_OVERRIDES}),
    Bad("distiller-bad-regex", Q("--config", "{tmp}/d.yaml", method="distiller-ptq"), "fc[",
        {"d.yaml": DISTILLER_BAD_REGEX}),
    Bad("distiller-bits-33", Q("--config", "{tmp}/d.yaml", method="distiller-ptq"), "33",
        {"d.yaml": DISTILLER_BAD_BITS}),
    Bad("distiller-unknown-class", Q("--config", "{tmp}/d.yaml", method="distiller-ptq"), "MagicQuantizer",
        {"d.yaml": DISTILLER_UNKNOWN_CLASS}),
    Bad("nni-config-list-not-dicts", Q("--config", "{tmp}/n.json", method="nni-ptq"), "config_list",
        {"n.json": '["Linear", "Conv2d"]'}),
    Bad("nni-config-list-unknown-key", Q("--config", "{tmp}/n.json", method="nni-ptq"), "quant_bitz",
        {"n.json": '[{"op_types": ["Linear"], "target_names": ["weight"], "quant_bitz": 8}]'}),
    Bad("nni-config-list-bad-dtype", Q("--config", "{tmp}/n.json", method="nni-ptq"), "int33",
        {"n.json": '[{"op_types": ["Linear"], "target_names": ["weight"], "quant_dtype": "int33"}]'}),
    Bad("nni-config-list-empty", Q("--config", "{tmp}/n.json", method="nni-ptq"), "empty", {"n.json": "[]"}),
    Bad("nni-config-scalar", Q("--config", "{tmp}/n.yaml", method="nni-ptq"), "config_list", {"n.yaml": "42\n"}),
    Bad("nni-config-list-v2-unknown-key", Q("--config", "{tmp}/n.json", method="nni-qat"), "quant_bitz",
        {"n.json": '[{"quant_types": ["weight"], "quant_bits": {"weight": 8}, "op_types": ["Linear"],'
                   ' "quant_bitz": 1}]'}),
    # -- suite files ----------------------------------------------------------------------------------------
    Bad("suite-truncated-toml", ("bench", "--suite", "{tmp}/s.toml"), "invalid TOML",
        suite('name = "s"\n[[targets]]\nmodel = "mlp"\ndataset = ')),
    Bad("suite-unknown-key", ("bench", "--suite", "{tmp}/s.toml"), "bogus", suite(f'bogus = 1\n{TARGET}')),
    Bad("suite-no-targets", ("bench", "--suite", "{tmp}/s.toml"), "targets", suite('name = "s"\n')),
    Bad("suite-seeds-wrong-type", ("bench", "--suite", "{tmp}/s.toml"), "seeds", suite(f'seeds = "zero"\n{TARGET}')),
    Bad("suite-jobs-0", ("bench", "--suite", "{tmp}/s.toml"), "jobs", suite(f'jobs = 0\n{TARGET}')),
    Bad("suite-unknown-model", ("bench", "--suite", "{tmp}/s.toml"), "Did you mean: lenet5",
        suite('[[targets]]\nmodel = "lenet"\ndataset = "mnist"\n')),
    Bad("suite-unknown-dataset", ("bench", "--suite", "{tmp}/s.toml"), "Did you mean: digits",
        suite('[[targets]]\nmodel = "mlp"\ndataset = "digit"\n')),
    Bad("suite-misfit", ("bench", "--suite", "{tmp}/s.toml"), "does not fit",
        suite('[[targets]]\nmodel = "lenet5"\ndataset = "digits"\n')),
    Bad("suite-bits-0", ("bench", "--suite", "{tmp}/s.toml"), "W0A8", suite(f'{TARGET}{ENTRY}bits = ["W0A8"]\n')),
    Bad("suite-bits-eight", ("bench", "--suite", "{tmp}/s.toml"), "eight", suite(f'{TARGET}{ENTRY}bits = ["eight"]\n')),
    Bad("suite-bits-not-a-list", ("bench", "--suite", "{tmp}/s.toml"), "bits", suite(f'{TARGET}{ENTRY}bits = 8\n')),
    Bad("suite-mode", ("bench", "--suite", "{tmp}/s.toml"), "fast", suite(f'{TARGET}{ENTRY}modes = ["fast"]\n')),
    Bad("suite-calibration-0", ("bench", "--suite", "{tmp}/s.toml"), "calibration_samples",
        suite(f'[protocol]\ncalibration_samples = 0\n{TARGET}')),
    Bad("suite-qat-epochs-word", ("bench", "--suite", "{tmp}/s.toml"), "epochs",
        suite(f'[protocol.qat]\nepochs = "one"\n{TARGET}')),
    Bad("suite-paper-accuracy-over-100", ("bench", "--suite", "{tmp}/s.toml"), "accuracy",
        suite(f'{TARGET}{ENTRY}paper = {{ accuracy = 120.0 }}\n')),
    Bad("suite-entry-config-bits-33", ("bench", "--suite", "{tmp}/s.toml"), "bits=33",
        suite(f'{TARGET}{ENTRY}bits = ["default"]\nconfig = {{ weight = {{ bits = 33 }} }}\n')),
    Bad("suite-entry-config-binary-asymmetric", ("bench", "--suite", "{tmp}/s.toml"), "symmetric",
        suite(f'{TARGET}{ENTRY}config = {{ weight = {{ dtype = "binary", bits = 1, symmetric = false }} }}\n')),
    Bad("suite-binary-file", ("bench", "--suite", "{tmp}/s.toml"), "s.toml", {"s.toml": b"\x89PNG\r\n\x1a\n\x00"}),
    # -- data directories (MNIST IDX files; copies in tmp, /work/shared is never touched) ------------------
    Bad("mnist-missing-directory", Q("--data-dir", "{tmp}/nowhere", model="lenet5", dataset="mnist"), "nowhere"),
    Bad("mnist-missing-file", Q("--data-dir", "{tmp}/data", model="lenet5", dataset="mnist"),
        "train-images-idx3-ubyte", mnist_dir("train-images-idx3-ubyte", None)),
    Bad("mnist-not-gzip", Q("--data-dir", "{tmp}/data", model="lenet5", dataset="mnist"), "cannot read",
        mnist_dir("train-images-idx3-ubyte", b"definitely not gzip")),
    Bad("mnist-truncated-gzip", Q("--data-dir", "{tmp}/data", model="lenet5", dataset="mnist"), "cannot read",
        mnist_dir("train-images-idx3-ubyte", _idx_gz(2051, (60000, 28, 28), bytes(5000))[:-40])),
    Bad("mnist-wrong-magic", Q("--data-dir", "{tmp}/data", model="lenet5", dataset="mnist"), "magic",
        mnist_dir("train-images-idx3-ubyte", _idx_gz(2049, (60000, 28, 28), b""))),
    Bad("mnist-short-data", Q("--data-dir", "{tmp}/data", model="lenet5", dataset="mnist"), "expected",
        mnist_dir("train-images-idx3-ubyte", _idx_gz(2051, (60000, 28, 28), bytes(1000)))),
    Bad("mnist-empty-file", Q("--data-dir", "{tmp}/data", model="lenet5", dataset="mnist"), "truncated",
        mnist_dir("train-images-idx3-ubyte", gzip.compress(b""))),
    Bad("bench-mnist-corrupt", ("bench", "--suite", "{tmp}/s.toml", "--data-dir", "{tmp}/data", "--db",
                                "{tmp}/r.sqlite"), "magic",
        {**mnist_dir("train-images-idx3-ubyte", _idx_gz(2049, (60000, 28, 28), b"")),
         "s.toml": 'name = "s"\n[[targets]]\nmodel = "lenet5"\ndataset = "mnist"\n'}),
]


def _write_files(tmp_path: Path, files: dict) -> None:
    for rel, content in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content.replace("{tmp}", str(tmp_path)))


@pytest.fixture
def no_long_work(monkeypatch, tmp_path):
    """The FP baseline (cached or trained) is the first long step of `bench` and `quantize`."""
    import quantzoo.bench.data as data
    import quantzoo.bench.run as run

    def refuse(*a, **k):
        raise LongWorkStarted("the bad input was not rejected before the FP baseline")

    monkeypatch.setattr(data, "get_baseline", refuse)
    monkeypatch.setattr(run, "get_baseline", refuse)
    monkeypatch.setenv("QUANTZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # a default .quantzoo/ db lands here, never in the checkout


def run_main(args: list[str]) -> tuple[int, str, str]:
    """``quantzoo ARGS`` in this process through the real entry point :func:`quantzoo.cli.main` (which is
    what turns click's usage errors into one line), with stdout/stderr captured: ``(exit code, out, err)``.
    An exception that escapes ``main`` propagates (that is a traceback the user would see)."""
    with CliRunner().isolation() as (out, err, _):
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return code, out.getvalue().decode(), err.getvalue().decode()


def one_line_error(out: str, err: str) -> str:
    """The single ``Error: ...`` line of a failed command (asserts there is exactly one, and no traceback)."""
    assert "Traceback" not in out + err, err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_bad_input(case: Bad, tmp_path, no_long_work):
    if "--method" in case.args:  # a plugin's method: skip where that plugin is not installed
        method = case.args[case.args.index("--method") + 1]
        if method not in ("unifrom", "uniform") and method not in quantzoo.list_quantizers():
            pytest.skip(f"the plugin providing {method!r} is not installed")
    _write_files(tmp_path, case.files)
    code, out, err = run_main([a.replace("{tmp}", str(tmp_path)) for a in case.args])
    assert code == 2, (code, out, err)
    line = one_line_error(out, err)
    assert case.needle.replace("{tmp}", str(tmp_path)) in line, line
    assert not (tmp_path / "pwned").exists()  # a YAML python tag never runs


# -- the Python API ------------------------------------------------------------------------------------------
def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _quantize(*args, **kw):
    return lambda: quantzoo.quantize(*args, **kw)


def _spec(**kw):
    return lambda: QuantSpec(**kw)


def _run_cell(**kw):
    from quantzoo.bench import run_cell

    args = {"method": "uniform", "model": "mlp", "dataset": "digits", "w_bits": 8, "a_bits": 8, **kw}
    return lambda: run_cell(**args)


def _load_dataset(name, root):
    from quantzoo.bench.data import load_dataset

    return lambda: load_dataset(name, root)


NAN_BATCH = [torch.full((2, 4), float("nan"))]
INF_BATCH = [(torch.tensor([[0.0, 1.0, float("inf"), 2.0]]), torch.tensor([0]))]

#: (id, call, exception type, text the message must contain). Specs raise pydantic's ValidationError (a
#: ValueError) whose text names the field; everything else raises a quantzoo error (or TypeError for a
#: non-module, Python's convention).
API_CASES = [
    ("quantize-non-module", _quantize("model.pt", "uniform"), TypeError, "expects a torch.nn.Module, got str"),
    ("quantize-unknown-method", _quantize(_mlp(), "unifrom"), UnknownNameError, "Did you mean: uniform"),
    ("quantize-method-not-a-string", _quantize(_mlp(), None), ConfigError, "method"),
    ("quantize-config-wrong-type", _quantize(_mlp(), "uniform", 42), ConfigError, "config must be"),
    ("quantize-unknown-override", _quantize(_mlp(), "uniform", bogus=1), ConfigError, "bogus"),
    ("quantize-bits-0", _quantize(_mlp(), "uniform", {"weight": {"bits": 0}}), ConfigError, "bits=0"),
    ("quantize-bits-minus-1", _quantize(_mlp(), "uniform", {"weight": {"bits": -1}}), ConfigError, "bits=-1"),
    ("quantize-bits-33", _quantize(_mlp(), "uniform", {"weight": {"bits": 33}}), ConfigError, "bits=33"),
    ("quantize-bits-eight", _quantize(_mlp(), "uniform", {"weight": {"bits": "eight"}}), ConfigError, "'eight'"),
    ("quantize-binary-asymmetric-activations",
     _quantize(_mlp(), "uniform", {"activation": {"dtype": "binary", "bits": 1, "symmetric": False}}), ConfigError,
     "activation"),
    ("quantize-empty-calibration", _quantize(_mlp(), "uniform", calibration=[]), DataError, "empty"),
    ("quantize-empty-calibration-iterator", _quantize(_mlp(), "uniform", calibration=iter(())), DataError, "empty"),
    ("quantize-nan-calibration", _quantize(_mlp(), "uniform", calibration=NAN_BATCH), DataError, "batch 0"),
    ("quantize-inf-calibration", _quantize(_mlp(), "uniform", calibration=INF_BATCH), DataError, "NaN or Inf"),
    ("quantize-ptq-without-calibration", _quantize(_mlp(), "uniform"), QuantzooError, "calibrate"),
    ("load-config-version", lambda: quantzoo.load_config({"method": "uniform", "version": 99, "config": {}}),
     ConfigError, "version 99"),
    ("load-config-not-a-mapping", lambda: quantzoo.load_config(["uniform"]), ConfigError, '"method"'),
    ("get-backend-unknown", lambda: quantzoo.get_backend("tensorrt"), UnknownNameError, "tensorrt"),
    ("get-observer-unknown", lambda: quantzoo.get_observer("minimax"), UnknownNameError, "Did you mean: minmax"),
    ("config-for-bits-unsupported", lambda: quantzoo.get_quantizer("uniform").config_for_bits(1, 1),
     UnsupportedError, "uniform supports"),
    ("run-cell-mode", _run_cell(mode="train"), UnsupportedError, "'train'"),
    ("run-cell-bits-0", _run_cell(w_bits=0), UnsupportedError, "W0"),
    ("run-cell-misfit", _run_cell(model="lenet5"), UnsupportedError, "does not fit"),
    ("load-dataset-unknown", _load_dataset("cifar10", None), UnknownNameError, "cifar10"),
    ("load-dataset-missing-mnist", _load_dataset("mnist", "/nonexistent/qz-data"), DataError, "/nonexistent"),
    ("spec-binary-asymmetric", _spec(dtype="binary", bits=1, symmetric=False), ValueError, "symmetric"),
    ("spec-binary-unsigned", _spec(dtype="binary", bits=1, signed=False), ValueError, "signed"),
    ("spec-binary-bits-8", _spec(dtype="binary", bits=8), ValueError, "set bits=1"),
    ("spec-ternary-bits-3", _spec(dtype="ternary", bits=3), ValueError, "set bits=2"),
    ("spec-ternary-per-group", _spec(dtype="ternary", bits=2, granularity="per_group", group_size=8), ValueError,
     "per_group"),
    ("spec-binary-stochastic", _spec(dtype="binary", bits=1, rounding="stochastic"), ValueError, "rounding"),
    ("spec-bits-0", _spec(bits=0), ValueError, "bits=0"),
    ("spec-bits-1-int", _spec(bits=1), ValueError, "dtype='binary'"),
    ("spec-bits-minus-1", _spec(bits=-1), ValueError, "bits=-1"),
    ("spec-bits-33", _spec(bits=33), ValueError, "bits=33"),
    ("spec-bits-eight", _spec(bits="eight"), ValueError, "'eight'"),
    ("spec-bits-bool", _spec(bits=True), ValueError, "True"),
    ("spec-narrow-unsigned", _spec(narrow=True, signed=False), ValueError, "narrow"),
    ("spec-per-group-no-size", _spec(granularity="per_group"), ValueError, "group_size"),
    ("spec-group-size-per-tensor", _spec(group_size=16), ValueError, "group_size=16"),
    ("spec-group-size-0", _spec(granularity="per_group", group_size=0), ValueError, "group_size"),
    ("spec-unknown-granularity", _spec(granularity="per_row"), ValueError, "granularity"),
    ("spec-unknown-field", _spec(bitz=8), ValueError, "bitz"),
    ("spec-unknown-dtype", _spec(dtype="fp8"), ValueError, "dtype"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(case):
    _, call, exc, needle = case
    with pytest.raises(exc) as info:
        call()
    assert needle in str(info.value), str(info.value)


def test_suite_method_typo_is_reported_with_a_suggestion(tmp_path):
    """A suite entry whose method matches nothing is a note, not an error (the plugin may just not be installed
    here), and a typo of an installed name gets a suggestion."""
    from quantzoo.bench.suite import load_suite, plan_suite

    p = tmp_path / "s.toml"
    p.write_text(f'{TARGET}[[entries]]\nmethods = ["unifrom"]\n[[entries]]\nmethods = ["not-installed-xyz"]\n')
    plan = plan_suite(load_suite(p))
    assert "did you mean: uniform?" in plan.unmatched[0]
    assert "did you mean" not in plan.unmatched[1]
    assert [c.method for c in plan.cells] == ["fp32"]


# -- the real `quantzoo` process: exit status 2 and no traceback on stderr; --debug shows it ----------------
SUBPROCESS_CASES = [
    (("quantize", "--method", "uniform", "--model", "mlp", "--dataset", "digits", "--bits", "W33A8", "--out", "x.pt"),
     "weight widths lie in 1..16"),
    (("leaderboard", "--db", "junk.sqlite"), "not a quantzoo results database"),
]


def _quantzoo(args, cwd, *extra_env):
    env = {**os.environ, "QUANTZOO_PLUGINS": "", "QUANTZOO_CACHE": str(cwd / "cache")}  # core only: fast start
    cmd = [sys.executable, "-c", "from quantzoo.cli import main; main()", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sub_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sub")
    (d / "s.toml").write_text('name = "s"\n[[targets]]\nmodel = ')
    (d / "junk.sqlite").write_bytes(b"junk" * 300)
    return d


@pytest.mark.parametrize("args,needle", SUBPROCESS_CASES, ids=[a[0] + "-" + n[:12] for a, n in SUBPROCESS_CASES])
def test_subprocess_exit_code_2_and_no_traceback(args, needle, sub_dir):
    proc = _quantzoo(args, sub_dir)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr


def test_debug_flag_shows_the_traceback(sub_dir):
    proc = _quantzoo(("--debug", "bench", "--suite", "s.toml"), sub_dir)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "invalid TOML" in proc.stderr


def test_count_of_distinct_bad_inputs():
    """The figure quoted in issue 8's closing note: every entry above is a distinct bad input (unique ids)."""
    ids = [f"cli:{c.id}" for c in CLI_CASES] + [f"api:{c[0]}" for c in API_CASES]
    assert len(ids) == len(set(ids))
    # SUBPROCESS_CASES repeat CLI cases in a real process (exit status, stderr) and are not counted again.
    print(f"\ndistinct bad inputs: {len(ids)} (CLI {len(CLI_CASES)}, Python API {len(API_CASES)}); "
          f"{len(SUBPROCESS_CASES) + 1} more runs in a real process")
    assert len(ids) >= 50
