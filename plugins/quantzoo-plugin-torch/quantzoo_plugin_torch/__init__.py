"""quantzoo-plugin-torch: PyTorch's own quantization on real int8 CPU kernels, plus torchao's int8 methods.

Methods: ``torch-dynamic``, ``torch-static`` (eager), ``torch-fx``, ``torch-qat`` (torch.ao.quantization,
torch >=2.4,<2.14) and ``torchao-int8-dynamic``, ``torchao-int8-weight``, ``torchao-pt2e`` (optional
torchao). Backends: ``torch-x86``, ``torch-onednn``, ``torch-qnnpack``, ``torchao-cpu``. A method whose
API is missing stays registered, says ``[unavailable: reason]`` in its description and raises
:class:`quantzoo.UnsupportedError` with the reason from ``config_for_bits``/``prepare``.
"""

from __future__ import annotations

from quantzoo import hookimpl

from ._compat import SUPPORTED_TORCH
from .backends import BACKENDS, TorchOneDNNBackend, TorchQNNPACKBackend, TorchX86Backend
from .dynamic import TorchDynamicQuantizer
from .qat import TorchQATQuantizer
from .static import TorchFXQuantizer, TorchStaticQuantizer
from .torchao_methods import TORCHAO_BACKENDS, TORCHAO_QUANTIZERS

QUANTIZERS = [TorchDynamicQuantizer, TorchStaticQuantizer, TorchFXQuantizer, TorchQATQuantizer,
              *TORCHAO_QUANTIZERS]

__all__ = ["BACKENDS", "QUANTIZERS", "SUPPORTED_TORCH", "TorchDynamicQuantizer", "TorchFXQuantizer",
           "TorchOneDNNBackend", "TorchQATQuantizer", "TorchQNNPACKBackend", "TorchStaticQuantizer",
           "TorchX86Backend"]


def _mark_unavailable(cls):
    """Registered either way; an unavailable method says why in the description ``quantzoo list`` shows
    (a cheap check: torchao's API is probed when a torchao method is used, not when names are listed)."""
    ok, why = cls.registration_availability()
    if not ok and not cls.description.startswith("[unavailable"):
        cls.description = f"[unavailable: {why}] {cls.description}"
    return cls


@hookimpl
def register_quantizers(register):
    for q in QUANTIZERS:
        register(_mark_unavailable(q))


@hookimpl
def register_backends(register):
    for b in [*BACKENDS, *TORCHAO_BACKENDS]:
        register(b)
