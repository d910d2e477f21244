"""GPTQ against the OBQ formulas worked by hand (Frantar et al. 2023, arXiv:2210.17323 eq. 2-3) and against a
direct implementation of them; the Conv unfold path; the plugin's sequential solve and its errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantzoo.errors import ConfigError, NotCalibratedError, UnsupportedError
from quantzoo.math import compute_qparams, fake_quantize, reduce_min_max
from quantzoo.math.gptq import accumulate_hessian, gptq_quantize
from quantzoo.nn.columns import input_columns, weight_matrix
from quantzoo_plugin_gptq import GPTQQuantizer

torch.set_num_threads(1)
ASYM2 = dict(bits=2, signed=False, symmetric=False, granularity="per_channel", axis=0)


def spec(**kw):
    from quantzoo.spec import QuantSpec

    return QuantSpec(**{**ASYM2, **kw})


def rtn(W, s):
    scale, zp = compute_qparams(*reduce_min_max(W, s), s)
    return fake_quantize(W, scale, zp, s)


def test_one_column_update_by_hand():
    # H = blockdiag([[2,1],[1,2]], 2, 2): H⁻¹ = blockdiag([[2/3,-1/3],[-1/3,2/3]], 1/2, 1/2); no dampening.
    # W = [0.3, 0.76, -0.5, 1.0]; 2-bit asymmetric grid of the row: range [-0.5, 1.0], scale 1.5/3 = 0.5,
    # zero = round(0.5/0.5) = 1, levels (q-1)·0.5 ∈ {-0.5, 0, 0.5, 1.0}.
    # column 0: quant(0.3) = 0.5 (0.3/0.5 = 0.6 → 1, +1 = 2), error w - q = -0.2.
    #   OBQ eq. 2: δ = -(w_0 - q_0)/[H⁻¹]_00 · H⁻¹_{:,0} → w_1 += 0.2/(2/3)·(-1/3) = -0.1 → w_1 = 0.66;
    #   columns 2, 3 do not move (H⁻¹_{2,0} = H⁻¹_{3,0} = 0). loss_0 = 0.2²/(2/3)/2 = 0.03.
    # column 1: eq. 3 leaves [H⁻¹]_11 = 2/3 - (1/3)²/(2/3) = 1/2; quant(0.66) = 0.5 (1.32 → 1, +1 = 2);
    #   loss_1 = 0.16²/(1/2)/2 = 0.0256 (round-to-nearest would have given quant(0.76) = 1.0).
    # columns 2, 3 are on the grid: no error. Q = [0.5, 0.5, -0.5, 1.0], total 0.0556.
    H = torch.tensor([[2.0, 1, 0, 0], [1, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 2]])
    W = torch.tensor([[0.3, 0.76, -0.5, 1.0]])
    r = gptq_quantize(W, H, spec(), percdamp=0.0)
    assert torch.allclose(r.weight, torch.tensor([[0.5, 0.5, -0.5, 1.0]]), atol=1e-6)
    assert torch.allclose(r.losses, torch.tensor([[0.03, 0.0256, 0.0, 0.0]]), atol=1e-6)
    # the summed loss is the objective ½ΔHΔᵀ, Δ = W - Q = [-0.2, 0.26, 0, 0]:
    # ½(2·0.04 + 2·0.0676 + 2·1·(-0.2)(0.26)) = ½·0.1112 = 0.0556; round-to-nearest: Δ = [-0.2, -0.24, 0, 0]
    # → ½(0.08 + 0.1152 + 0.096) = 0.1456.
    D = W - r.weight
    assert r.loss == pytest.approx(0.0556, abs=1e-6) == pytest.approx(float(0.5 * D @ H @ D.t()), abs=1e-6)
    Dr = W - rtn(W, spec())
    assert float(0.5 * Dr @ H @ Dr.t()) == pytest.approx(0.1456, abs=1e-6)


def obq_reference(W, H, s, order):
    """OBQ eq. 2-3 literally: the full inverse Hessian, Gaussian elimination after each column."""
    W = W.double().clone()
    Hinv = torch.linalg.inv(H.double())
    scale, zp = compute_qparams(*reduce_min_max(W.float(), s), s)
    Q = torch.zeros_like(W)
    losses = torch.zeros_like(W)
    for q in order:
        w = W[:, q]
        qw = fake_quantize(w.float(), scale, zp, s).double()
        d = Hinv[q, q]
        Q[:, q], losses[:, q] = qw, (w - qw) ** 2 / d / 2
        W -= ((w - qw) / d).unsqueeze(1) * Hinv[:, q].unsqueeze(0)          # eq. 2 (column q itself → q_w)
        Hinv = Hinv - Hinv[:, q:q + 1] @ Hinv[q:q + 1, :] / d             # eq. 3
    return Q.float(), losses.float()


@pytest.mark.parametrize("block_size", [1, 3, 128])
@pytest.mark.parametrize("act_order", [False, True])
def test_matches_obq_formulas_with_lazy_blocks_and_act_order(block_size, act_order):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(7, 40, generator=g) * torch.linspace(0.2, 3, 7).unsqueeze(1)
    H = 2 * X @ X.t() / 40
    W = torch.randn(5, 7, generator=g)
    r = gptq_quantize(W, H, spec(bits=3), percdamp=0.0, block_size=block_size, act_order=act_order)
    order = torch.argsort(torch.diag(H), descending=True).tolist() if act_order else list(range(7))
    Q, losses = obq_reference(W, H, spec(bits=3), order)
    assert torch.allclose(r.weight, Q, atol=1e-5)
    assert torch.allclose(r.losses, losses, atol=1e-5)
    D = (W - r.weight).double()
    assert r.loss == pytest.approx(float(0.5 * torch.trace(D @ H.double() @ D.t())), rel=1e-4)


def test_diagonal_hessian_is_round_to_nearest_and_dampening_is_one_percent():
    # no cross terms: nothing to compensate, so GPTQ = RTN whatever the order
    W = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    H = torch.diag(torch.tensor([1.0, 4, 2, 8, 3, 5]))
    for act_order in (False, True):
        assert torch.equal(gptq_quantize(W, H, spec(bits=3), act_order=act_order).weight, rtn(W, spec(bits=3)))
    # 16 bits: the grid step is far below the weights' scale, Q = W to grid precision
    assert torch.allclose(gptq_quantize(W, H, spec(bits=16)).weight, W, atol=1e-4)
    # dampening: percdamp·mean(diag H) = 0.01·(2+2)/2 = 0.02 on the diagonal; loss_0 = err²/[H⁻¹]_00/2 with
    # [H⁻¹]_00 of [[2.02, 1], [1, 2.02]] = 2.02/(2.02² - 1) = 0.65346…
    H2 = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    r = gptq_quantize(torch.tensor([[0.3, 1.0]]), H2, spec())
    # grid of [0.3, 1.0]: range [0, 1], scale 1/3, zero 0: quant(0.3) = 1/3, err = -1/30
    assert float(r.losses[0, 0]) == pytest.approx((1 / 30) ** 2 / (2.02 / (2.02**2 - 1)) / 2, rel=1e-5)


def test_groups_static_and_dynamic():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(8, 64, generator=g)
    H, W = 2 * X @ X.t() / 64, torch.randn(3, 8, generator=g)
    for static in (False, True):
        Q = gptq_quantize(W, H, spec(), group_size=4, static_groups=static, act_order=static).weight
        # every group of 4 consecutive columns lies on one 2-bit grid: at most 4 values per (row, group)
        assert max(torch.unique(grp).numel() for grp in Q.reshape(-1, 4)) <= 4
    # the first group's params come from the (unchanged) first columns: with percdamp 0 and a diagonal H the
    # result is group-wise RTN
    Hd = torch.diag(torch.arange(1.0, 9.0))
    Qd = gptq_quantize(W, Hd, spec(), group_size=4, percdamp=0.0).weight
    gspec = spec(granularity="per_group", axis=1, group_size=4)
    assert torch.equal(Qd, rtn(W, gspec))


@pytest.mark.parametrize("conv", [nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=1),
                                  nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))])
def test_conv_unfold_gives_the_layer_objective(conv):
    # H = 2XXᵀ/n from the unfolded input: ½ tr(ΔHΔᵀ) must equal ‖conv(x; Δ)‖²/n for any Δ (column order of
    # input_columns = order of weight.flatten(1))
    torch.manual_seed(0)
    x = torch.randn(5, 3, 9) if isinstance(conv, nn.Conv1d) else torch.randn(5, 3, 7, 6)
    cols = input_columns(conv, x)
    assert torch.allclose(weight_matrix(conv) @ cols, conv(x).detach().transpose(0, 1).flatten(1)
                          - conv.bias.detach().unsqueeze(1), atol=1e-5)
    H, n = accumulate_hessian(None, 0, cols, 5)
    D = torch.randn_like(conv.weight)
    out = (F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d)(x, D, None, conv.stride, conv.padding,
                                                                  conv.dilation)
    lhs = 0.5 * torch.trace(D.flatten(1).double() @ H @ D.flatten(1).double().t())
    assert float(lhs) == pytest.approx(float(out.double().pow(2).sum() / n), rel=1e-6)
    # two batches accumulate to the same H as one (running mean over samples)
    H1, n1 = accumulate_hessian(None, 0, input_columns(conv, x[:2]), 2)
    H2, n2 = accumulate_hessian(H1, n1, input_columns(conv, x[2:]), 3)
    assert n2 == 5 and torch.allclose(H2, H)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


def test_sequential_solve_beats_rtn_on_each_layer_output():
    model = _mlp()
    batches = [torch.randn(32, 12) for _ in range(4)]
    q = GPTQQuantizer(weight_bits=3, first_layer="same", last_layer="same")
    prepared = q.calibrate(q.prepare(model), batches)
    x = torch.cat(batches)
    converted = q.convert(prepared)
    # each layer's own objective on the inputs it saw (earlier layers quantized): GPTQ below RTN
    h = x
    for i in (0, 2, 4):
        W, Qw = prepared[i].weight.detach(), converted[i].weight.detach()
        R = rtn(W, spec(bits=3))
        assert (h @ (W - Qw).t()).pow(2).sum() < (h @ (W - R).t()).pow(2).sum()
        h = converted[: i + 2](x) if i < 4 else h
    assert converted[2].weight_bits == 3 and torch.unique(converted[2].weight[0]).numel() <= 8
    assert converted(x).shape == (128, 4)


def test_bad_input_and_uncalibrated_use():
    with pytest.raises(ConfigError, match="static_groups"):
        GPTQQuantizer(group_size=4, act_order=True)
    with pytest.raises(UnsupportedError, match="activations float, not W4A"):
        GPTQQuantizer.config_for_bits(4, 8)
    with pytest.raises(ConfigError, match="group_size=5 does not divide the 16 inputs"):
        GPTQQuantizer(group_size=5).prepare(_mlp())
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 1))
    with pytest.raises(UnsupportedError, match="grouped convolution"):
        GPTQQuantizer().prepare(grouped)
    prepared = GPTQQuantizer().prepare(_mlp())
    with pytest.raises(NotCalibratedError, match="calibrate"):
        prepared(torch.randn(2, 12))
