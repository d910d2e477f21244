"""quantzoo plugin: reconstruction PTQ — AdaRound (Nagel et al. 2020), BRECQ (Li et al. 2021) and QDrop
(Wei et al. 2022) on one reconstruction loop, as MQBench runs them."""

from quantzoo import hookimpl

from .quantizers import (AdaRoundConfig, AdaRoundQuantizer, BRECQConfig, BRECQQuantizer, QDropConfig,
                         QDropQuantizer, ReconstructionConfig)
from .weight import AdaRoundWeight

__all__ = ["AdaRoundConfig", "AdaRoundQuantizer", "AdaRoundWeight", "BRECQConfig", "BRECQQuantizer", "QDropConfig",
           "QDropQuantizer", "ReconstructionConfig"]


@hookimpl
def register_quantizers(register):
    register(AdaRoundQuantizer)
    register(BRECQQuantizer)
    register(QDropQuantizer)
