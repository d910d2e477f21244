"""The harness CLI in-process (click's runner): bench → leaderboard → quantize, and one-line errors."""

import json

import pytest
import torch
from click.testing import CliRunner

from quantzoo.cli import _load_commands, cli
from quantzoo.bench.testing import write_suite

_load_commands()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {"QUANTZOO_CACHE": str(tmp_path_factory.mktemp("cli-cache"))}


def invoke(args, env):
    return CliRunner().invoke(cli, args, obj={}, env=env, catch_exceptions=False)


def test_bench_then_leaderboard_then_plots(tmp_path, env):
    suite = write_suite(tmp_path, bits=("W8A8", "W4A4"))
    db = tmp_path / "r.sqlite"
    md = tmp_path / "LB.md"
    r = invoke(["bench", "--suite", str(suite), "--db", str(db), "--no-progress", "--markdown", str(md),
                "--plot", str(tmp_path / "plots")], env)
    assert r.exit_code == 0, r.output
    assert "fp32" in r.output and "uniform (ptq)" in r.output and "ran 3 (3 ok, 0 failed)" in r.output
    assert md.read_text().startswith("# quantzoo leaderboard") and "| fp32" in md.read_text()
    assert len(list((tmp_path / "plots").glob("*.png"))) == 2
    r = invoke(["leaderboard", "--db", str(db), "--suite", str(suite), "--format", "json"], env)
    board = json.loads(r.output)
    assert [sec["setting"] for sec in board["sections"]] == ["FP32", "W8A8", "W4A4"]
    rows = [row for sec in board["sections"] for row in sec["rows"]]
    assert {row["method"] for row in rows} == {"fp32", "uniform"}
    assert all(t["backend"] and t["fp_accuracy"] for row in rows for t in row["targets"].values())


def test_quantize_command_saves_a_loadable_model(tmp_path, env):
    out = tmp_path / "m.pt"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("weight_observer: minmax\n")
    r = invoke(["quantize", "--method", "uniform", "--model", "mlp", "--dataset", "digits", "--bits", "W4A8",
                "--config", str(cfg), "--set", "first_layer=fp", "--out", str(out)], env)
    assert r.exit_code == 0, r.output
    assert "accuracy:" in r.output and "size:" in r.output and str(out.resolve()) in r.output
    saved = torch.load(out, weights_only=True)
    assert saved["quantzoo"]["config"]["first_layer"] == "fp" and saved["quantzoo"]["bits"] == "W4A8"


@pytest.mark.parametrize("args,needle", [
    (["bench", "--suite", "nope"], "unknown suite"),
    (["bench", "--suite", "quick", "--methods", "zzz*"], "selects no cell"),
    (["quantize", "--method", "unifrom", "--model", "mlp", "--dataset", "digits", "--out", "x.pt"], "Did you mean"),
    (["quantize", "--method", "uniform", "--model", "lenet5", "--dataset", "digits", "--out", "x.pt"], "does not fit"),
    (["quantize", "--method", "uniform", "--model", "mlp", "--dataset", "digits", "--bits", "eight", "--out", "x"],
     "W<n>A<m>"),
    (["quantize", "--method", "uniform", "--model", "mlp", "--dataset", "digits", "--bits", "W1A1", "--out", "x"],
     "uniform supports"),
    (["quantize", "--method", "uniform", "--model", "mlp", "--dataset", "digits", "--set", "oops", "--out", "x"],
     "key=value"),
    (["quantize", "--method", "uniform", "--model", "mlp", "--dataset", "digits", "--config", "missing.yaml",
      "--out", "x"], "does not exist"),
    (["leaderboard", "--db", "missing.sqlite"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, env, args, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, args, obj={}, env=env)
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output


def test_missing_data_dir_fails_before_any_cell_runs(tmp_path, env):
    suite = tmp_path / "m.toml"
    suite.write_text('name = "m"\n[[targets]]\nmodel = "mlp"\ndataset = "mnist"\n')
    db = tmp_path / "r.sqlite"
    r = CliRunner().invoke(cli, ["bench", "--suite", str(suite), "--db", str(db), "--data-dir",
                                 str(tmp_path / "nowhere"), "--no-progress"], obj={}, env=env)
    assert r.exit_code == 2 and "MNIST/raw" in r.output and "nowhere" in r.output
    assert not db.exists() or "running" not in db.read_bytes().decode("latin1")
