"""Running a prepared model as its own float reference, wholly or layer by layer.

Data-aware PTQ compares a layer's quantized output with the float model's (bias correction, AdaRound,
BRECQ, QDrop). The float model is the prepared one with its quantizers passing values through, so no copy
is kept and the two share every parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn

from .layers import QuantLayerMixin


@contextmanager
def quantizers_off(model: nn.Module, where: Callable[[str], bool] | None = None) -> Iterator[None]:
    """Within the block, the weight, input and output quantizers of every quantized layer (all of them, or
    those whose module name satisfies ``where``) pass values through; restored on exit.

    A quantizer takes part when it has a boolean ``quantizing`` attribute (:class:`~quantzoo.nn.FakeQuant`
    and any quantizer written to the same convention); an observing FakeQuant keeps observing, so freeze
    activation quantizers first when the float pass must not move their ranges.
    """
    saved = []
    for name, layer in model.named_modules():
        if not isinstance(layer, QuantLayerMixin) or (where is not None and not where(name)):
            continue
        for q in (layer.weight_quantizer, layer.input_quantizer, layer.output_quantizer):
            if isinstance(getattr(q, "quantizing", None), bool):
                saved.append((q, q.quantizing))
                q.quantizing = False
    try:
        yield
    finally:
        for q, value in saved:
            q.quantizing = value
