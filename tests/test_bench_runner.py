"""End-to-end sweeps: a tiny suite through the runner, failed cells recorded, SIGKILL + resume, Ray = local."""

import os
import signal
import sqlite3
import subprocess
import time

import pytest
from torch import nn

from quantzoo import hookimpl
from quantzoo.bench.db import ResultsDB
from quantzoo.bench.leaderboard import aggregate, render
from quantzoo.bench.runner import run_plan
from quantzoo.bench.suite import load_suite, plan_suite
from quantzoo.quantizers.uniform import UniformQuantizer
from quantzoo.registry import Registry, make_plugin_manager, reset_registry

from quantzoo.bench.testing import cli_cmd, run_cli, write_suite


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("bench-cache"))


def test_tiny_suite_end_to_end(tmp_path, cache_dir):
    suite = load_suite(write_suite(tmp_path, bits=("W8A8", "W4A4"), modes=("ptq", "qat")))
    plan = plan_suite(suite)
    db = ResultsDB(tmp_path / "r.sqlite")
    s = run_plan(plan, db, cache_dir=cache_dir, progress=False)
    assert (s.ran, s.ok, s.failed) == (5, 5, 0)  # FP + uniform {ptq, qat} x {W8A8, W4A4}
    rows = db.rows()
    assert all(r["status"] == "ok" and r["git_rev"] is not None for r in rows)
    row = next(r for r in rows if r["mode"] == "qat")
    assert row["train_s"] > 0 and '"torch"' in row["versions_json"] and row["first_layer"] == "int8"
    again = run_plan(plan, db, cache_dir=cache_dir, progress=False)  # resume: nothing to do
    assert (again.ran, again.done_before) == (0, 5)
    forced = run_plan(plan_suite(suite, methods="uniform"), db, cache_dir=cache_dir, progress=False, force=True)
    assert forced.ran == 5 and len(db.rows()) == 5
    text = render(aggregate(db.rows()), "github")
    assert text.startswith("### FP32") and text.splitlines()[4].split("|")[2].strip() == "fp32"  # FP first


# -- a method that fails, and one that produces NaN ---------------------------------------------------------
class ExplodingQuantizer(UniformQuantizer):
    name = "test-exploding"
    description = "raises in prepare (test only)"

    def _prepare(self, model, plan):
        raise RuntimeError("boom in prepare")


class NaNQuantizer(UniformQuantizer):
    name = "test-nan"
    description = "converts to NaN weights (test only)"

    def _convert(self, model):
        model = super()._convert(model)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.data.fill_(float("nan"))
        return model


class _TestPlugin:
    @hookimpl
    def register_quantizers(self, register):
        register(ExplodingQuantizer)
        register(NaNQuantizer)


@pytest.fixture()
def with_failing_methods():
    pm, infos = make_plugin_manager()
    pm.register(_TestPlugin(), name="test-failing")
    reset_registry(Registry(pm, infos))
    yield
    reset_registry(None)


def test_failed_cells_are_recorded_and_the_sweep_goes_on(tmp_path, cache_dir, with_failing_methods):
    path = write_suite(tmp_path, bits=("W8A8",))
    text = path.read_text().replace('methods = ["uniform"]', 'methods = ["test-*", "uniform"]')
    path.write_text(text)
    plan = plan_suite(load_suite(path))
    db = ResultsDB(tmp_path / "r.sqlite")
    s = run_plan(plan, db, cache_dir=cache_dir, progress=False)
    assert (s.ran, s.ok, s.failed) == (4, 2, 2)
    errors = {r["method"]: r["error"] for r in db.rows(status="failed")}
    assert "boom in prepare" in errors["test-exploding"]
    assert "NonFiniteOutputError" in errors["test-nan"]
    records = aggregate(db.rows())
    board = render(records, "markdown")
    assert "FAILED" in board and "test-nan" in board  # marked, not hidden


