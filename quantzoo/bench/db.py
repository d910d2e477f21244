"""The results database (SQLite): one row per cell, keyed by the sha256 of the cell's full configuration.

Every write is one transaction (``BEGIN IMMEDIATE``), so a crash never leaves half a row, and two processes
on the same file never both run a cell: a cell is *claimed* (status ``running``, owner = host:pid:run) before
it runs, and a claim is taken over only when its owner process is gone (killed sweeps resume).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import QuantzooError
from .cell import Cell

SCHEMA_VERSION = 2  # 2: latency per batch size in metrics_json, float widths NULL, status 'unsupported'
DEFAULT_DB = Path(".quantzoo") / "results.sqlite"

#: Metrics stored in their own columns, for SQL queries (everything, latency per batch size included, is in
#: metrics_json as a :class:`~quantzoo.bench.metrics.CellMetrics`).
METRIC_COLUMNS = {
    "accuracy": "REAL", "fakequant_accuracy": "REAL", "real_accuracy": "REAL", "fp_accuracy": "REAL",
    "delta": "REAL", "backend": "TEXT", "size_bytes": "REAL", "fp_size_bytes": "REAL", "compression": "REAL",
    "ideal_size_bytes": "REAL", "ideal_compression": "REAL", "degenerate": "TEXT", "threads": "INTEGER",
    "isa": "TEXT", "calib_s": "REAL", "train_s": "REAL", "wall_s": "REAL", "peak_rss_mb": "REAL",
    "bn_fold": "TEXT", "first_layer": "TEXT", "last_layer": "TEXT",
}
#: Finished states: a cell in one of them is not run again unless forced (``failed`` with --retry-failed).
DONE = ("ok", "failed", "unsupported")
CELL_COLUMNS = {
    "cell_key": "TEXT PRIMARY KEY", "suite": "TEXT", "method": "TEXT NOT NULL", "model": "TEXT NOT NULL",
    "dataset": "TEXT NOT NULL", "seed": "INTEGER NOT NULL", "w_bits": "INTEGER", "a_bits": "INTEGER",
    "mode": "TEXT", "config_json": "TEXT", "config_hash": "TEXT", "protocol_json": "TEXT", "cell_json": "TEXT",
    "paper_json": "TEXT", "status": "TEXT NOT NULL", "error": "TEXT", **METRIC_COLUMNS, "metrics_json": "TEXT",
    "versions_json": "TEXT", "git_rev": "TEXT", "started_at": "TEXT", "finished_at": "TEXT", "owner": "TEXT",
    "attempts": "INTEGER DEFAULT 0",
}


BUSY_TIMEOUT_S = 60.0


def _retry_locked(op, timeout_s: float):
    """Run ``op`` again while SQLite says "database is locked", for up to ``timeout_s``: switching a new file to
    WAL takes an exclusive lock without waiting on the busy timeout, so two processes that create the same
    database at once would otherwise fail one of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return op()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class ResultsDBError(QuantzooError):
    """The results database cannot be opened or written."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def owner_id(run_id: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{run_id}"


def owner_alive(owner: str | None) -> bool:
    """Whether the process that claimed a cell still runs (same host: its pid exists; other hosts: assumed)."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_s = rest.partition(":")[0]
    if host != socket.gethostname():
        return True
    try:
        pid = int(pid_s)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/Inf become None (SQLite and JSON both dislike them)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


