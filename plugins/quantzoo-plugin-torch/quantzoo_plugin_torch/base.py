"""What every method of this plugin shares: availability, the engine setting, 8-bit-only bit mapping."""

from __future__ import annotations

from typing import Literal

from torch import nn

from quantzoo.errors import UnsupportedError
from quantzoo import Quantizer, QuantizerConfig

from ._compat import engine_available

Engine = Literal["x86", "fbgemm", "onednn", "qnnpack"]


class EngineConfig(QuantizerConfig):
    """The quantized engine (``torch.backends.quantized.engine``) weights are packed for and run on."""

    engine: Engine = "x86"


class PluginQuantizer(Quantizer):
    """Base of the plugin's methods: reports itself unavailable (with the reason) instead of failing.

    Subclasses implement :meth:`availability`; their ``capabilities`` say W8A8 (int8 activations) or W8A32
    (float activations, weight-only or dynamic kernels).
    """

    family = "PyTorch native"
    default_backend = "torch-x86"

    @classmethod
    def availability(cls) -> tuple[bool, str]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        """``(True, "")`` or ``(False, reason)``: the torch/torchao API or the engine is missing."""
        return cls.availability()

    @classmethod
    def _require_available(cls) -> None:
        ok, why = cls.is_available()
        if not ok:
            raise UnsupportedError(f"{cls.name} is unavailable: {why}")

    @classmethod
    def config_for_bits(cls, w_bits, a_bits):
        cls._require_available()
        return super().config_for_bits(w_bits, a_bits)

    @classmethod
    def _config_for_bits(cls, w_bits, a_bits):
        return cls.Config()

    @classmethod
    def bits_of_config(cls, config):
        """int8 weights; int8 activations, or float ones for the weight-only/dynamic methods."""
        return 8, cls.capabilities.activation_bits[0]

    def __init__(self, config=None, *, registry=None, **overrides):
        super().__init__(config, registry=registry, **overrides)
        engine = getattr(self.config, "engine", None)
        if engine is not None:
            ok, why = engine_available(engine)
            if not ok:
                raise UnsupportedError(f"{self.name}: engine: {why}; choose another engine")

    def prepare(self, model: nn.Module) -> nn.Module:
        self._require_available()
        return super().prepare(model)

    def convert(self, model: nn.Module) -> nn.Module:
        self._require_available()
        return super().convert(model)


def require_layers(model: nn.Module, types: tuple[type, ...], method: str, what: str) -> None:
    """Raise if ``model`` has no module the method quantizes (it would silently stay float)."""
    if not any(isinstance(m, types) for m in model.modules()):
        raise UnsupportedError(f"{method}: the model has no {what} to quantize; the result would run entirely "
                               "in float. Pick a method that covers the model's layers")


def count_quantized(model: nn.Module) -> int:
    """Number of torch.ao quantized (static or dynamic) compute modules in ``model``."""
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.quantized.dynamic as nnqd

    kinds = (nnq.Linear, nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnqd.Linear, nnqd.LSTM, nnqd.GRU,
             nnqd.LSTMCell, nnqd.GRUCell, nnqd.RNNCell)
    return sum(isinstance(m, kinds) for m in model.modules())