# -- SIGKILL in the middle of a sweep, then resume ----------------------------------------------------------
def test_sigkill_then_rerun_runs_only_the_missing_cells(tmp_path, cache_dir):
    suite = write_suite(tmp_path, model="cnn", bits=("W8A8", "W7A7", "W6A6", "W5A5", "W4A4", "W3A3", "W2A2"),
                        modes=("qat",), qat_samples=512)
    db_path = tmp_path / "r.sqlite"
    # QUANTZOO_PLUGINS= loads no plugin: the suite needs only the core's uniform, and start-up stays fast
    env = {**os.environ, "QUANTZOO_CACHE": cache_dir, "QUANTZOO_PLUGINS": ""}
    proc = subprocess.Popen(cli_cmd("bench", "--suite", str(suite), "--db", str(db_path), "--no-progress"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_before = 0
    deadline = time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if db_path.exists():
                try:
                    with sqlite3.connect(db_path, timeout=1) as c:
                        done_before = c.execute("SELECT COUNT(*) FROM cells WHERE status='ok'").fetchone()[0]
                except sqlite3.Error:
                    continue
                if done_before >= 3:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    total = 8  # FP + 7 QAT cells
    with sqlite3.connect(db_path) as c:
        before = {k: (s, f) for k, s, f in c.execute("SELECT cell_key, status, finished_at FROM cells")}
    ok_before = {k for k, (s, _) in before.items() if s == "ok"}
    assert 0 < len(ok_before) < total, "the kill must land mid-sweep"
    res = run_cli("bench", "--suite", str(suite), "--db", str(db_path), "--no-progress",
                  env={"QUANTZOO_CACHE": cache_dir, "QUANTZOO_PLUGINS": ""})
    assert res.returncode == 0, res.stderr
    missing = total - len(ok_before)
    assert f"ran {missing} ({missing} ok, 0 failed), 0 refused by their method, {len(ok_before)} already in the " \
           "database" in res.stderr
    with sqlite3.connect(db_path) as c:
        rows = c.execute("SELECT cell_key, status, finished_at FROM cells").fetchall()
    assert len(rows) == len({k for k, _, _ in rows}) == total  # each cell exactly once
    assert all(s == "ok" for _, s, _ in rows)
    for k, _, fin in rows:  # finished cells kept untouched
        if k in ok_before:
            assert fin == before[k][1]


# -- Ray executor (and a local process pool) give the same numbers as the in-process one ----------------------
def test_ray_and_local_executors_agree(tmp_path, cache_dir):
    ray = pytest.importorskip("ray")
    suite = load_suite(write_suite(tmp_path, bits=("W8A8", "W4A4"), modes=("ptq", "qat")))
    plan = plan_suite(suite)
    local = ResultsDB(tmp_path / "local.sqlite")
    run_plan(plan, local, cache_dir=cache_dir, progress=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "QUANTZOO_PLUGINS": ""}})
    try:
        remote = ResultsDB(tmp_path / "ray.sqlite")
        s = run_plan(plan, remote, executor="ray", cache_dir=cache_dir, progress=False)
    finally:
        ray.shutdown()
    assert s.ok == len(plan.cells) == 5
    pool = ResultsDB(tmp_path / "pool.sqlite")
    assert run_plan(plan, pool, jobs=2, cache_dir=cache_dir, progress=False).ok == 5  # process pool, 2 workers
    acc = lambda db: {r["cell_key"]: (r["accuracy"], r["fakequant_accuracy"]) for r in db.rows()}  # noqa: E731
    assert acc(local) == acc(remote) == acc(pool)


# -- two `quantzoo bench` processes on one database at once (slow: two CLI start-ups; the claim mechanism itself
# is tested in the default run by test_bench_db.py::test_two_processes_never_run_the_same_cell) ---------------
@pytest.mark.slow
def test_two_concurrent_bench_processes_split_the_work(tmp_path, cache_dir):
    import re

    suite = write_suite(tmp_path, bits=("W8A8", "W7A7", "W6A6", "W5A5", "W4A4", "W3A3"), modes=("ptq", "qat"))
    db_path = tmp_path / "r.sqlite"
    env = {**os.environ, "QUANTZOO_CACHE": cache_dir, "QUANTZOO_PLUGINS": ""}
    cmd = cli_cmd("bench", "--suite", str(suite), "--db", str(db_path), "--no-progress")
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ran = [int(re.search(r"ran (\d+) \(", err).group(1)) for _, err in outs]
    total = 13  # FP + uniform {ptq, qat} x 6 widths
    with sqlite3.connect(db_path) as c:
        rows = c.execute("SELECT cell_key, status, attempts FROM cells").fetchall()
    assert len(rows) == len({k for k, _, _ in rows}) == total  # no lost, no duplicated rows
    assert all(s == "ok" and a == 1 for _, s, a in rows)  # each cell ran exactly once
    assert sum(ran) == total  # together they ran every cell once


def test_cell_key_covers_the_code_versions():
    import dataclasses
    from importlib import metadata

    from quantzoo.bench.run import make_cell

    cell = make_cell("uniform", "mlp", "digits", 8, 8)
    assert cell.code == {"quantzoo": metadata.version("quantzoo")}  # a core method: quantzoo alone
    # another release of the code is another cell: resume recomputes it instead of reusing the old row
    assert dataclasses.replace(cell, code={"quantzoo": "0.0.1"}).key != cell.key
    assert make_cell("fp32", "mlp", "digits").code == cell.code
