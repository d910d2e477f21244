"""LSQ's initialisation, step gradient (eq. 3) and gradient scale (§2.2) worked by hand (Esser et al. 2020)."""

import math

import pytest
import torch
from torch import nn

from quantzoo.errors import UnsupportedError
from quantzoo_plugin_lsq import LSQQuantizer, LSQStep

torch.set_num_threads(1)


def test_step_gradient_and_scale_by_hand():
    # 2-bit signed weights: Q_N = 2, Q_P = 1; s = 1; v = [0.3, -0.9, 2.0, -5.0]
    # eq. 3: inside (-2 < v/s < 1): -v/s + round(v/s): 0.3 → -0.3 + 0 = -0.3 ; -0.9 → 0.9 - 1 = -0.1
    #        v/s ≥ Q_P: Q_P = 1 ; v/s ≤ -Q_N: -Q_N = -2       → Σ = -1.4
    # gradient scale g = 1/√(N_W·Q_P) = 1/√(4·1) = 0.5        → ∂L/∂s = -0.7 for L = Σ v̂
    # values: round(clip(v/s, -2, 1))·s = [0, -1, 1, -2]; ∂v̂/∂v = [1, 1, 0, 0]
    q = LSQStep(2, signed=True, per_sample=False)
    q.initialized.fill_(True)
    with torch.no_grad():
        q.step.fill_(1.0)
    v = torch.tensor([0.3, -0.9, 2.0, -5.0], requires_grad=True)
    out = q(v)
    assert torch.equal(out.detach(), torch.tensor([0.0, -1.0, 1.0, -2.0]))
    out.sum().backward()
    assert q.step.grad.item() == pytest.approx(-0.7, abs=1e-6)
    assert torch.equal(v.grad, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    # without the gradient scale (the paper's ablation): -1.4
    q2 = LSQStep(2, signed=True, per_sample=False, grad_scale=False)
    q2.initialized.fill_(True)
    with torch.no_grad():
        q2.step.fill_(1.0)
    q2(v.detach()).sum().backward()
    assert q2.step.grad.item() == pytest.approx(-1.4, abs=1e-6)


def test_initialisation_and_per_sample_feature_count():
    # §2.1: s0 = 2·mean|v|/√Q_P; 4-bit weights [0.3, -0.9, 2.0, -5.0]: mean|v| = 8.2/4 = 2.05, Q_P = 7
    w = torch.tensor([0.3, -0.9, 2.0, -5.0])
    q = LSQStep(4, signed=True, per_sample=False)
    q(w)
    assert q.step.item() == pytest.approx(2 * 2.05 / math.sqrt(7), rel=1e-6)
    # activations: unsigned after a ReLU (Q_P = 2^b - 1 = 15), N_F = features of one sample (5, not 3·5)
    a = LSQStep(4, signed=None, per_sample=True)
    x = torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) + 0.1
    out = a(x)
    assert not bool(a.signed) and a.step.item() == pytest.approx(2 * x.mean().item() / math.sqrt(15), rel=1e-6)
    out.sum().backward()
    s = a.step.detach()
    v = x / s
    inside = (v < 15).float()
    expect = ((torch.round(v) - v) * inside + 15 * (1 - inside)).sum() / math.sqrt(5 * 15)
    assert a.step.grad.item() == pytest.approx(expect.item(), rel=1e-5)
    # a first batch with negative values makes the input quantizer signed (the network input, LayerNorm outputs)
    b = LSQStep(4, signed=None, per_sample=True)
    b(torch.tensor([[-1.0, 2.0]]))
    assert bool(b.signed) and b.spec().qmin == -8


def test_first_and_last_layers_are_8_bit_and_settings():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    prepared = LSQQuantizer(weight_bits=2, activation_bits=3).prepare(model)
    assert [prepared[i].weight_quantizer.bits for i in (0, 2, 4)] == [8, 2, 8]
    assert [prepared[i].input_quantizer.bits for i in (0, 2, 4)] == [8, 3, 8]
    with pytest.raises(UnsupportedError):
        LSQQuantizer.config_for_bits(1, 1)
    assert LSQQuantizer.config_for_bits(3, None).activation_bits is None
