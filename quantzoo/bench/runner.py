"""Run the cells of a plan on an executor, write each result to the database as it arrives (resume-safe)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .cache import default_cache_dir
from .db import ResultsDB, owner_id
from .executors import make_executor
from .suite import Plan


@dataclass
class Summary:
    total: int = 0
    ran: int = 0
    ok: int = 0
    failed: int = 0
    unsupported: int = 0
    done_before: int = 0
    busy_elsewhere: int = 0
    skipped_unsupported: int = 0
    wall_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.total} cells: ran {self.ran} ({self.ok} ok, {self.failed} failed), {self.unsupported} "
               "refused by their method, "
               f"{self.done_before} already in the database, {self.busy_elsewhere} running elsewhere; "
               f"{self.skipped_unsupported} method/bits/model combinations not supported; {self.wall_s:.1f} s"]
        out += [f"  FAILED {label}: {err}" for label, err in self.failures]
        return out


def versions() -> dict:
    """quantzoo, torch and every plugin distribution, by name → version."""
    from ..registry import get_registry

    import torch

    out = {"torch": torch.__version__, "python": sys.version.split()[0]}
    for p in get_registry().plugins:  # quantzoo's own entry included
        if p.distribution:
            out[p.distribution] = p.version
    return out


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("-dirty" if dirty else "")) if rev else None


def run_plan(plan: Plan, db: ResultsDB, *, executor: str = "local", jobs: int = 1, address: str | None = None,
             force: bool = False, retry_failed: bool = False, cache_dir=None, progress: bool = True) -> Summary:
    """Run every cell of ``plan`` not already finished in ``db`` (all of them with ``force``)."""
    t0 = time.perf_counter()
    preflight(plan)
    run_id = uuid.uuid4().hex[:8]
    owner = owner_id(run_id)
    summary = Summary(total=len(plan.cells), skipped_unsupported=len(plan.skipped))
    todo = []
    for cell in plan.cells:  # a first pass without locks, so the progress bar knows its total
        status, _ = db.status(cell.key)
        if status in ("ok", "unsupported") and not force or status == "failed" and not (force or retry_failed):
            summary.done_before += 1
        else:
            todo.append(cell)
    cache = str(default_cache_dir(cache_dir).resolve())
    vers, rev = versions(), git_revision()
    bar = _progress(len(todo), progress)
    ex = make_executor(executor, jobs, address, cache)
    pending: dict = {}
    queue = iter(todo)
    training: set = set()  # baselines whose FP cell is running now: their other cells wait, workers do not
    deferred: list = []

    def next_cell():
        for i, c in enumerate(deferred):
            if _baseline_of(c) not in training:
                return deferred.pop(i)
        for c in queue:
            if c.mode != "fp" and _baseline_of(c) in training:
                deferred.append(c)
                continue
            return c
        return None

    try:
        while True:
            while len(pending) < ex.capacity:
                cell = next_cell()
                if cell is None:
                    break
                if not db.claim(cell, owner, suite=plan.suite.name, force=force, retry_failed=retry_failed):
                    status, _ = db.status(cell.key)
                    if status == "running":
                        summary.busy_elsewhere += 1
                    else:
                        summary.done_before += 1
                    bar.update(1)
                    continue
                bar.set_postfix_str(cell.label, refresh=True)
                if cell.mode == "fp":
                    training.add(_baseline_of(cell))
                handle = ex.submit(cell)
                pending[_hkey(handle)] = (handle, cell)
            if not pending:
                break
            for handle in ex.wait([h for h, _ in pending.values()]):
                _, cell = pending.pop(_hkey(handle))
                res = ex.result(handle)
                if cell.mode == "fp":
                    training.discard(_baseline_of(cell))
                db.finish(cell, owner, status=res["status"], metrics=res["metrics"], error=res["error"],
                          versions=vers, git_rev=rev, started_at=res.get("started_at"),
                          finished_at=res.get("finished_at"))
                summary.ran += 1
                if res["status"] == "ok":
                    summary.ok += 1
                elif res["status"] == "unsupported":
                    summary.unsupported += 1
                else:
                    summary.failed += 1
                    summary.failures.append((cell.label, res["error"]))
                bar.update(1)
    finally:
        ex.close()
        bar.close()
    summary.wall_s = time.perf_counter() - t0
    return summary


def preflight(plan: Plan) -> None:
    """Load every data set of the plan before any cell runs: a missing or corrupt file is one clear
    :class:`~quantzoo.errors.DataError` now, not a failure in every cell later. (Forked pool workers also
    inherit the loaded tensors.)"""
    from .data import load_splits

    for dataset, root in sorted({(c.dataset, c.data_root) for c in plan.cells}, key=str):
        load_splits(dataset, root)


def _baseline_of(cell) -> tuple:
    return (cell.model, cell.dataset, cell.seed, json.dumps(cell.baseline, sort_keys=True))


def _hkey(handle):
    return id(handle) if isinstance(handle, dict) else handle


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="cell", disable=not enabled or total == 0, file=sys.stderr, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")
