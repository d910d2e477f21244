"""Faults during a benchmark never lose finished results (issue 8), end to end through `quantzoo bench`.

Already covered by the harness's own tests (not repeated here):
- SIGKILL in the middle of a sweep, then a re-run:
  tests/test_bench_runner.py::test_sigkill_then_rerun_runs_only_the_missing_cells
- claims under three concurrent writers, a write failing mid-transaction, SQLITE_FULL through max_page_count:
  tests/test_bench_db.py
- a raising / NaN-producing method in an in-process test registry:
  tests/test_bench_runner.py::test_failed_cells_are_recorded_and_the_sweep_goes_on

Here, each fault hits the real command in its own process:
1. two `quantzoo bench` processes on one database at once;
2. SIGKILL of a `--jobs 2` sweep (driver and its pool workers), then a re-run (slow);
3. a database file that cannot be written (read-only; as root, the process drops CAP_DAC_OVERRIDE so that
   permissions apply to it);
4. the disk filling up in the middle of a sweep (SQLite's own SQLITE_FULL error, raised by the connection for
   every write once three cells are done), then a re-run once there is space again;
5. real plugin distributions: one method raising, one producing NaN, one plugin failing to import, and
   one method whose worker process dies (os._exit) under `--jobs 2`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from quantzoo.bench.testing import write_suite

BASELINE = {"epochs": 2, "lr": 3e-3}  # the tiny suite's FP recipe (quantzoo.bench.testing.TINY_SUITE)
PTQ_BITS = ("W8A8", "W7A7", "W6A6", "W5A5", "W4A4", "W3A3")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A baseline cache that already holds the tiny suite's FP mlp/digits model (trained once, ~1 s)."""
    from quantzoo.bench.data import get_baseline

    d = tmp_path_factory.mktemp("faults-cache")
    get_baseline("mlp", "digits", 0, BASELINE, cache_dir=d)
    return str(d)


def _env(cache_dir, plugins="", **extra):
    env = {**os.environ, "QUANTZOO_CACHE": cache_dir, "QUANTZOO_PLUGINS": plugins, **extra}
    env.pop("QUANTZOO_BLOCK_PLUGINS", None)
    return env


def _cmd(*args, prefix=()):
    return [*prefix, sys.executable, "-c", "from quantzoo.cli import main; main()", *args]


def _bench(suite, db, cache_dir, *extra, plugins="", prefix=(), env_extra=None, timeout=240):
    return subprocess.run(_cmd("bench", "--suite", str(suite), "--db", str(db), "--no-progress", *extra,
                               prefix=prefix), env=_env(cache_dir, plugins, **(env_extra or {})),
                          capture_output=True, text=True, timeout=timeout)


def run_main(*args) -> tuple[int, str, str]:
    """``quantzoo ARGS`` in this process through the real entry point: ``(exit code, stdout, stderr)``."""
    from click.testing import CliRunner

    from quantzoo.cli import main

    with CliRunner().isolation() as (out, err, _):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return code, out.getvalue().decode(), err.getvalue().decode()


def _one_error(code, out, err) -> str:
    assert code == 2, err
    assert "Traceback" not in out + err, err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    return errors[0]


def _rows(db) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT cell_key, status, finished_at, error, method FROM cells ORDER BY rowid").fetchall()


def _ran(stderr: str) -> tuple[int, int, int]:
    m = re.search(r"ran (\d+) \((\d+) ok, (\d+) failed\)", stderr)
    assert m, stderr
    return tuple(int(x) for x in m.groups())


def _no_traceback(proc):
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr


