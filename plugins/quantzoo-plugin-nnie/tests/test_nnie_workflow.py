"""nnieqat's workflow: weight hooks with a float backup, activation hooks on a running max, BN merge, float
weights restored before the optimizer step."""

import torch
from torch import nn

from quantzoo.math import log_quantize
from quantzoo.training import TrainConfig, fit
from quantzoo_plugin_nnie import NNIEQuantizer, register_quantization_hook


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3))


def test_forward_uses_quantized_weight_and_keeps_float_copy():
    model = nn.Sequential(nn.Linear(5, 3))  # as nnieqat's, the hooks go on the children of the model
    lin = model[0]
    float_w = lin.weight.detach().clone()
    register_quantization_hook(model, 8, None)
    lin(torch.randn(2, 5))
    assert torch.equal(lin.weight.data, log_quantize(float_w))
    assert torch.equal(lin.weight_origin, float_w)
    # nnieqat's pre-hook backs up whatever the weight holds: a second forward before unquant_weight stores the
    # quantized weight (tests/test_anchor_nnieqat.py shows nnieqat doing the same)
    lin(torch.randn(2, 5))
    assert torch.equal(lin.weight_origin, log_quantize(float_w))


def test_optimizer_updates_the_float_copy():
    q = NNIEQuantizer(activation_bits=None)
    model = q.prepare(nn.Sequential(nn.Linear(4, 3)))
    lin = model[0]
    w0 = lin.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(torch.ones(1, 4))
    out.sum().backward()  # d/dW of sum(Wx) = 1 for every entry: the gradient at the quantized weight
    q.before_optimizer_step(model)
    assert torch.equal(lin.weight.data, w0), "float weights must be back before optimizer.step()"
    opt.step()
    assert torch.allclose(lin.weight.data, w0 - 0.1 * torch.ones_like(w0))


def test_activation_anchor_is_a_never_decaying_running_max():
    q = NNIEQuantizer(weight_bits=8, activation_bits=8)
    model = q.prepare(nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU()))
    model[0].weight.data = torch.eye(2)
    model[0].weight_origin.copy_(torch.eye(2))
    model.train()
    model(torch.tensor([[9.0, 1.0]]))
    model(torch.tensor([[2.0, 0.5]]))  # a smaller batch does not lower the anchor
    assert model[1].act_max.item() == 9.0
    model.eval()
    out = model(torch.tensor([[3.0, 8.0]]))
    # anchored at 9: 3 → 2^(25/16); 8 → 2^(48/16) = 8
    assert torch.allclose(out, torch.tensor([[2 ** (25 / 16), 8.0]]), atol=1e-5)
    model(torch.tensor([[3.0, 100.0]]))
    assert model[1].act_max.item() == 100.0  # as in nnieqat, evaluation raises it too


def test_bn_merged_and_convert_bakes_weights():
    model = _model()
    model.eval()
    x = torch.randn(4, 1, 6, 6)
    q = NNIEQuantizer()
    prepared = q.prepare(model)
    assert isinstance(prepared[1], nn.Identity)
    prepared._quantzoo_trained = True
    folded_float = prepared[0].weight.detach().clone()
    conv = q.convert(prepared)
    assert conv[0].weight_bits == 8 and not conv[0]._forward_pre_hooks
    assert torch.equal(conv[0].weight, log_quantize(folded_float))
    assert "weight_origin" not in conv.state_dict() and "0.weight_origin" not in conv.state_dict()
    assert torch.isfinite(conv(x)).all()


def test_qat_trains(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(256, 1, 6, 6)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    loader = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    q = NNIEQuantizer()
    prepared = q.prepare(_model())
    before = torch.nn.functional.cross_entropy(prepared(x), y).item()
    fit(q, prepared, loader, TrainConfig(epochs=5, lr=1e-2))
    after = torch.nn.functional.cross_entropy(prepared(x), y).item()
    assert after < before
    assert all(torch.isfinite(m.weight_origin).all() for m in prepared.modules() if hasattr(m, "weight_origin"))
