"""Run nnieqat's quantization-aware-training workflow (aovoc/nnieqat-pytorch, ``nnieqat/quantize.py``) on CPU and write
``nnieqat_refs.pt`` beside this file, for ``tests/test_anchor_nnieqat.py``.

Not run by CI; to regenerate::

    git clone https://github.com/aovoc/nnieqat-pytorch /tmp/nnieqat      # fixtures made at 91410cf (2020-12-11)
    .venv/bin/python plugins/quantzoo-plugin-nnie/tests/anchors/make_nnieqat_refs.py --nnieqat /tmp/nnieqat

nnieqat's Python functions (``register_quantization_hook``, its forward hooks, ``unquant_weight``,
``merge_freeze_bn``, ``quant_dequant_weight``) are loaded from the checkout and run as they are. What they call
needs CUDA, and is replaced here:

* the quantizer: nnieqat uses a closed GPU library (``libgfpq_gpu.so``, not loaded here) or, when that fails or more
  than one GPU is present, its open CUDA kernel ``src/fake_quantize.cu``. :func:`gfpq_kernel` below is that kernel's
  arithmetic in float32 on CPU (libm ``log2/log/exp/pow`` in place of the ``__log2f``/``__logf``/``__expf``/
  ``__powf`` intrinsics), checked against nnieqat's own test vector before anything is written;
* ``Tensor.cuda()`` (called on a buffer and on a scratch tensor) returns the tensor itself, ``numba.cuda`` and
  ``quant_impl`` are stand-in modules, and ``torch.cuda.device_count()`` reports 2 so that nnieqat takes its
  kernel path instead of the library.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
torch.set_num_threads(1)

#: nnieqat ``quantize.py:test()``: the expected quantization of [-9, 0, 1, ..., 9]
TEST_VECTOR = [-8.7240619659, 0.0, 1.0, 2.0, 2.9536523819, 4.0, 4.9674310684, 5.9073047638, 7.0250086784, 8.0,
               8.7240619659]


def gfpq_kernel(t: torch.Tensor, bit_width: int = 8) -> torch.Tensor:
    """``fake_quantize_kernel_cuda`` element by element, in float32 (its constants and clamps, both branches)."""
    f = np.float32
    a = t.detach().cpu().numpy().astype(np.float32)
    o = np.zeros_like(a)
    m = f(np.abs(a).max()) if a.size else f(0)
    if -1e-15 < m < 1e-15:
        return torch.from_numpy(o)
    eight = bit_width == 8
    steps, big, qmax, step_ln = (16, 256.0, 127, 0.04332169878499658) if eight else \
        (128, 65536.0, 32767, 0.00033845077175779)
    k = int(np.floor(f(np.log2(m)) * f(steps))) + 1
    data_max = f(np.power(f(2), f(k) / f(steps)))
    data_max_floor = f(np.power(f(2), f(k - 1) / f(16)))  # 16 in both branches, as in the kernel
    thr = f(0.0020395972313035) if eight else f(0.0019537861485404)
    for i, v in np.ndenumerate(a):
        lower_ok = v <= data_max_floor * thr if eight else v < data_max_floor * thr
        if lower_ok and v > -data_max * thr:
            continue
        if v > 0:
            q = int(np.rint(f(np.log(f(big * v) / data_max)) / f(step_ln)))
            q = min(max(q, 0), qmax)
            o[i] = f(data_max / f(big)) * f(np.exp(f(q) * f(step_ln)))
        else:
            q = -int(np.rint(f(np.log(f(-big * v) / data_max)) / f(step_ln)))
            q = min(max(q, -qmax), -1)
            o[i] = -f(data_max / f(big)) * f(np.exp(f(-q) * f(step_ln)))
    return torch.from_numpy(o)


def load_nnieqat(src: Path):
    numba = types.ModuleType("numba")
    numba.cuda = types.SimpleNamespace(stream=lambda: None)
    sys.modules["numba"] = numba
    sys.modules["quant_impl"] = types.SimpleNamespace(fake_quantize=gfpq_kernel)
    torch.cuda.device_count = lambda: 2
    torch.Tensor.cuda = lambda self, *a, **k: self
    spec = importlib.util.spec_from_file_location("nnieqat_quantize", src / "nnieqat" / "quantize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Net(nn.Module):
    """Conv2d → BN → ReLU (nnieqat folds this BN), Linear → BN1d → ReLU (it only freezes this one), Linear."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()
        self.fc1, self.bn1, self.relu1 = nn.Linear(4 * 4 * 4, 16), nn.BatchNorm1d(16), nn.ReLU()
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        return self.fc2(self.relu1(self.bn1(self.fc1(x.flatten(1)))))


