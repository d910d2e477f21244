"""quantzoo-plugin-distiller: Distiller's range-linear PTQ/QAT, DoReFa, PACT and WRPN, and its YAML format."""

from quantzoo import hookimpl

from .ptq import DistillerPTQ, DistillerPTQConfig
from .qat import DistillerDorefa, DistillerPACT, DistillerQAT, DistillerWRPN
from .schedule import CLASS_TO_METHOD, method_for_schedule

QUANTIZERS = [DistillerPTQ, DistillerQAT, DistillerDorefa, DistillerPACT, DistillerWRPN]

__all__ = ["CLASS_TO_METHOD", "QUANTIZERS", "DistillerDorefa", "DistillerPACT", "DistillerPTQ",
           "DistillerPTQConfig", "DistillerQAT", "DistillerWRPN", "method_for_schedule"]


@hookimpl
def register_quantizers(register):
    for q in QUANTIZERS:
        register(q)
