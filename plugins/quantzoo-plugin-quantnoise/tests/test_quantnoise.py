"""Quant-Noise's noise functions worked by hand (Fan, Stock et al. 2021) and the fairseq issues they fix:
#3783/#3195 (the parameter is never overwritten; STE for every weight), #2968 (clamp before the noise)."""

import pytest
import torch
from torch import nn

from quantzoo.math.pq import PQResult, kmeans, product_quantize
from quantzoo.math.quant_noise import block_mask, drop_blocks, scalar_noise
from quantzoo_plugin_quantnoise import BlockDropWeight, IPQQuantizer, ScalarNoiseQuantizer, ScalarNoiseWeight

torch.set_num_threads(1)


def test_scalar_noise_by_hand_and_clamp_first():
    # 2-bit per-tensor asymmetric min-max of w = [-0.9, -0.2, 0.3, 1.2] (the range holds 0): scale = 2.1/3 = 0.7,
    # zero = -round(-0.9/0.7 = -1.29) = 1 → grid (q - 1)·0.7 = {-0.7, 0, 0.7, 1.4},
    # lo = -0.7, hi = 1.4. clamp(w) = [-0.7, -0.2, 0.3, 1.2]; q(w) = [-0.7, 0, 0, 1.4].
    w = torch.tensor([-0.9, -0.2, 0.3, 1.2], requires_grad=True)
    q = ScalarNoiseWeight(2, p=1.0).train()
    out = q(w)
    assert q.scale.item() == pytest.approx(0.7) and q.zero_point.item() == 1
    assert torch.allclose(out.detach(), torch.tensor([-0.7, 0.0, 0.0, 1.4]))   # p = 1: exactly q(w)
    out.sum().backward()
    assert torch.equal(w.grad, torch.tensor([0.0, 1.0, 1.0, 1.0]))             # STE through the clamp
    # fairseq#2968: noise formed before the clamp gives clamp(w) + (q - w) = -0.7 + 0.2 = -0.5 for w = -0.9
    qw, lo, hi = torch.tensor([-0.7, 0.0, 0.0, 1.4]), torch.tensor(-0.7), torch.tensor(1.4)
    wd = w.detach()
    assert (torch.clamp(wd, lo, hi) + (qw - wd))[0].item() == pytest.approx(-0.5)
    # a given mask: quantized where True, clamped float elsewhere; p = 0 is exactly clamp(w)
    mask = torch.tensor([False, True, True, False])
    assert torch.allclose(scalar_noise(wd, qw, lo, hi, mask), torch.tensor([-0.7, 0.0, 0.0, 1.2]))
    q0 = ScalarNoiseWeight(2, p=0.0).train()
    assert torch.allclose(q0(wd), torch.clamp(wd, lo, hi))
    # evaluation is fully quantized whatever p (fairseq: p = 1 at eval)
    assert torch.allclose(ScalarNoiseWeight(2, p=0.1).eval()(wd), qw)


def test_scalar_mask_rate_and_qparam_updates():
    torch.manual_seed(0)
    w = torch.randn(200, 100)
    q = ScalarNoiseWeight(4, p=0.3, update_step=2).train()
    out = q(w)
    frac = float((out - torch.clamp(w, -9, 9)).abs().gt(0).float().mean())  # changed = quantized and off-grid
    assert 0.27 < frac < 0.31
    scale0 = q.scale.clone()
    q(w * 2)                      # counter 1: no update
    assert torch.equal(q.scale, scale0)
    q(w * 2)                      # counter 2: update_step reached, range of the new weights
    assert q.scale.item() == pytest.approx(2 * scale0.item(), rel=1e-5)


def test_block_mask_and_drop_by_hand():
    # W = [1, 2, 3, 4], block 2, first block dropped, p = 0.5: [0, 0, 3/(1-0.5), 4/(1-0.5)] = [0, 0, 6, 8]
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False, False]])
    out = drop_blocks(w, mask, 0.5)
    assert torch.equal(out.detach(), torch.tensor([[0.0, 0.0, 6.0, 8.0]]))
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones(1, 4))  # STE: dropped weights get their gradient too (#3195)
    m = block_mask(300, 64, 8, 0.1, generator=torch.Generator().manual_seed(0))
    blocks = m.reshape(300, 8, 8)
    assert (blocks.all(-1) | ~blocks.any(-1)).all()         # constant over each block of 8 inputs
    assert 0.08 < float(m.float().mean()) < 0.12              # about p of them


def test_parameter_is_never_overwritten():
    # fairseq#3783: its hook wrote the noised tensor into weight.data; here the parameter stays as it was
    torch.manual_seed(0)
    lin = nn.Linear(16, 4)
    q = IPQQuantizer(p=0.5, first_layer="same", last_layer="same")
    prepared = q.prepare(nn.Sequential(lin)).train()
    before = prepared[0].weight.detach().clone()
    outs = [prepared(torch.ones(1, 16)).detach() for _ in range(3)]
    assert torch.equal(prepared[0].weight, before)
    assert not torch.equal(outs[0], outs[1]) or not torch.equal(outs[1], outs[2])  # fresh masks each pass
    prepared.eval()
    assert torch.equal(prepared(torch.ones(1, 16)), lin(torch.ones(1, 16)))       # no noise at evaluation
    assert isinstance(prepared[0].weight_quantizer, BlockDropWeight)


def test_pq_reconstruction_and_kmeans_by_hand():
    # codebook [[1, 2], [-1, 0]], assignments [1, 0] → the row [-1, 0, 1, 2]
    r = PQResult(torch.tensor([[1.0, 2.0], [-1.0, 0.0]]), torch.tensor([1, 0]), (1, 4))
    assert torch.equal(r.reconstruct(), torch.tensor([[-1.0, 0.0, 1.0, 2.0]]))
    # two well separated pairs: the centroids are their means
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    c, a = kmeans(x, 2, 5, generator=torch.Generator().manual_seed(1))
    assert sorted(c.tolist()) == [[0.0, 0.5], [10.0, 10.5]] and a[0] == a[1] != a[2] == a[3]
    # a matrix made of 3 distinct blocks is reconstructed exactly with 3 centroids
    blocks = torch.tensor([[1.0, -1.0], [0.5, 0.5], [2.0, 0.0]])
    w = blocks[torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])].reshape(2, 8)
    assert torch.equal(product_quantize(w, 2, 3, generator=torch.Generator().manual_seed(0)).reconstruct(), w)


def test_ipq_convert_stores_codes_and_settings():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    q = IPQQuantizer(first_layer="same", last_layer="int8")
    conv = q.convert(q.prepare(model))
    lin = conv[0]
    assert lin.pq_centroids.shape == (256, 8) and lin.pq_assignments.dtype == torch.uint8
    assert torch.equal(lin.weight, lin.pq_centroids[lin.pq_assignments.long()].reshape(64, 64))
    assert IPQQuantizer.bits_of_config(IPQQuantizer.config_for_bits(1, None)) == (1, None)
    assert ScalarNoiseQuantizer.config_for_bits(4, None).weight_bits == 4