def pretrained_net() -> Net:
    """Seeded, with a few float SGD steps so that the BN statistics are not 0/1."""
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for x, y in batches(4, seed=7):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def batches(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 1, 6, 6, generator=g) * 2, torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


EPOCHS, STEPS, LR = 2, 3, 0.05


def workflow(nq) -> dict:
    """nnieqat's training loop (its README and tests/test_cifar10.py): hooks, ``merge_freeze_bn`` at the beginning
    (README: "finetuning from a well-trained model, merge_freeze_bn at beginning"), the optimizer, then per epoch
    ``train()`` and ``apply(freeze_bn)`` (what ``merge_freeze_bn`` re-applies to the BatchNorms; calling
    ``merge_freeze_bn`` again would give the folded layers new Parameter objects the optimizer does not hold), per
    minibatch forward, backward, ``apply(unquant_weight)``, step."""
    net = pretrained_net()
    init = copy.deepcopy(net.state_dict())
    nq.register_quantization_hook(net)
    net = nq.merge_freeze_bn(net)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9)
    data = batches(STEPS, seed=8)
    losses, grads0, maxes = [], None, []
    for _ in range(EPOCHS):
        net.train()
        net.apply(nq.freeze_bn)
        for x, y in data:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            if grads0 is None:
                grads0 = {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}
            net.apply(nq.unquant_weight)
            opt.step()
            losses.append(loss.detach())
            maxes.append([float(net.relu.activation_max_value), float(net.relu1.activation_max_value)])
    net.eval()
    probe = batches(2, seed=9)
    with torch.no_grad():
        eval_out = [net(x).clone() for x, _ in probe]  # evaluation raises the activation maxima too
    eval_maxes = [float(net.relu.activation_max_value), float(net.relu1.activation_max_value)]
    net.apply(nq.unquant_weight)
    final = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("weight_origin")}
    return {"init": init, "losses": torch.stack(losses), "grads_step0": grads0, "train_maxes": maxes,
            "probe": [x for x, _ in probe], "eval_out": eval_out, "eval_maxes": eval_maxes, "final": final,
            "requires_grad": {n: p.requires_grad for n, p in net.named_parameters()}}


def untrained_eval(nq) -> dict:
    """A hooked model evaluated before any training batch."""
    net = pretrained_net().eval()
    nq.register_quantization_hook(net)
    x = batches(1, seed=10)[0][0]
    with torch.no_grad():
        out = net(x).clone()
    return {"x": x, "out": out, "max": float(net.relu.activation_max_value)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nnieqat", type=Path, required=True, help="a checkout of aovoc/nnieqat-pytorch")
    args = ap.parse_args()
    got = gfpq_kernel(torch.tensor([-9.0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
    assert np.allclose(got.numpy(), TEST_VECTOR, atol=1e-6), got  # the port reproduces nnieqat's test vector
    nq = load_nnieqat(args.nnieqat)
    g = torch.Generator().manual_seed(0)
    kernel = {}
    for name, t in (("gauss", torch.randn(2000, generator=g)), ("wide", torch.randn(2000, generator=g) * 5),
                    ("small", torch.randn(2000, generator=g) * 0.01)):
        kernel[name] = {"x": t, "q8": gfpq_kernel(t, 8), "q16": gfpq_kernel(t, 16)}
    try:
        commit = subprocess.run(["git", "-C", str(args.nnieqat), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    mixed = nn.Sequential(nn.Embedding(5, 4), nn.LayerNorm(4), nn.PReLU(), nn.Sequential(nn.Conv1d(2, 2, 1),
                                                                                       nn.BatchNorm1d(2)))
    nq.register_quantization_hook(mixed)
    hooked = {"weight": sorted(n for n, m in mixed.named_modules() if hasattr(m, "weight_origin")),
              "activation": sorted(n for n, m in mixed.named_modules() if hasattr(m, "activation_max_value"))}
    refs = {"nnieqat_commit": commit, "hooked": hooked, "kernel": kernel, "workflow": workflow(nq), "untrained_eval": untrained_eval(nq),
            "training": {"epochs": EPOCHS, "steps": STEPS, "lr": LR, "momentum": 0.9}}
    torch.save(refs, HERE / "nnieqat_refs.pt")
    print(f"wrote {HERE / 'nnieqat_refs.pt'} (nnieqat {commit[:7]})")


if __name__ == "__main__":
    main()
