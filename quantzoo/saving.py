"""Saving and loading quantized models: tensors and the method's config, never pickled code.

A file holds ``{"format": 1, "quantzoo": quantizer.to_json(), "state_dict": ...}`` and loads with
``torch.load(weights_only=True)``. Loading rebuilds the converted model's structure the way it was made —
the float architecture, prepared and converted by the same method and config — and then loads the saved
tensors into it (the conformance kit checks, for every method, that a converted model's state dict
reproduces its outputs in another converted model). So the loader needs the float architecture and one
example input; it does not need the data or the training::

    q = quantzoo.quantize(model, "uniform", calibration=batches)
    quantzoo.save_quantized(q, "model.qz.pt")
    q2 = quantzoo.load_quantized("model.qz.pt", MyNet(), example_input=batches[0])
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, DataError, QuantzooWarning

FORMAT = 1


def save_quantized(model: nn.Module, path: str | os.PathLike, config: dict | None = None) -> None:
    """Save a converted model: its state dict and ``config`` (``quantizer.to_json()``; read from the model
    when it came from :func:`quantzoo.quantize`)."""
    config = config or getattr(model, "_quantzoo_config", None)
    if config is None:
        raise ConfigError("save_quantized needs the method's config: pass config=quantizer.to_json() (models "
                          "returned by quantzoo.quantize carry it)")
    torch.save({"format": FORMAT, "quantzoo": config, "state_dict": model.state_dict()}, path)


def load_quantized(path: str | os.PathLike, float_model: nn.Module, example_input: Any, *, registry=None,
                   ) -> nn.Module:
    """The converted model saved at ``path``, rebuilt on ``float_model`` (the same architecture, any weights)
    with ``example_input`` to initialise its structure, then loaded with the saved tensors."""
    from .api import get_quantizer, load_config
    from .pipeline import finish_model, prepare_model
    from .registry import get_registry

    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - unreadable, truncated, or pickled code: refused the same way
        raise DataError(f"{path}: not a quantzoo model file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "quantzoo" not in data:
        raise DataError(f"{path}: not a quantzoo model file (format {FORMAT}); save it with quantzoo.save_quantized")
    reg = registry or get_registry()
    config = load_config(data["quantzoo"])
    cls = get_quantizer(data["quantzoo"]["method"])
    quantizer = cls(config, registry=reg)
    mode = "ptq" if cls.capabilities.ptq else "qat"

    @torch.no_grad()
    def first_forward(model, _quantizer):  # QAT quantizers initialise their ranges on the first training batch
        model.train()
        model(example_input)
        model.eval()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantzooWarning)
        prepared, _, _ = prepare_model(quantizer, float_model, mode=mode, calibration=[example_input],
                                       train=first_forward if mode == "qat" else None)
        shell, _ = finish_model(quantizer, prepared)
    try:
        shell.load_state_dict(data["state_dict"])
    except RuntimeError as e:
        raise DataError(f"{path}: the saved tensors do not fit this architecture under {cls.name} ({e}); pass "
                        "the float model the file was made from") from None
    shell._quantzoo_config = data["quantzoo"]
    return shell.eval()
