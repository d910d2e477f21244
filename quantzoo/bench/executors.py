"""Where cells run: in this process, in a process pool (``--jobs N``), or as Ray tasks (``--executor ray``).

Every executor runs :func:`safe_execute` and hands the result back to the driver, which alone writes the
database. Workers use one thread each (``Protocol.threads``), so results do not depend on the executor.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import time
import traceback
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError, UnsupportedError
from .cell import Cell
from .db import now


def safe_execute(cell: dict, cache_dir: str | None = None) -> dict:
    """Run one cell and never raise: ``{"status": "ok"|"failed"|"unsupported", "metrics", "error", ...}``.

    ``unsupported``: the method refused the model or setting with an :class:`UnsupportedError` (a statement
    about the method, shown as such on the leaderboard); ``failed``: anything else went wrong."""
    started = now()
    t0 = time.perf_counter()
    try:
        from .run import execute_cell

        metrics = execute_cell(Cell.from_dict(cell), cache_dir=cache_dir).as_dict()
        status, error = "ok", None
        acc = metrics.get("accuracy")
        if acc is None or acc != acc:  # NaN accuracy is a failure, not a score
            status, error = "failed", "accuracy is NaN"
    except UnsupportedError as e:
        metrics, status, error = {}, "unsupported", f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - a failed cell is recorded, the sweep goes on
        metrics = {"traceback": traceback.format_exc(limit=8)}
        status, error = "failed", f"{type(e).__name__}: {e}"
    metrics.setdefault("wall_s", time.perf_counter() - t0)
    return {"status": status, "metrics": metrics, "error": error, "started_at": started, "finished_at": now()}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _context():
    """``fork`` where available and safe (this process runs torch single-threaded, so no OpenMP pool is
    live): workers inherit the loaded registry and data instead of re-importing every plugin; else ``spawn``."""
    import torch

    if "fork" in multiprocessing.get_all_start_methods() and torch.get_num_threads() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


class SequentialExecutor:
    """Runs each cell in this process as it is submitted."""

    name = "local"
    capacity = 1

    def __init__(self, cache_dir: str | None = None):
        self.cache_dir = cache_dir

    def submit(self, cell: Cell) -> Any:
        return safe_execute(cell.to_dict(), self.cache_dir)

    def wait(self, handles: Iterable) -> list:
        return list(handles)

    def result(self, handle) -> dict:
        return handle

    def close(self) -> None:
        pass


class PoolExecutor:
    """A pool of ``jobs`` spawned worker processes (one torch thread each)."""

    name = "local"

    def __init__(self, jobs: int, cache_dir: str | None = None):
        self.capacity = jobs
        self.cache_dir = cache_dir
        self._pool = self._new()

    def _new(self):
        return cf.ProcessPoolExecutor(max_workers=self.capacity, mp_context=_context(), initializer=_init_worker)

    def submit(self, cell: Cell):
        try:
            return self._pool.submit(safe_execute, cell.to_dict(), self.cache_dir)
        except cf.process.BrokenProcessPool:
            self._pool = self._new()
            return self._pool.submit(safe_execute, cell.to_dict(), self.cache_dir)

    def wait(self, handles: Iterable) -> list:
        done, _ = cf.wait(list(handles), return_when=cf.FIRST_COMPLETED)
        return list(done)

    def result(self, handle) -> dict:
        try:
            return handle.result()
        except Exception as e:  # noqa: BLE001 - a worker died (killed, out of memory): that cell failed
            if isinstance(e, cf.process.BrokenProcessPool):
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new()
            return {"status": "failed", "metrics": {}, "error": f"worker process died: {type(e).__name__}: {e}",
                    "started_at": None, "finished_at": now()}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Each cell a Ray task (``num_cpus=1``); connects to ``address`` or starts a local instance."""

    name = "ray"

    def __init__(self, jobs: int = 1, address: str | None = None, cache_dir: str | None = None):
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'quantzoo[ray]'") from None
        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": False}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=max(jobs, 1), **kwargs)
            self._started = True
        self.capacity = max(jobs, int(ray.cluster_resources().get("CPU", 1)))
        self.cache_dir = cache_dir
        self._task = ray.remote(num_cpus=1, max_retries=0)(_ray_execute)

    def submit(self, cell: Cell):
        return self._task.remote(cell.to_dict(), self.cache_dir)

    def wait(self, handles: Iterable) -> list:
        done, _ = self.ray.wait(list(handles), num_returns=1)
        return done

    def result(self, handle) -> dict:
        try:
            return self.ray.get(handle)
        except Exception as e:  # noqa: BLE001 - the task's worker died: that cell failed
            return {"status": "failed", "metrics": {}, "error": f"ray task failed: {type(e).__name__}: {e}",
                    "started_at": None, "finished_at": now()}

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()


def _ray_execute(cell: dict, cache_dir: str | None) -> dict:
    _init_worker()
    return safe_execute(cell, cache_dir)


def make_executor(kind: str = "local", jobs: int = 1, address: str | None = None, cache_dir: str | None = None):
    if kind == "local":
        return SequentialExecutor(cache_dir) if jobs <= 1 else PoolExecutor(jobs, cache_dir)
    if kind == "ray":
        return RayExecutor(jobs, address, cache_dir)
    raise ConfigError(f"unknown executor {kind!r}; choose 'local' or 'ray'")
