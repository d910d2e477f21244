"""Run micronet (666DZY666/micronet) on fixed seeded inputs and write the fixtures of the ``test_anchor_micronet.py``
of the four plugins whose docs cite it: dorefa (``compression/quantization/wqaq/dorefa/quantize.py``), twn, bnn and
xnor (``compression/quantization/wbwtab/quantize.py``). These plugins implement the papers; their tests assert where
and how micronet differs.

Not run by CI; to regenerate::

    git clone https://github.com/666DZY666/micronet /tmp/micronet      # fixtures made at c31cdd2 (2021-10-06)
    .venv/bin/python plugins/quantzoo-plugin-dorefa/tests/anchors/make_micronet_refs.py --micronet /tmp/micronet

Both files import only torch; they are loaded from the checkout by path (nothing of micronet is copied here). Writes
``plugins/quantzoo-plugin-{dorefa,twn,bnn,xnor}/tests/anchors/micronet_refs.pt``.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
from pathlib import Path

import torch
from torch import nn

PLUGINS = Path(__file__).resolve().parents[3]
OUT = {p: PLUGINS / f"quantzoo-plugin-{p}" / "tests" / "anchors" / "micronet_refs.pt"
       for p in ("dorefa", "twn", "bnn", "xnor")}
torch.set_num_threads(1)


def load(src: Path, family: str):
    """micronet's ``quantize.py`` of ``wqaq/dorefa`` or ``wbwtab``."""
    spec = importlib.util.spec_from_file_location(f"micronet_{family.replace('/', '_')}",
                                                  src / "micronet/compression/quantization" / family / "quantize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def value_and_grad(module, x, upstream):
    x = x.clone().requires_grad_()
    out = module(x)
    out.backward(upstream)
    return out.detach(), x.grad.detach()


def dorefa(mq, commit: str) -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 50, generator=gen) * 0.5
    w.view(-1)[:3] = torch.tensor([0.0, 2.0, -2.0])  # w = 0: u = ½, n·u = n/2 is a tie at every width
    x = torch.cat([torch.linspace(-2.0, 12.0, 561), torch.tensor([5.0, 0.0])])  # 0.1·x = ½ at x = 5
    gw = torch.randn(w.shape, generator=gen)
    gx = torch.randn(x.shape, generator=gen)
    refs = {"w": w, "x": x, "upstream_w": gw, "upstream_x": gx}
    for bits in (2, 3, 4, 8):
        out, grad = value_and_grad(mq.WeightQuantizer(bits), w, gw)
        refs[f"weight_{bits}"] = {"out": out, "grad": grad}
        out, grad = value_and_grad(mq.ActivationQuantizer(bits), x, gx)
        refs[f"activation_{bits}"] = {"out": out, "grad": grad}
    # layer placement of prepare(): which Conv/Linear layers become quantized
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8, 4), nn.Linear(4, 2))
    q = mq.prepare(model, a_bits=4, w_bits=4)
    refs["prepared_types"] = [type(m).__name__ for m in q]
    try:
        mq.WeightQuantizer(1)(w)
        refs["one_bit_error"] = None
    except AssertionError:
        refs["one_bit_error"] = "AssertionError"
    refs["micronet_commit"] = commit
    torch.save(refs, OUT["dorefa"])


def twn(mq) -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 2, 5, 1, generator=gen) * 0.3
    # Channels 0 and 1 hold a weight exactly at the threshold: |w| = 0.7·E|w| = 0.7 (float32) when the other nine
    # |w| sum to 9.3 (E|w| = 1): eight 1.0 and a 1.3, signs mixed.
    w[0] = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.3, 0.7]).reshape(2, 5, 1)
    w[1] = -w[0]
    g = torch.randn(w.shape, generator=gen)
    x = w.clone().requires_grad_()
    out = mq.WeightQuantizer(W=3)(x)
    out.backward(g)
    # layer placement of prepare(): Conv2d only, not the first nor the last one; Linear never
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8, 2))
    placed = [type(m).__name__ for m in mq.prepare(model, A=32, W=3)]
    torch.save({"w": w, "upstream": g, "out": out.detach(), "grad": x.grad, "prepared_types": placed}, OUT["twn"])


def bnn(mq) -> None:
    # a grid over [-2, 2] that holds 0 and ±1 exactly (step 1/64)
    x = torch.arange(-128, 129, dtype=torch.float32) / 64
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    refs = {"x": x, "upstream": g}
    for name, fn in (("activation", mq.BinaryActivation), ("weight", mq.BinaryWeight)):
        xr = x.clone().requires_grad_()
        out = fn.apply(xr)
        out.backward(g)
        refs[name] = {"out": out.detach(), "grad": xr.grad}
    torch.save(refs, OUT["bnn"])


def xnor(mq) -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, generator=gen) * 0.8 + 0.2  # some |w| > 1, channel means away from 0
    g = torch.randn(w.shape, generator=gen)
    param = nn.Parameter(w.clone())
    out = mq.WeightQuantizer(W=2)(param)
    out.backward(g)
    # micronet centres and clamps the parameter itself (w.data), so the weight changes in every forward pass
    a = torch.randn(2, 3, 5, 5, generator=gen) * 2
    act = mq.ActivationQuantizer(A=2)(a.clone())
    torch.save({"w": w, "upstream": g, "out": out.detach(), "grad": param.grad, "w_after": param.detach().clone(),
                "a": a, "act": act}, OUT["xnor"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--micronet", type=Path, required=True, help="a checkout of 666DZY666/micronet")
    src = ap.parse_args().micronet
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    dorefa(load(src, "wqaq/dorefa"), commit)
    wbwtab = load(src, "wbwtab")
    twn(wbwtab)
    bnn(wbwtab)
    xnor(wbwtab)
    print("wrote " + ", ".join(str(p) for p in OUT.values()) + f" (micronet {commit[:7]})")


if __name__ == "__main__":
    main()
