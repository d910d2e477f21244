"""Compile the bit-serial kernels once, load them, and choose the instruction set they run with.

The C++ source (``csrc/bitserial.cpp``) is built with torch's extension machinery
(:func:`torch.utils.cpp_extension.load`, ninja + the system C++ compiler) on first use, into a directory
under the user cache named by a hash of the sources, flags and torch version: later processes (and test
sessions) reuse the built library. It needs no torch headers, so a cold build takes a few seconds.

Where it cannot be built (no compiler, no ninja, a compile error) :func:`library` returns None after ONE
warning that names the fix, and the packed backend runs every layer as before (unpacking to float32);
``QUANTZOO_KERNEL_ISA=none`` turns the kernels off without a warning.

ISA: every build holds three variants, chosen at run time (:func:`select_isa`): ``avx512`` (AVX-512F with
VPOPCNTDQ), ``avx2`` (VPSHUFB nibble look-up popcount) and ``portable`` (plain C++). ``QUANTZOO_KERNEL_ISA``
forces one (``auto`` = the best this CPU runs).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import warnings
from pathlib import Path

from ..errors import ConfigError, QuantzooWarning

#: Instruction sets in order of preference; the value is the kernel's ISA number.
ISAS = {"avx512": 2, "avx2": 1, "portable": 0}
ISA_ENV = "QUANTZOO_KERNEL_ISA"
CACHE_ENV = "QUANTZOO_KERNEL_CACHE"
ABI_VERSION = 5

_CSRC = Path(__file__).with_name("csrc")
_SOURCES = ("bitserial.cpp", "bitserial_isa.h")
_CFLAGS = ("-O3", "-std=c++17", "-ffp-contract=off")  # no FMA contraction: every ISA rounds alike


class _Layer(ctypes.Structure):
    """``struct qz_layer`` of bitserial.cpp, field for field."""

    _fields_ = [(n, ctypes.c_int32) for n in ("C", "KH", "KW", "SH", "SW", "PH", "PW", "DH", "DW",
                                               "in_kind", "planes")] + \
        [(n, ctypes.c_float) for n in ("prescale", "levels", "scale_in")] + \
        [(n, ctypes.c_int32) for n in ("zero_point", "qmin", "qmax", "pad_code", "kmap", "O", "w_kind",
                                       "groups", "nseg", "seg_words", "taps_per_seg", "bytes_mode",
                                       "seg_vecs")] + \
        [("w", ctypes.c_void_p), ("wb", ctypes.c_void_p), ("vtap", ctypes.c_void_p), ("vsum", ctypes.c_void_p),
         ("scale", ctypes.c_void_p), ("bias", ctypes.c_void_p), ("post_scale", ctypes.c_void_p),
         ("post_shift", ctypes.c_void_p)]


_state: dict = {}


def cache_dir() -> Path:
    """``$QUANTZOO_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/quantzoo/kernels`` (``~/.cache/quantzoo/kernels``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "quantzoo" / "kernels"


def _build_tag() -> str:
    import torch

    h = hashlib.sha256()
    for name in _SOURCES:
        h.update((_CSRC / name).read_bytes())
    h.update(" ".join(_CFLAGS).encode())
    h.update(torch.__version__.encode())
    h.update(os.uname().machine.encode() if hasattr(os, "uname") else b"")
    return h.hexdigest()[:16]


def _compiler_problem() -> str | None:
    from torch.utils.cpp_extension import is_ninja_available

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler ({cxx!r} is not on PATH)"
    if not is_ninja_available():
        return "ninja is not installed"
    return None


def _compile() -> ctypes.CDLL:
    from torch.utils.cpp_extension import load

    tag = _build_tag()
    build = cache_dir() / tag
    build.mkdir(parents=True, exist_ok=True)
    path = load(name=f"quantzoo_bitserial_{tag}", sources=[str(_CSRC / "bitserial.cpp")],
                extra_cflags=list(_CFLAGS), extra_include_paths=[str(_CSRC)], build_directory=str(build),
                is_python_module=False, verbose=False)
    lib = ctypes.CDLL(str(path))
    lib.qz_abi_version.restype = ctypes.c_int
    if lib.qz_abi_version() != ABI_VERSION:
        raise RuntimeError(f"{path} has ABI {lib.qz_abi_version()}, expected {ABI_VERSION}")
    lib.qz_cpu_isas.restype = ctypes.c_int
    lib.qz_pack_weight.argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 6 + [ctypes.c_void_p]
    lib.qz_pack_weight.restype = None
    lib.qz_forward.argtypes = [ctypes.POINTER(_Layer), ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p] + \
        [ctypes.c_int] * 5 + [ctypes.c_void_p, ctypes.c_void_p]
    lib.qz_forward.restype = ctypes.c_int
    lib.qz_peak.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)]
    lib.qz_peak.restype = ctypes.c_uint64
    lib.qz_clock_loop.argtypes = [ctypes.c_int64]
    lib.qz_clock_loop.restype = ctypes.c_uint64
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernel library (built on first use), or None — after one :class:`QuantzooWarning` per
    process naming the problem and the fix — where it cannot be built; None without a warning when
    ``QUANTZOO_KERNEL_ISA=none``."""
    if os.environ.get(ISA_ENV, "").strip().lower() == "none":
        return None
    if "lib" not in _state:
        problem = _compiler_problem()
        lib = None
        if problem is None:
            try:
                lib = _compile()
            except Exception as e:  # noqa: BLE001 - any build failure means: no kernels, said once
                first = str(e).strip().splitlines()
                problem = f"the build failed ({type(e).__name__}: {first[0] if first else ''})"
        _state["lib"], _state["problem"] = lib, problem
        if lib is None:
            warnings.warn(f"quantzoo.kernels: cannot build the bit-serial kernels: {problem}; the packed backend "
                          "runs every layer by unpacking to float32 (no speedup). Fix: install a C++ compiler and "
                          "ninja (e.g. apt-get install g++ ninja-build, or pip install ninja), or set CXX, or "
                          f"{CACHE_ENV} to a writable build directory",
                          QuantzooWarning, stacklevel=2)
    return _state["lib"]


def unavailable_reason() -> str | None:
    """Why :func:`library` is None (None when the kernels are loaded)."""
    if os.environ.get(ISA_ENV, "").strip().lower() == "none":
        return f"kernels turned off ({ISA_ENV}=none)"
    return None if library() is not None else _state.get("problem")


def cpu_isas() -> list[str]:
    """The kernel ISAs this CPU runs, best first (empty without the library)."""
    lib = library()
    if lib is None:
        return []
    mask = lib.qz_cpu_isas()
    return [name for name, i in ISAS.items() if (mask >> i) & 1]


def select_isa(isa: str | None = None) -> str:
    """The ISA to run with: ``isa``, else ``$QUANTZOO_KERNEL_ISA``, else the best this CPU runs
    (``auto``). A named ISA this CPU lacks raises :class:`~quantzoo.errors.ConfigError`."""
    want = (isa or os.environ.get(ISA_ENV) or "auto").strip().lower()
    have = cpu_isas()
    if want == "auto":
        return have[0] if have else "portable"
    if want not in ISAS:
        raise ConfigError(f"kernel ISA {want!r} is unknown: use auto, {', '.join(ISAS)} or none "
                          f"(via isa= or {ISA_ENV})")
    if want not in have:
        raise ConfigError(f"kernel ISA {want!r} cannot run on this CPU (it runs: {', '.join(have) or 'none'}); "
                          f"choose one of those or auto")
    return want
