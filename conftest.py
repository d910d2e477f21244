"""Test-run set-up shared by ``tests/`` and every plugin's tests: the CPU kernels are pinned to AVX2.

The anchor fixtures (Brevitas, NNI, Distiller, nnieqat) were recorded by running the real libraries on an
x86-64 AVX2 CPU. AVX-512 and AMX kernels (ATen's vectorised ops, oneDNN's convolutions) sum in another
order, so a value within an ulp of a rounding tie lands on the other code and a quantized training
trajectory drifts away from the anchor's. Pinning ATen and oneDNN to AVX2 makes every x86-64 CPU compute
what the fixtures' CPU did. This runs before torch is imported (the variables are read when the kernels
are first dispatched); ``QUANTZOO_TEST_NATIVE_ISA=1`` keeps the machine's own kernels.

The cap is not a machine that exists: on a VNNI CPU torch still sends ``torch._int_mm`` to oneDNN's VNNI
int8 path, which the cap breaks (wrong int32 sums), so the test of torchao's int8 accuracy runs in a child
process on the native kernels (``plugins/quantzoo-plugin-torch/tests/test_methods.py``).
"""

from __future__ import annotations

import os

from quantzoo.cpu_flags import cpu_flags  # torch-free: torch must not start before the variables are set

if os.environ.get("QUANTZOO_TEST_NATIVE_ISA") != "1" and "avx2" in cpu_flags():
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")


def pytest_report_header(config):
    import torch

    return f"torch CPU kernels: {torch.backends.cpu.get_cpu_capability()} (ATEN_CPU_CAPABILITY=" \
           f"{os.environ.get('ATEN_CPU_CAPABILITY', 'unset')}, ONEDNN_MAX_CPU_ISA=" \
           f"{os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}; see conftest.py)"
