"""Saving and loading quantized models (quantzoo.save_quantized / load_quantized) for every method."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import quantzoo
from quantzoo.testing import check_config
from quantzoo import DataError, QuantzooWarning
from quantzoo.pipeline import run_pipeline
from quantzoo.testing import HARNESS_SETTINGS

REG = quantzoo.get_registry()


def _net(cls, seed):
    """``(model, example input)``: the method's own conformance model where it declares one (e.g. iPQ's block
    size must divide every layer's inputs), else a small CNN."""
    torch.manual_seed(seed)
    own = cls.conformance_model()
    if own is not None:
        return own[0].eval(), own[1]
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 10)).eval(), torch.randn(8, 1, 8, 8)


@pytest.mark.parametrize("method", REG.names("quantizer"))
def test_a_saved_model_loads_into_a_fresh_architecture_with_the_same_outputs(method, tmp_path):
    cls = REG.get("quantizer", method)
    setting = next((s for s in ((8, 8), *HARNESS_SETTINGS) if cls.capabilities.supports(*s)), None)
    net, x = _net(cls, 0)
    q = cls(check_config(cls, *setting), registry=REG)
    mode = "ptq" if cls.capabilities.ptq else "qat"
    def one_step(model, quantizer):
        model.train()
        opt = torch.optim.SGD(quantizer.param_groups(model, 1e-3, 0.0), lr=1e-3)
        model(x).square().mean().backward()
        opt.step()
        quantizer.after_optimizer_step(model)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantzooWarning)
        converted = run_pipeline(q, net, mode=mode, calibration=[x, torch.randn_like(x)],
                                 train=one_step if mode == "qat" else None).model
    path = tmp_path / "m.qz.pt"
    quantzoo.save_quantized(converted, path, q.to_json())
    fresh, _ = _net(cls, 1)  # another float model: every number must come from the file
    loaded = quantzoo.load_quantized(path, fresh, example_input=x[:2])
    with torch.no_grad():
        assert torch.equal(loaded(x), converted(x))


def test_quantize_records_the_config_and_bad_files_are_refused(tmp_path):
    net, x = _net(REG.get("quantizer", "uniform"), 0)
    q = quantzoo.quantize(net, "uniform", calibration=[x])
    quantzoo.save_quantized(q, tmp_path / "a.pt")
    assert torch.load(tmp_path / "a.pt", weights_only=True)["quantzoo"]["method"] == "uniform"
    (tmp_path / "junk.pt").write_bytes(b"not a file")
    with pytest.raises(DataError, match="not a quantzoo model file"):
        quantzoo.load_quantized(tmp_path / "junk.pt", _net(REG.get("quantizer", "uniform"), 1)[0], x)
    with pytest.raises(DataError, match="do not fit this architecture"):
        quantzoo.load_quantized(tmp_path / "a.pt", nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), x)
