"""On-disk cache of FP baselines: ``torch.save`` of a state_dict plus a JSON record with its sha256.

Entries are untrusted files: they are read as bytes, checked against the recorded sha256, and only then
deserialised with ``torch.load(weights_only=True)`` (which refuses pickled code). A missing, corrupt,
tampered or unloadable entry is reported and recomputed, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from ..errors import QuantzooWarning

ENV = "QUANTZOO_CACHE"


def default_cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit``, else ``$QUANTZOO_CACHE``, else ``.quantzoo/cache`` under the working directory."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV)
    return Path(env).expanduser() if env else Path(".quantzoo") / "cache"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and ``os.replace``: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class BaselineCache:
    """``root/baselines/<key>.pt`` (state_dict) and ``<key>.json`` (record: the sha256, accuracy, config)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = default_cache_dir(root)
        self.dir = self.root / "baselines"

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.dir / f"{key}.pt", self.dir / f"{key}.json"

    def load(self, key: str) -> tuple[dict, dict] | None:
        """``(state_dict, record)``, or None when absent; a bad entry warns and returns None (recompute)."""
        pt, meta = self.paths(key)
        if not pt.exists() or not meta.exists():
            return None
        try:
            record = json.loads(meta.read_text())
            data = pt.read_bytes()
        except (OSError, ValueError) as e:
            return self._reject(key, f"unreadable ({e})")
        if not isinstance(record, dict) or record.get("sha256") != sha256_bytes(data):
            return self._reject(key, "its sha256 does not match the recorded one (corrupt or tampered)")
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - UnpicklingError for pickled code, RuntimeError for a damaged archive
            return self._reject(key, f"torch.load(weights_only=True) refused it ({type(e).__name__}: {e})")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            return self._reject(key, "it is not a state_dict of tensors")
        return state, record

    def _reject(self, key: str, why: str) -> None:
        warnings.warn(f"baseline cache entry {self.paths(key)[0]} is not used: {why}; recomputing it",
                      QuantzooWarning, stacklevel=3)
        return None

    def save(self, key: str, state_dict: dict, record: dict) -> None:
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buf)
        data = buf.getvalue()
        pt, meta = self.paths(key)
        _atomic_write(pt, data)
        _atomic_write(meta, json.dumps({**record, "key": key, "sha256": sha256_bytes(data)}, indent=1).encode())

    @contextlib.contextmanager
    def lock(self, key: str):
        """An exclusive lock per entry, so that parallel workers train a baseline once and the others wait."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no locking, at worst a duplicate training
            yield
            return
        with open(self.dir / f"{key}.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
