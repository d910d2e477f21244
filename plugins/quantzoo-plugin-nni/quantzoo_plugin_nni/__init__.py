"""quantzoo-plugin-nni: NNI's QAT, PTQ, LSQ, LSQ+, DoReFa and BNN quantizers driven by its config_list."""

from quantzoo import hookimpl

from .config_list import normalize, resolve, select_modules, translate_v2
from .quantizers import QUANTIZERS, NNIBNN, NNIPTQ, NNIQAT, NNILSQ, NNIDoReFa, NNILSQPlus, default_config_list

__all__ = ["NNIBNN", "NNIPTQ", "NNIQAT", "NNILSQ", "NNIDoReFa", "NNILSQPlus", "QUANTIZERS", "default_config_list",
           "normalize", "resolve", "select_modules", "translate_v2"]


@hookimpl
def register_quantizers(register):
    for q in QUANTIZERS:
        register(q)
