"""The results database: claims, resume semantics, transactional writes, concurrent writers, read-only files."""

import multiprocessing
import os
import stat

import pytest

from quantzoo.bench.db import ResultsDB, ResultsDBError, owner_alive, owner_id
from quantzoo.bench.run import make_cell

FAST = {"epochs": 2}


def _cells(n=4):
    return [make_cell("uniform", "mlp", "digits", b, b, 0, baseline=FAST) for b in (8, 7, 6, 5, 4, 3, 2)[:n]]


def test_claim_finish_and_resume(tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    c = _cells(1)[0]
    me = owner_id("a")
    assert db.claim(c, me)
    assert db.status(c.key) == ("running", me)
    assert not db.claim(c, owner_id("b"))  # I am alive: nobody else takes it
    assert db.finish(c, me, status="ok", metrics={"accuracy": 97.5, "fp_accuracy": 98.0, "warnings": ["x"]})
    assert not db.claim(c, owner_id("c"))  # finished: resume skips it
    assert db.claim(c, owner_id("c"), force=True)  # --force recomputes
    rows = db.rows()
    assert len(rows) == 1 and rows[0]["attempts"] == 2


def test_claim_of_a_dead_owner_is_taken_over(tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    c = _cells(1)[0]
    p = multiprocessing.get_context("spawn").Process(target=int)
    p.start()
    p.join()
    dead = f"{owner_id('x').split(':')[0]}:{p.pid}:x"
    assert not owner_alive(dead)
    assert db.claim(c, dead)
    assert db.claim(c, owner_id("y"))  # the first owner is gone (killed sweep): take over
    assert not db.finish(c, dead, status="ok", metrics={})  # the dead owner's late write is ignored


def test_failed_cells_are_kept_and_retried_on_request(tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    c = _cells(1)[0]
    me = owner_id("a")
    db.claim(c, me)
    db.finish(c, me, status="failed", error="ValueError: boom", metrics={"accuracy": float("nan")})
    row = db.rows()[0]
    assert row["status"] == "failed" and row["error"] == "ValueError: boom" and row["accuracy"] is None
    assert not db.claim(c, me)
    assert db.claim(c, me, retry_failed=True)


def _claimer(path, keys_out, n):
    from quantzoo.bench.db import ResultsDB, owner_id

    db = ResultsDB(path)
    me = owner_id(str(os.getpid()))
    got = []
    for c in _cells(n):
        if db.claim(c, me):
            got.append(c.key)
            db.finish(c, me, status="ok", metrics={"accuracy": 1.0})
    keys_out.put(got)


def test_two_processes_never_run_the_same_cell(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsDB(path).close()
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(path, q, 7)) for _ in range(3)]
    for p in procs:
        p.start()
    got = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    flat = [k for g in got for k in g]
    assert len(flat) == len(set(flat)) == 7  # each cell ran exactly once, none lost
    assert ResultsDB(path).count() == {"ok": 7}


def _opener(path, barrier, out):
    barrier.wait()
    try:
        ResultsDB(path).close()
        out.put("ok")
    except ResultsDBError as e:
        out.put(str(e))


def test_processes_creating_one_database_at_once_all_open_it(tmp_path):
    # two `quantzoo bench` runs started together on a new --db: switching the new file to WAL used to fail one
    # of them with "database is locked" (38 of 40 tries before the retry)
    ctx = multiprocessing.get_context("fork")
    for i in range(8):
        path, barrier, out = tmp_path / f"r{i}.sqlite", ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_opener, args=(path, barrier, out)) for _ in range(2)]
        for p in procs:
            p.start()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join()
        assert results == ["ok", "ok"], results


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_database_is_a_clear_error_and_rows_survive(tmp_path):
    path = tmp_path / "r.sqlite"
    db = ResultsDB(path)
    c1, c2 = _cells(2)
    me = owner_id("a")
    db.claim(c1, me)
    db.finish(c1, me, status="ok", metrics={"accuracy": 1.0})
    db.close()
    os.chmod(path, stat.S_IRUSR)
    with pytest.raises(ResultsDBError, match="cannot"):
        db = ResultsDB(path)
        db.claim(c2, me)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    assert ResultsDB(path).count() == {"ok": 1}


def test_a_failing_write_rolls_back(tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    c = _cells(1)[0]
    me = owner_id("a")
    db.claim(c, me)
    with pytest.raises(RuntimeError):
        with db._write():
            db.conn.execute("UPDATE cells SET status='ok' WHERE cell_key=?", (c.key,))
            raise RuntimeError("crash mid-transaction")
    assert db.status(c.key)[0] == "running"


def test_missing_database_for_reading(tmp_path):
    with pytest.raises(ResultsDBError, match="does not exist"):
        ResultsDB(tmp_path / "nope.sqlite", readonly=True)


def test_full_disk_is_a_clear_error_and_earlier_rows_survive(tmp_path):
    path = tmp_path / "r.sqlite"
    db = ResultsDB(path)
    cells = _cells(7)
    me = owner_id("a")
    db.claim(cells[0], me)
    db.finish(cells[0], me, status="ok", metrics={"accuracy": 1.0, "big": "x" * 5000})
    pages = db.conn.execute("PRAGMA page_count").fetchone()[0]
    db.conn.execute(f"PRAGMA max_page_count={pages}")  # simulate a full disk: no page can be added
    with pytest.raises(ResultsDBError, match="full"):
        for c in cells[1:]:
            db.claim(c, me)
            db.finish(c, me, status="ok", metrics={"accuracy": 1.0, "big": "y" * 20000})
    db.close()
    rows = ResultsDB(path).rows(status="ok")
    assert cells[0].key in {r["cell_key"] for r in rows}