# -- 1. two processes, one database -------------------------------------------------------------------------
def test_two_bench_processes_on_one_database(tmp_path, cache_dir):
    suite = write_suite(tmp_path, bits=PTQ_BITS)
    db = tmp_path / "r.sqlite"
    total = 1 + len(PTQ_BITS)
    procs = [subprocess.Popen(_cmd("bench", "--suite", str(suite), "--db", str(db), "--no-progress"),
                              env=_env(cache_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "Traceback" not in err
    rows = _rows(db)
    assert len(rows) == len({r[0] for r in rows}) == total  # none duplicated
    assert all(r[1] == "ok" for r in rows)  # none lost, none left "running"
    ran = [_ran(err)[0] for _, err in outs]
    # every cell ran in exactly one of the two processes; the other saw it done or running elsewhere
    assert sum(ran) == total, ran
    print(f"\ncells run by each process: {ran}")


# -- 2. SIGKILL of a parallel sweep -------------------------------------------------------------------------
@pytest.mark.slow  # ~25 s; the harness's sequential SIGKILL test runs by default
def test_sigkill_of_a_pool_sweep_then_rerun(tmp_path, cache_dir):
    suite = write_suite(tmp_path, bits=PTQ_BITS, modes=("qat",), qat_samples=384)
    db = tmp_path / "r.sqlite"
    total = 1 + len(PTQ_BITS)
    proc = subprocess.Popen(_cmd("bench", "--suite", str(suite), "--db", str(db), "--no-progress", "--jobs", "2"),
                            env=_env(cache_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 180
    done = 0
    try:
        while time.time() < deadline and proc.poll() is None and done < 3:
            time.sleep(0.05)
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=1) as c:
                        done = c.execute("SELECT COUNT(*) FROM cells WHERE status='ok'").fetchone()[0]
                except sqlite3.Error:
                    continue
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its pool workers, all at once
        proc.wait()
    before = {k: (s, f) for k, s, f, _, _ in _rows(db)}
    ok_before = {k for k, (s, _) in before.items() if s == "ok"}
    assert 0 < len(ok_before) < total, "the kill must land mid-sweep"
    res = _bench(suite, db, cache_dir, "--jobs", "2")
    assert res.returncode == 0, res.stderr
    missing = total - len(ok_before)
    assert _ran(res.stderr) == (missing, missing, 0)
    rows = _rows(db)
    assert len(rows) == len({r[0] for r in rows}) == total and all(r[1] == "ok" for r in rows)
    assert all(f == before[k][1] for k, _, f, _, _ in rows if k in ok_before)  # finished rows untouched


# -- 3. a database that cannot be written -------------------------------------------------------------------
def _unprivileged() -> tuple[str, ...]:
    """As root, a command prefix that drops the capabilities which let root ignore file permissions."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
    caps = "-dac_override,-dac_read_search,-fowner"
    return (setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}")


def test_read_only_database_is_a_clear_error_and_its_rows_survive(tmp_path, cache_dir):
    suite = write_suite(tmp_path, bits=("W8A8",))
    db = tmp_path / "r.sqlite"
    code, _, err = run_main("bench", "--suite", suite, "--db", db, "--cache-dir", cache_dir, "--no-progress")
    assert code == 0, err
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    snapshot = db.read_bytes()
    rows_before = _rows(db)
    more = write_suite(tmp_path, bits=("W8A8", "W4A4"), name="more.toml")  # one new cell to write
    os.chmod(db, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        res = _bench(more, db, cache_dir, prefix=_unprivileged())
    finally:
        os.chmod(db, stat.S_IRUSR | stat.S_IWUSR)
    assert res.returncode == 2, res.stderr
    _no_traceback(res)
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(db) in errors[0] and "readonly" in errors[0].replace("read-only", "readonly")
    assert db.read_bytes() == snapshot and _rows(db) == rows_before  # earlier rows intact, byte for byte


def test_database_in_an_unwritable_place_is_a_clear_error(tmp_path, cache_dir):
    suite = write_suite(tmp_path, bits=("W8A8",))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the database directory should be")
    line = _one_error(*run_main("bench", "--suite", suite, "--db", blocker / "r.sqlite", "--cache-dir", cache_dir))
    assert "cannot create the directory" in line and str(blocker) in line


# -- 4. the disk fills up mid-sweep -------------------------------------------------------------------------
class FullDisk:
    """A connection as SQLite behaves once the disk is full: reads work, every write fails with SQLITE_FULL."""

    def __init__(self, conn, filled):
        self._conn, self._filled = conn, filled

    def execute(self, sql, *args):
        if self._filled() and sql.lstrip().split()[0].upper() in ("INSERT", "UPDATE"):
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_disk_full_mid_sweep_keeps_earlier_rows_and_a_rerun_completes(tmp_path, cache_dir, monkeypatch):
    from quantzoo.bench.db import ResultsDB

    suite = write_suite(tmp_path, bits=PTQ_BITS[:4])
    db = tmp_path / "r.sqlite"
    total, after = 1 + 4, 3
    finish = ResultsDB.finish
    finished = []

    def finish_then_fill(self, *a, **k):  # the disk fills up right after the third finished cell
        if not isinstance(self.conn, FullDisk):
            self.conn = FullDisk(self.conn, lambda: len(finished) >= after)
        out = finish(self, *a, **k)
        finished.append(out)
        return out

    monkeypatch.setattr(ResultsDB, "finish", finish_then_fill)
    args = ("bench", "--suite", suite, "--db", db, "--cache-dir", cache_dir, "--no-progress")
    line = _one_error(*run_main(*args))
    assert "database or disk is full" in line and "earlier rows are intact" in line and str(db) in line
    rows = _rows(db)
    ok_before = {k: f for k, s, f, _, _ in rows if s == "ok"}
    assert len(ok_before) == len(rows) == after  # every cell finished before the disk filled is there
    monkeypatch.setattr(ResultsDB, "finish", finish)  # space again: the re-run completes the rest
    code, _, err = run_main(*args)
    assert code == 0, err
    rows = _rows(db)
    assert len(rows) == len({r[0] for r in rows}) == total and all(r[1] == "ok" for r in rows)
    assert all(ok_before[k] == f for k, _, f, _, _ in rows if k in ok_before)
    assert _ran(err)[0] == total - after


# -- 5. faulty methods and a broken plugin, as real installed distributions ----------------------------------
FAULTY = '''
import os

from torch import nn

from quantzoo import hookimpl
from quantzoo.quantizers import UniformQuantizer


class Raises(UniformQuantizer):
    name = "qzf-raises"
    description = "raises during calibration (fault-injection test)"

    def calibrate(self, model, batches):
        raise RuntimeError("qzf-raises: calibration exploded")


class ProducesNaN(UniformQuantizer):
    name = "qzf-nan"
    description = "converts to NaN weights (fault-injection test)"

    def _convert(self, model):
        model = super()._convert(model)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.data.fill_(float("nan"))
        return model


class Crashes(UniformQuantizer):
    name = "qzf-crash"
    description = "its worker process dies during prepare (fault-injection test)"

    def _prepare(self, model, plan):
        os._exit(9)


@hookimpl
def register_quantizers(register):
    register(Raises)
    register(ProducesNaN)
    register(Crashes)
'''

BROKEN = 'raise ImportError("qzf-broken: libqzf.so: cannot open shared object file")\n'


@pytest.fixture(scope="module")
def fault_site(tmp_path_factory, build_plugins):
    return build_plugins(tmp_path_factory.mktemp("fault-plugins"), {"qzf-faulty": FAULTY, "qzf-broken": BROKEN})


@pytest.fixture
def with_fault_plugins(fault_site, monkeypatch):
    """The two distributions installed and on sys.path, found through their entry points by a new registry."""
    import importlib

    from quantzoo.registry import reset_registry

    monkeypatch.syspath_prepend(str(fault_site))
    importlib.invalidate_caches()
    monkeypatch.setenv("QUANTZOO_PLUGINS", "qzf-faulty,qzf-broken")
    monkeypatch.delenv("QUANTZOO_BLOCK_PLUGINS", raising=False)
    reset_registry()
    yield
    reset_registry()


def test_failing_methods_and_a_broken_plugin_end_to_end(tmp_path, cache_dir, with_fault_plugins):
    suite = write_suite(tmp_path, bits=("W8A8",))
    suite.write_text(suite.read_text().replace('methods = ["uniform"]',
                                               'methods = ["uniform", "qzf-raises", "qzf-nan"]'))
    db = tmp_path / "r.sqlite"
    code, out, err = run_main("bench", "--suite", suite, "--db", db, "--cache-dir", cache_dir, "--no-progress")
    assert code == 0, err
    assert "Traceback" not in out + err
    assert "plugin 'qzf-broken'" in err and "libqzf.so" in err  # reported, and the others still ran
    assert _ran(err) == (4, 2, 2)
    rows = {r[4]: r for r in _rows(db)}
    assert rows["uniform"][1] == rows["fp32"][1] == "ok"
    assert rows["qzf-raises"][1] == "failed" and "calibration exploded" in rows["qzf-raises"][3]
    assert rows["qzf-nan"][1] == "failed" and "NonFiniteOutputError" in rows["qzf-nan"][3]
    board = {line.split("|")[2].strip(): line for line in out.splitlines() if line.count("|") > 3}
    assert "FAILED" in board["qzf-raises (ptq)"] and "FAILED" in board["qzf-nan (ptq)"]  # marked, not hidden
    code, out, err = run_main("leaderboard", "--db", db, "--format", "json")
    recs = {row["method"]: next(iter(row["targets"].values()))
            for sec in json.loads(out)["sections"] for row in sec["rows"]}
    assert recs["qzf-raises"]["status"] == "failed" and recs["qzf-raises"]["accuracy"] is None
    assert any("calibration exploded" in e for e in recs["qzf-raises"]["errors"])
    assert recs["uniform"]["status"] == "ok" and recs["uniform"]["accuracy"] > 80


def test_a_worker_that_dies_fails_its_cell_and_the_sweep_goes_on(tmp_path, cache_dir, with_fault_plugins):
    suite = write_suite(tmp_path, bits=("W8A8",))
    suite.write_text(suite.read_text().replace('methods = ["uniform"]', 'methods = ["uniform", "qzf-crash"]'))
    db = tmp_path / "r.sqlite"
    args = ("bench", "--suite", suite, "--db", db, "--cache-dir", cache_dir, "--no-progress")
    code, _, err = run_main(*args, "--jobs", "2")
    assert code == 0, err
    rows = {r[4]: r for r in _rows(db)}
    assert rows["qzf-crash"][1] == "failed" and "worker process died" in rows["qzf-crash"][3]
    assert len(rows) == 3 and all(r[1] in ("ok", "failed") for r in rows.values())
    # a cell running beside the crash in the same pool may fail with it; --retry-failed redoes such cells,
    # here without the crashing method (same keys: same suite otherwise)
    fine = tmp_path / "fine.toml"
    fine.write_text(suite.read_text().replace('"qzf-crash"', '"none-installed"'))
    code, _, err = run_main("bench", "--suite", fine, "--db", db, "--cache-dir", cache_dir, "--no-progress",
                            "--retry-failed")
    assert code == 0, err
    status = {r[4]: r[1] for r in _rows(db)}
    assert status == {"fp32": "ok", "uniform": "ok", "qzf-crash": "failed"}
