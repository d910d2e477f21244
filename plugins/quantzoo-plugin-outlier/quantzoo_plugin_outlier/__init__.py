"""quantzoo plugin: the outlier-aware channel-rescaling methods AWQ (Lin et al. 2024, arXiv:2306.00978) and
SmoothQuant (Xiao et al. 2023, arXiv:2211.10438), and the ``transformer-outlier`` benchmark model."""

from quantzoo import ModelDef, hookimpl

from .awq import AWQConfig, AWQQuantizer
from .models import add_outlier_channels, build_outlier_transformer
from .smoothquant import SmoothQuantConfig, SmoothQuantQuantizer

__all__ = ["AWQConfig", "AWQQuantizer", "SmoothQuantConfig", "SmoothQuantQuantizer", "add_outlier_channels",
           "build_outlier_transformer"]


@hookimpl
def register_quantizers(register):
    register(AWQQuantizer)
    register(SmoothQuantQuantizer)


@hookimpl
def register_models(register):
    register(ModelDef("transformer-outlier", build_outlier_transformer, datasets=("digits", "mnist1d", "mnist"),
                      description="the zoo transformer with LayerNorm outlier channels (x50 gain, compensated "
                                  "in the next Linear: same function at initialisation)"))
