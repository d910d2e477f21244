"""PACT's clipped activation, its α gradient (eq. 3) and the α regulariser worked by hand (Choi et al. 2018)."""

import pytest
import torch
from torch import nn

from quantzoo.errors import QuantzooWarning, UnsupportedError
from quantzoo_plugin_pact import PACTClip, PACTQuantizer

torch.set_num_threads(1)


def test_clip_rounding_and_alpha_gradient_by_hand():
    # k = 2 (2^k - 1 = 3), α = 2; x = [-1, 0.5, 1.9, 2.0, 3.0]
    # eq. 1: y = clip(x, 0, α) = [0, 0.5, 1.9, 2, 2]
    # eq. 2: y_q = round(y·3/2)·2/3: round([0, 0.75, 2.85, 3, 3]) = [0, 1, 3, 3, 3] → [0, 2/3, 2, 2, 2]
    # eq. 3: ∂y_q/∂α = 1[x ≥ α] → Σ over L = Σ y_q: 2 (x = 2.0 and 3.0); ∂y_q/∂x = 1 for 0 < x < α
    act = PACTClip(2, alpha=2.0)
    x = torch.tensor([-1.0, 0.5, 1.9, 2.0, 3.0], requires_grad=True)
    y = act(x)
    assert torch.allclose(y.detach(), torch.tensor([0.0, 2 / 3, 2.0, 2.0, 2.0]))
    y.sum().backward()
    assert act.alpha.grad.item() == 2.0
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0]))


def test_alpha_starts_at_10_and_gets_its_l2_term():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    q = PACTQuantizer(weight_bits=3, activation_bits=2, alpha_decay=0.01)
    prepared = q.prepare(model).train()
    clips = [m for m in prepared.modules() if isinstance(m, PACTClip)]
    # the last layer is kept float (the paper's default), so the ReLU feeding it stays a plain ReLU
    assert len(clips) == 1 and all(c.alpha.item() == 10.0 for c in clips)
    x = torch.randn(16, 4) * 20  # large enough that some pre-activations exceed α = 10
    prepared(x).sum().backward()
    raw = [c.alpha.grad.clone() for c in clips]
    q.before_optimizer_step(prepared)
    # gradient of λ_α·α²/2 is λ_α·α = 0.01·10 = 0.1, added to the data gradient
    for c, g in zip(clips, raw):
        assert c.alpha.grad.item() == pytest.approx(g.item() + 0.1)
    groups = q.param_groups(prepared, 1e-3, 5e-4)
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 1 and groups[0]["weight_decay"] == 5e-4


def test_dorefa_weights_and_no_relu_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    q = PACTQuantizer(weight_bits=2, activation_bits=4)
    with pytest.warns(QuantzooWarning, match="never trained"):
        w = q.convert(q.prepare(model))[2].weight
    # DoReFa eq. 9 at 2 bits: 2·round(3·u)/3 - 1 ∈ {-1, -1/3, 1/3, 1}
    assert set(torch.round(w * 3).unique().tolist()) <= {-3.0, -1.0, 1.0, 3.0}
    with pytest.raises(UnsupportedError, match="nn.ReLU"):
        q.prepare(nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)))
