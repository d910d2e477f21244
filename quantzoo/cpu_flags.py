"""The CPU's feature flags as the kernel reports them (``/proc/cpuinfo``); torch-free, so the test set-up can
read them before torch starts."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The ``flags`` of the first CPU in ``/proc/cpuinfo`` (``avx2``, ``avx512_vnni``, ...); empty where the
    file is absent (not Linux) or has no such line (e.g. aarch64 names them ``Features``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()