class ResultsDB:
    """A results database file (created on first use)."""

    def __init__(self, path: str | os.PathLike | None = None, *, readonly: bool = False):
        self.path = Path(path) if path else DEFAULT_DB
        self.readonly = readonly
        if readonly:
            if not self.path.exists():
                raise ResultsDBError(f"results database {self.path} does not exist; run `quantzoo bench` first "
                                     "or pass --db PATH")
            self.conn = self._connect(f"file:{self.path}?mode=ro", uri=True)
            try:  # a file that is not SQLite, or SQLite without our table, fails here with one clear line
                self.conn.execute("SELECT cell_key FROM cells LIMIT 1").fetchall()
            except sqlite3.Error as e:
                raise ResultsDBError(f"{self.path} is not a quantzoo results database ({e}); pass the --db file "
                                     "that `quantzoo bench` wrote") from None
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResultsDBError(f"cannot create the directory of results database {self.path}: {e}") from None
        self.conn = self._connect(str(self.path))
        with self._write():
            cols = ", ".join(f"{k} {v}" for k, v in CELL_COLUMNS.items())
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS cells ({cols})")
            self.conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            # results of `quantzoo analyze`, one row per unit of work (so an interrupted analysis resumes)
            self.conn.execute("CREATE TABLE IF NOT EXISTS analyses (key TEXT PRIMARY KEY, kind TEXT, method TEXT, "
                              "model TEXT, dataset TEXT, seed INTEGER, spec_json TEXT, result_json TEXT, "
                              "finished_at TEXT)")
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(cells)")}
            for k, v in CELL_COLUMNS.items():  # forward-compatible: add columns a newer quantzoo introduced
                if k not in have:
                    self.conn.execute(f"ALTER TABLE cells ADD COLUMN {k} {v.replace(' PRIMARY KEY', '')}")

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None, uri=uri)
            conn.row_factory = sqlite3.Row
            if not self.readonly:
                _retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"), BUSY_TIMEOUT_S)
                conn.execute("PRAGMA synchronous=NORMAL")
            return conn
        except sqlite3.Error as e:
            raise ResultsDBError(f"cannot open results database {self.path}: {e}; check the path and its "
                                 "permissions, or pass another --db") from None

    @contextlib.contextmanager
    def _write(self):
        """One IMMEDIATE transaction: all of it lands, or none (rolled back on any error)."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise ResultsDBError(f"cannot write results database {self.path}: {e}; check that the file and its "
                                 "directory are writable and the disk is not full") from None
        try:
            yield
            self.conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise ResultsDBError(f"cannot write results database {self.path}: {e}; earlier rows are intact") from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self.conn.in_transaction:  # SQLite may already have rolled back (e.g. on SQLITE_FULL)
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()

    # -- cells -------------------------------------------------------------------------------------------
    def status(self, key: str) -> tuple[str | None, str | None]:
        row = self.conn.execute("SELECT status, owner FROM cells WHERE cell_key=?", (key,)).fetchone()
        return (row["status"], row["owner"]) if row else (None, None)

    def claim(self, cell: Cell, owner: str, *, suite: str | None = None, force: bool = False,
              retry_failed: bool = False) -> bool:
        """Mark ``cell`` as running by ``owner`` if it should run now; False when it is done (and not forced)
        or another live process is running it."""
        key = cell.key
        with self._write():
            row = self.conn.execute("SELECT status, owner, attempts FROM cells WHERE cell_key=?", (key,)).fetchone()
            if row is not None:
                st = row["status"]
                if st == "running" and row["owner"] != owner and owner_alive(row["owner"]):
                    return False
                if st in ("ok", "unsupported") and not force:
                    return False
                if st == "failed" and not (force or retry_failed):
                    return False
                self.conn.execute("UPDATE cells SET status='running', owner=?, started_at=?, attempts=attempts+1, "
                                  "error=NULL WHERE cell_key=?", (owner, now(), key))
                return True
            self.conn.execute(
                "INSERT INTO cells (cell_key, suite, method, model, dataset, seed, w_bits, a_bits, mode, config_json,"
                " config_hash, protocol_json, cell_json, paper_json, status, owner, started_at, attempts) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,'running',?,?,1)",
                (key, suite, cell.method, cell.model, cell.dataset, cell.seed, cell.w_bits, cell.a_bits, cell.mode,
                 json.dumps(cell.config, sort_keys=True), cell.config_hash, json.dumps(cell.protocol, sort_keys=True),
                 json.dumps(cell.to_dict(), sort_keys=True), json.dumps(cell.paper) if cell.paper else None, owner,
                 now()))
            return True

    def finish(self, cell: Cell, owner: str, *, status: str, metrics: dict | None = None, error: str | None = None,
               versions: dict | None = None, git_rev: str | None = None, started_at: str | None = None,
               finished_at: str | None = None) -> bool:
        """Record a cell's outcome (only if ``owner`` still holds its claim). Returns whether it was written."""
        metrics = _clean(dict(metrics or {}))
        cols = {k: metrics.get(k) for k in METRIC_COLUMNS}
        for k, v in cols.items():
            if isinstance(v, (list, dict)):
                cols[k] = json.dumps(v)
        sets = ", ".join(f"{k}=?" for k in cols)
        with self._write():
            cur = self.conn.execute(
                f"UPDATE cells SET status=?, error=?, {sets}, metrics_json=?, versions_json=?, git_rev=?, "
                "started_at=COALESCE(?, started_at), finished_at=?, owner=? WHERE cell_key=? AND owner=?",
                (status, error, *cols.values(), json.dumps(metrics, sort_keys=True, default=str),
                 json.dumps(versions or {}, sort_keys=True), git_rev, started_at, finished_at or now(), owner,
                 cell.key, owner))
            return cur.rowcount == 1

    def rows(self, keys: list[str] | None = None, status: str | None = None) -> list[dict]:
        """Rows as dicts (``metrics``, ``config``, ``paper`` parsed), optionally only these cell keys."""
        q, args = "SELECT * FROM cells", []
        conds = []
        if status:
            conds.append("status=?")
            args.append(status)
        if conds:
            q += " WHERE " + " AND ".join(conds)
        out = []
        wanted = set(keys) if keys is not None else None
        for r in self.conn.execute(q + " ORDER BY rowid", args):
            if wanted is not None and r["cell_key"] not in wanted:
                continue
            d = dict(r)
            d["metrics"] = json.loads(d.pop("metrics_json") or "{}")
            d["config"] = json.loads(d["config_json"] or "{}")
            d["paper"] = json.loads(d["paper_json"]) if d.get("paper_json") else None
            out.append(d)
        return out

    # -- analyses ------------------------------------------------------------------------------------------
    def analysis(self, key: str) -> dict | None:
        """The stored result of one unit of analysis, or None."""
        try:
            row = self.conn.execute("SELECT result_json FROM analyses WHERE key=?", (key,)).fetchone()
        except sqlite3.OperationalError:  # a read-only database written before analyses existed
            return None
        return json.loads(row["result_json"]) if row else None

    def save_analysis(self, key: str, kind: str, spec: dict, result: dict) -> None:
        with self._write():
            self.conn.execute("INSERT OR REPLACE INTO analyses VALUES (?,?,?,?,?,?,?,?,?)",
                              (key, kind, spec.get("method"), spec.get("model"), spec.get("dataset"),
                               spec.get("seed"), json.dumps(spec, sort_keys=True, default=str),
                               json.dumps(_clean(result), sort_keys=True, default=str), now()))

    def count(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT status, COUNT(*) FROM cells GROUP BY status")}
