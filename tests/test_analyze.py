"""quantzoo analyze: per-layer SQNR finds a deliberately fragile layer for every method that quantizes activations."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import quantzoo
from quantzoo.testing import check_config
from quantzoo import QuantzooError
from quantzoo.bench.analyze import layer_sqnr, sensitivity_order, sqnr_db
from quantzoo.pipeline import run_pipeline

REG = quantzoo.get_registry()


def test_sqnr_by_hand():
    x = torch.tensor([3.0, 4.0])  # signal power 25
    assert sqnr_db(x, x + torch.tensor([0.0, 0.5])) == pytest.approx(10 * math.log10(25 / 0.25))
    assert sqnr_db(x, x) == math.inf


def fragile_mlp() -> nn.Sequential:
    """Layer '2' is fragile: one of its input channels is 100x the others (layer '0' scales that channel up,
    '2' scales its weights down: the float function is unchanged, since ReLU(100 a) = 100 ReLU(a)), so any
    per-tensor quantization of its input leaves the other channels a fraction of a step."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    with torch.no_grad():
        m[0].weight[5] *= 100
        m[0].bias[5] *= 100
        m[2].weight[:, 5] /= 100
    return m


def _ptq_methods_with_activations():
    """Every installed PTQ method with integer activations, at W4A4 (else W8A8). QAT-only methods are not
    here: converted untrained, their activation quantizers sit at a learned parameter's initial value (PACT's
    alpha, LSQ's step) or a fixed clamp(0, 1) (DoReFa) and do not rank a layer by its data."""
    out = []
    for name in REG.names("quantizer"):
        caps = REG.get("quantizer", name).capabilities
        setting = next((s for s in ((4, 4), (8, 8)) if caps.ptq and caps.supports(*s)), None)
        if setting is not None:
            out.append((name, setting))
    return out


@pytest.mark.parametrize("method,setting", _ptq_methods_with_activations())
def test_the_fragile_layer_ranks_first(method, setting):
    model = fragile_mlp()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(64, 16, generator=gen) for _ in range(4)]
    cls = REG.get("quantizer", method)
    try:
        q = cls(check_config(cls, *setting), registry=REG)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = run_pipeline(q, model, mode="ptq", calibration=batches).model
    except QuantzooError as e:
        pytest.skip(f"{method} refuses the MLP: {e}")
    if getattr(q.config, "equalize", False):
        # cross-layer equalization (DFQ §4.1) undoes exactly the planted 100x channel, and its per-channel
        # rescaling makes layer '0' compute a different (equivalent) function than the float model's '0'
        pytest.skip(f"{method} equalizes the channels across layers: no fragile layer is left to rank")
    layers = ["0", "2", "4"]
    info = layer_sqnr(model, converted, layers, batches)
    if all(info[n]["local_sqnr_db"] is None and info[n]["sqnr_db"] is None for n in layers):
        pytest.skip(f"{method}'s converted layers cannot be compared by name")
    assert sensitivity_order(info, layers)[0] == "2", info
