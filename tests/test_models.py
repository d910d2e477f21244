"""Every registered model builds for every data set it declares, runs forward/backward, and the CNNs trace."""

import pytest
import torch

import quantzoo
from quantzoo.errors import UnsupportedError
from quantzoo.bench.data import build_model

PAIRS = [(m.name, d) for m in quantzoo.get_registry().entries("model") for d in m.obj.datasets]


@pytest.mark.parametrize("model,dataset", PAIRS, ids=[f"{m}-{d}" for m, d in PAIRS])
def test_forward_backward_and_fx_trace(model, dataset):
    ddef = quantzoo.get_registry().get("dataset", dataset)
    torch.manual_seed(0)
    net = build_model(model, dataset)
    x = torch.randn(3, *ddef.input_shape)
    out = net(x)
    if ddef.metric == "top1":  # classifiers give logits; detectors their own head (tests/test_detection.py)
        assert out.shape == (3, ddef.num_classes)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    net.eval()
    if model != "gru1d":  # nn.GRU is a leaf for fx; the others must trace end to end
        gm = torch.fx.symbolic_trace(net)
        assert torch.allclose(gm(x), net(x), atol=1e-6)


def test_lenet5_matches_the_papers_layout():
    net = build_model("lenet5", "mnist")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (5, 5)), (64, (5, 5))]
    assert [(f.in_features, f.out_features) for f in fcs] == [(1024, 512), (512, 10)]


def test_resnet_tiny_has_residual_adds():
    gm = torch.fx.symbolic_trace(build_model("resnet-tiny", "digits"))
    assert sum(1 for n in gm.graph.nodes if n.op == "call_function" and "add" in str(n.target)) == 3


def test_transformer_attention_is_made_of_linear_layers():
    net = build_model("transformer", "mnist1d")
    names = [n for n, m in net.named_modules() if type(m) is torch.nn.Linear]
    assert {"blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v", "blocks.0.attn.out"} <= set(names)


def test_model_dataset_mismatch_is_an_error():
    with pytest.raises(UnsupportedError, match="fits: mnist"):
        build_model("lenet5", "digits")
