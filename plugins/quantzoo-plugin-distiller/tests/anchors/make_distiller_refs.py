"""Run the real Distiller on fixed seeded inputs and write the reference fixtures of ``test_anchor_distiller.py``.

Not run by CI (Distiller is archived and not installable on current torch); the fixtures it writes are committed
beside it. To regenerate::

    git clone https://github.com/IntelLabs/distiller /tmp/distiller        # fixtures made at d859fc8 (2023-04-24)
    .venv/bin/python plugins/quantzoo-plugin-distiller/tests/anchors/make_distiller_refs.py --distiller /tmp/distiller

It imports Distiller's own modules from that checkout (nothing of Distiller is copied here) with the repo's
torch. Three kinds of shims make a 2023 Distiller import and trace on torch 2.13; none touches a quantizer:

* packages Distiller imports but never uses for quantization (torchvision, pandas, torchnet, ...) are
  replaced by empty stand-in modules (``torchvision.ops.misc.FrozenBatchNorm2d`` by an unused class);
* ``pkg_resources`` (gone from setuptools) by a two-function stand-in for Distiller's version check;
* for ``SummaryGraph`` (PTQ's graph tracing): ``torch.onnx.set_training``, ``torch.jit.get_trace_graph``,
  ``torch.onnx._optimize_trace`` and ``Node.__getitem__`` are re-created from their torch 2.13 equivalents (the
  trace's scope names in torch 1.3's ``Type[name]`` form, so that BN folding and ReLU fusion find their modules),
  and the parser of traced tensor shapes reads ``Value.type().sizes()`` instead of the old string form.

Output: ``distiller_refs.pt`` (a dict of plain tensors, lists and numbers; ``torch.load(weights_only=True)``) and
``distiller_refs.json`` (the Distiller commit, torch version and the schedule-file cases).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types
from collections import OrderedDict
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
torch.set_num_threads(1)

_spec = importlib.util.spec_from_file_location("distiller_anchor_nets", HERE / "nets.py")
nets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nets)

UNUSED_PACKAGES = {"torchvision", "pandas", "torchnet", "tensorboardX", "pydot", "xlsxwriter", "git",
                   "pretrainedmodels", "qgrid", "bqplot", "gym", "ipywidgets", "graphviz", "sklearn"}


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty modules for the packages in UNUSED_PACKAGES."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in UNUSED_PACKAGES:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = mock.MagicMock(name=spec.name)
        m.__path__, m.__spec__ = [], spec
        if spec.name == "torchvision.ops.misc":
            m.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (nn.Module,), {})
        return m

    def exec_module(self, module):
        pass


def _torch_shims() -> None:
    from packaging.version import parse as parse_version
    from torch.onnx._internal.torchscript_exporter import utils as ts_utils

    pr = types.ModuleType("pkg_resources")

    class DistributionNotFound(Exception):
        pass

    def require(name):
        raise DistributionNotFound(name)

    pr.DistributionNotFound, pr.require, pr.parse_version = DistributionNotFound, require, parse_version
    sys.modules.setdefault("pkg_resources", pr)

    @contextlib.contextmanager
    def set_training(model, mode):
        old = model.training
        model.train(mode)
        try:
            yield
        finally:
            model.train(old)

    class Trace:
        def __init__(self, graph):
            self._graph = graph

        def graph(self):
            return self._graph

        def set_graph(self, graph):
            self._graph = graph

    def get_trace_graph(model, args, _force_outplace=False):
        # torch >= 1.4 names trace scopes only through this map; give them torch 1.3's "Type[name]" form that
        # Distiller's onnx_name_2_pytorch_name parses ("ConvNet/Conv2d[conv1]" -> "conv1")
        args = args if isinstance(args, tuple) else (args,)
        torch.jit._trace._trace_module_map = {
            m: (type(m).__name__ if not n else f"{type(m).__name__}[{n.rpartition('.')[2]}]")
            for n, m in model.named_modules()}
        try:
            graph, out = torch.jit._get_trace_graph(model, args, _force_outplace=_force_outplace)
        finally:
            torch.jit._trace._trace_module_map = None
        return Trace(graph), out

    def optimize_trace(trace, operator_export_type):
        trace.set_graph(ts_utils._optimize_graph(trace.graph(), operator_export_type))

    torch.onnx.set_training = set_training
    torch.jit.get_trace_graph = get_trace_graph
    torch.onnx._optimize_trace = optimize_trace
    if not hasattr(torch._C.Node, "__getitem__"):
        torch._C.Node.__getitem__ = lambda self, k: getattr(self, self.kindOf(k))(k)


def load_distiller(src: Path):
    sys.meta_path.insert(0, _StandIns())
    _torch_shims()
    sys.path.insert(0, str(src))
    import distiller
    import distiller.quantization as dq
    import distiller.summary_graph as sg

    def tensor_desc(self, n):
        desc = OrderedDict(id=n.debugName())
        try:
            sizes = n.type().sizes()
        except RuntimeError:
            sizes = None
        desc["shape"] = tuple(int(s) for s in sizes) if sizes is not None else (0,)
        return desc

    sg.SummaryGraph._SummaryGraph__tensor_desc = tensor_desc
    return distiller, dq


def _meta(num_bits, module=None):
    """Distiller's per-parameter record (``_ParamToQuant``): what a param_quantization_fn reads."""
    return types.SimpleNamespace(num_bits=num_bits, module=module or nn.Linear(1, 1), q_attr_name="weight")


def _dummy_optimizer():
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)


def _value_and_grad(fn, x, g):
    x = x.clone().requires_grad_()
    out = fn(x)
    out.backward(g)
    return out.detach(), x.grad.detach()


def weight_inputs(seed: int, std: float = 0.6) -> torch.Tensor:
    """Seeded weights plus the values where implementations part: 0, ±1, ±2 (beyond WRPN's clamp)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 40, generator=g) * std
    w.view(-1)[:6] = torch.tensor([0.0, 1.0, -1.0, 2.0, -2.0, 0.5])
    return w


def activation_inputs() -> torch.Tensor:
    """A fine grid over [−0.5, 1.5] plus 0.5 and 1 (exact rounding ties of 2^b − 1 steps)."""
    return torch.cat([torch.linspace(-0.5, 1.5, 401), torch.tensor([0.5, 1.0, 0.0])])


def tensor_cases(dq) -> dict:
    from distiller.quantization.clipped_linear import LearnedClippedLinearQuantization, dorefa_quantize_param
    from distiller.quantization.range_linear import FakeLinearQuantization, verify_quant_mode

    out: dict = {}
    w = weight_inputs(0)
    gw = torch.randn(w.shape, generator=torch.Generator().manual_seed(10))
    for bits in (1, 2, 3, 4, 8):
        v, g = _value_and_grad(lambda t: dorefa_quantize_param(t, _meta(bits)), w, gw)
        out[f"dorefa_w{bits}"] = {"w": w, "upstream": gw, "out": v, "grad": g}
    w1 = weight_inputs(1, std=1.0)  # unit Gaussian: a third of WRPN's weights saturate at ±1
    for bits in (2, 3, 4, 8):
        wrpn = dq.WRPNQuantizer(nn.Sequential(nn.Linear(2, 2)), _dummy_optimizer(), bits_weights=bits)
        v, g = _value_and_grad(lambda t: wrpn.param_quantization_fn(t, _meta(bits)), w1, gw)
        out[f"wrpn_w{bits}"] = {"w": w1, "upstream": gw, "out": v, "grad": g}
    x = activation_inputs()
    gx = torch.randn(x.shape, generator=torch.Generator().manual_seed(11))
    for bits in (2, 3, 4, 8):
        v, g = _value_and_grad(dq.ClippedLinearQuantization(bits, 1), x, gx)
        out[f"clip_a{bits}"] = {"x": x, "upstream": gx, "out": v, "grad": g}
        for alpha in (8.0, 1.3):
            pact = LearnedClippedLinearQuantization(bits, alpha)
            xs = x * alpha
            xr = xs.clone().requires_grad_()
            y = pact(xr)
            y.backward(gx)
            out[f"pact_a{bits}_alpha{alpha}"] = {"x": xs, "upstream": gx, "alpha": alpha, "out": y.detach(),
                                                 "grad": xr.grad, "grad_alpha": pact.clip_val.grad.detach()}
    for mode in ("SYMMETRIC", "SYMMETRIC_RESTRICTED", "ASYMMETRIC_UNSIGNED", "ASYMMETRIC_SIGNED"):
        for per_channel in (False, True):
            q = dq.QuantAwareTrainRangeLinearQuantizer(nn.Sequential(nn.Linear(2, 2)), _dummy_optimizer(),
                                                       bits_weights=4, mode=mode, per_channel_wts=per_channel)
            for bits in (2, 4, 8):
                lin = nn.Linear(40, 6)
                v, g = _value_and_grad(lambda t: q.param_quantization_fn(t, _meta(bits, lin)), w, gw)
                out[f"qatw_{mode}_pc{int(per_channel)}_w{bits}"] = {
                    "w": w, "upstream": gw, "out": v, "grad": g,
                    "scale": lin.weight_scale.detach().clone(), "zero_point": lin.weight_zero_point.detach().clone()}
        # EMA activations: five training batches, then evaluation; and a module evaluated before any training
        gen = torch.Generator().manual_seed(12)
        seq = [torch.randn(64, generator=gen) * (1 + i) + 0.3 * i for i in range(5)]
        probe = torch.randn(64, generator=gen) * 3
        fq = FakeLinearQuantization(4, verify_quant_mode(mode), 0.9)
        fq.train()
        rec = {"batches": seq, "probe": probe, "out": [], "tracked_min": [], "tracked_max": [], "scale": [],
               "zero_point": []}
        for xb in seq:
            rec["out"].append(fq(xb).detach())
            for k in ("tracked_min", "tracked_max", "scale", "zero_point"):
                rec[k].append(getattr(fq, k).detach().clone())
        fq.eval()
        rec["eval_out"] = fq(probe).detach()
        fresh = FakeLinearQuantization(4, verify_quant_mode(mode), 0.9).eval()
        rec["untrained_eval_out"] = fresh(probe).detach()
        out[f"ema_{mode}"] = rec
    return out


# -- training trajectories through Distiller's quantizer classes ----------------------------------------------
TRAJECTORIES = {
    # name: (Distiller class, net, constructor kwargs)
    "dorefa_w3a3": ("DorefaQuantizer", "conv", {"bits_weights": 3, "bits_activations": 3}),
    "dorefa_w1a2": ("DorefaQuantizer", "conv", {"bits_weights": 1, "bits_activations": 2}),
    "dorefa_conv1d_w3a3": ("DorefaQuantizer", "conv1d", {"bits_weights": 3, "bits_activations": 3}),
    "pact_w4a4": ("PACTQuantizer", "conv", {"bits_weights": 4, "bits_activations": 4}),
    "pact_w2a2_alpha2_decay": ("PACTQuantizer", "conv", {"bits_weights": 2, "bits_activations": 2,
                                                         "act_clip_init_val": 2.0, "act_clip_decay": 1e-3}),
    "wrpn_w3a3": ("WRPNQuantizer", "conv", {"bits_weights": 3, "bits_activations": 3}),
    "wrpn_w2a4": ("WRPNQuantizer", "conv", {"bits_weights": 2, "bits_activations": 4}),
    # Distiller's default bits_bias = 32 fake-quantizes the bias on a 2^32-step grid (quantzoo keeps it FP)
    "qat_w4a4_sym": ("QuantAwareTrainRangeLinearQuantizer", "conv",
                     {"bits_weights": 4, "bits_activations": 4, "mode": "SYMMETRIC"}),
    "qat_w8a8_asym_signed_pc": ("QuantAwareTrainRangeLinearQuantizer", "conv",
                                {"bits_weights": 8, "bits_activations": 8, "bits_bias": None,
                                 "mode": "ASYMMETRIC_SIGNED", "per_channel_wts": True, "ema_decay": 0.99}),
    "qat_conv1d_w4a4": ("QuantAwareTrainRangeLinearQuantizer", "conv1d",
                        {"bits_weights": 4, "bits_activations": 4, "bits_bias": None,
                         "mode": "ASYMMETRIC_UNSIGNED"}),
}
LR, MOMENTUM, WEIGHT_DECAY, STEPS = 0.05, 0.9, 1e-4, 6


def _net(kind: str):
    return nets.conv_net(0) if kind == "conv" else nets.conv1d_net(0)


def _data(kind: str):
    if kind == "conv":
        return nets.batches(STEPS + 1)
    return nets.batches(STEPS + 1, shape=(1, 12), classes=4)


def _float_state(model: nn.Module) -> dict:
    """The trained float tensors under the plain module names: Distiller keeps a trained weight as the parameter
    ``float_weight`` and its quantized value in the buffer ``weight`` (stored here as ``weight_q``)."""
    state = model.state_dict()
    out = {}
    for k, v in state.items():
        head, _, leaf = k.rpartition(".")
        if leaf.startswith("float_"):  # float_weight, float_bias (bits_bias 32)
            out[f"{head}.{leaf[len('float_'):]}"] = v.detach().clone()
        elif f"{head}.float_{leaf}" in state:
            out[k + "_q"] = v.detach().clone()
        else:
            out[k] = v.detach().clone()
    return out


def trajectory(dq, cls_name: str, kind: str, kwargs: dict) -> dict:
    model = _net(kind)
    init = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    q = getattr(dq, cls_name)(model, opt, **kwargs)
    q.prepare_model()
    q.quantize_params()
    data = _data(kind)
    model.train()
    losses, grads0 = [], {}
    for step, (x, y) in enumerate(data[:STEPS]):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            grads0 = {n.replace(".float_", "."): p.grad.detach().clone()
                      for n, p in model.named_parameters() if p.grad is not None}
        opt.step()
        q.quantize_params()
        losses.append(loss.detach())
    model.eval()
    with torch.no_grad():
        eval_out = model(data[STEPS][0])
    quantized = sorted(p.module_name for p in q.params_to_quantize if p.q_attr_name == "weight")
    return {"init": init, "losses": torch.stack(losses), "grads_step0": grads0, "final": _float_state(model),
            "eval_out": eval_out, "quantized_weights": quantized}


# -- post-training quantization -----------------------------------------------------------------------------------
PTQ_MODES = ("SYMMETRIC", "SYMMETRIC_RESTRICTED", "ASYMMETRIC_UNSIGNED", "ASYMMETRIC_SIGNED")
PTQ_CLIPS = ("NONE", "AVG", "N_STD", "GAUSS", "LAPLACE")
PTQ_MODELS = {  # name: PostTrainLinearQuantizer kwargs (bits_activations, bits_parameters, mode, per_channel_wts, clip)
    "w8a8_asym_pc": {"bits_activations": 8, "bits_parameters": 8, "per_channel_wts": True,
                     "mode": {"activations": "ASYMMETRIC_UNSIGNED", "weights": "SYMMETRIC"}},
    "w8a8_sym": {"bits_activations": 8, "bits_parameters": 8, "mode": "SYMMETRIC"},
    "w4a4_asym_avg": {"bits_activations": 4, "bits_parameters": 4, "mode": "ASYMMETRIC_UNSIGNED", "clip_acts": "AVG"},
}


def _eval_model():
    """The conv net after a few training steps (BN statistics away from their initial 0/1), in eval mode."""
    model = nets.conv_net(0)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for x, y in nets.batches(5, seed=3):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _plain(stats):
    """Distiller's stats OrderedDicts as plain dicts of floats (inputs keyed by int)."""
    out = {}
    for layer, rec in stats.items():
        out[layer] = {"inputs": {int(i): {k: (v if k == "shape" else float(v)) for k, v in r.items()}
                                 for i, r in rec.get("inputs", {}).items()},
                      "output": {k: (v if k == "shape" else float(v)) for k, v in rec["output"].items()}}
    return out


def ptq_cases(distiller, dq) -> tuple[dict, dict]:
    from distiller.data_loggers.collector import collect_quant_stats
    from distiller.quantization.range_linear import (ClipMode, LinearQuantMode, _get_quant_params_from_stats_dict,
                                                     _get_quant_params_from_tensor)

    model = _eval_model()
    calib = [x for x, _ in nets.batches(3, seed=4)]

    def run(model):
        with torch.no_grad():
            for x in calib:
                model(x)

    stats = _plain(collect_quant_stats(copy.deepcopy(model), run))
    tensors = {"state": copy.deepcopy(model.state_dict()), "calib": calib, "probe": nets.batches(1, seed=5)[0][0]}
    # scale / zero point of every mode x clip (x half range) from one recorded stats entry
    qparams = {}
    rec = stats["conv2"]["output"]
    for mode in PTQ_MODES:
        for clip in PTQ_CLIPS:
            for half in (False, True):
                for bits in (4, 8):
                    s, zp = _get_quant_params_from_stats_dict(rec, bits, LinearQuantMode[mode], ClipMode[clip],
                                                              num_stds=2.0, half_range=half)
                    qparams[f"{mode}_{clip}_half{int(half)}_b{bits}"] = [float(s), float(zp)]
    # weights (linear_quantize_clamp in the parameter-layer wrapper, then dequantized)
    weights = {}
    w = model.conv2.weight.detach()
    for mode in PTQ_MODES:
        for per_channel in (False, True):
            for bits in (4, 8):
                s, zp = _get_quant_params_from_tensor(w, bits, LinearQuantMode[mode], per_channel=per_channel)
                s, zp = torch.as_tensor(s), torch.as_tensor(zp)
                qmin, qmax = dq.get_quantized_range(bits, mode != "ASYMMETRIC_UNSIGNED",
                                                    mode == "SYMMETRIC_RESTRICTED")
                q = dq.linear_quantize_clamp(w, s, zp, qmin, qmax)
                weights[f"{mode}_pc{int(per_channel)}_b{bits}"] = dq.linear_dequantize(q, s, zp)
    tensors["weights"] = weights
    # whole models: stats-based PTQ with BN folding and ReLU fusion
    outputs = {}
    for name, kw in PTQ_MODELS.items():
        m = copy.deepcopy(model)
        q = dq.PostTrainLinearQuantizer(m, model_activation_stats=copy.deepcopy(stats), **kw)
        q.prepare_model(tensors["probe"][:1].clone())
        m.eval()
        with torch.no_grad():  # (a clone: Distiller attaches quant_metadata to the tensors it quantizes)
            outputs[name] = {"out": m(tensors["probe"].clone()).clone(), "fc_output_scale": m.fc.output_scale.detach().clone(),
                             "fc_output_zero_point": m.fc.output_zero_point.detach().clone(),
                             "wrappers": {n: type(c).__name__ for n, c in m.named_children()}}
    tensors["models"] = outputs
    return {"stats": stats, "qparams": qparams}, tensors


# -- schedule files ---------------------------------------------------------------------------------------------
SCHEDULES = {
    "pact_overrides": """
quantizers:
  pact_quantizer:
    class: PACTQuantizer
    act_clip_init_val: 3.0
    bits_activations: 4
    bits_weights: 3
    overrides:
      conv1: {bits_weights: null, bits_activations: null}
      'relu.*':
        bits_activations: 2
      'conv.*':
        bits_weights: 5
      fc:
        bits_weights: 8
policies:
  - {quantizer: {instance_name: pact_quantizer}, starting_epoch: 0, ending_epoch: 20, frequency: 1}
  - lr_scheduler:
      instance_name: training_lr
    starting_epoch: 0
    ending_epoch: 20
    frequency: 1
lr_schedulers:
  training_lr:
    class: MultiStepLR
    milestones: [10]
    gamma: 0.1
""",
    "dorefa_first_match": """
quantizers:
  dorefa_quantizer:
    class: DorefaQuantizer
    bits_activations: 8
    bits_weights: 4
    overrides:
      'conv2|fc':
        bits_weights: 2
      conv2:
        bits_weights: 6
      'relu2':
        bits_activations: null
policies:
  - quantizer:
      instance_name: dorefa_quantizer
    starting_epoch: 0
    ending_epoch: 20
    frequency: 1
""",
    "qat_late_start": """
quantizers:
  qat:
    class: QuantAwareTrainRangeLinearQuantizer
    bits_activations: 8
    bits_weights: 8
    mode: ASYMMETRIC_UNSIGNED
policies:
  - quantizer:
      instance_name: qat
    starting_epoch: 1
    ending_epoch: 3
    frequency: 1
""",
    "dorefa_every_other_epoch": """
quantizers:
  dorefa_quantizer:
    class: DorefaQuantizer
    bits_activations: 4
    bits_weights: 4
policies:
  - quantizer:
      instance_name: dorefa_quantizer
    starting_epoch: 0
    ending_epoch: 4
    frequency: 2
""",
}
# Distiller's range-linear QAT default bits_bias = 32 quantizes (and, outside the policy, freezes) the bias too
SCHEDULES["qat_late_start_fp_bias"] = SCHEDULES["qat_late_start"].replace("    mode:", "    bits_bias: null\n    mode:")


SCHEDULE_EPOCHS = 3


def schedule_case(distiller, text: str) -> dict:
    """What a schedule builds (weight bits per module, activation module types and bits), then three epochs of
    three minibatches through Distiller's CompressionScheduler: the losses and trained state, or the error."""
    model = nets.conv_net(0)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    path = HERE / "_schedule_tmp.yaml"
    path.write_text(text)
    try:
        scheduler = distiller.file_config(model, opt, str(path))
    finally:
        path.unlink()
    quantizer = next(iter(scheduler.sched_metadata)).quantizer
    built = {
        "weight_bits": {p.module_name: p.num_bits for p in quantizer.params_to_quantize if p.q_attr_name == "weight"},
        "bias_bits": {p.module_name: p.num_bits for p in quantizer.params_to_quantize if p.q_attr_name == "bias"},
        "modules": {n: type(m).__name__ for n, m in model.named_children()},
        "activation_bits": {n: getattr(m, "num_bits", getattr(getattr(m, "fake_q", None), "num_bits", None))
                            for n, m in model.named_children()},
        "epochs": sorted(scheduler.policies),
        "yaml": text,
    }
    data = nets.batches(3)
    error, losses = None, []
    model.train()
    try:
        for epoch in range(SCHEDULE_EPOCHS):
            scheduler.on_epoch_begin(epoch, opt)
            for i, (x, y) in enumerate(data):
                scheduler.on_minibatch_begin(epoch, i, len(data), opt)
                loss = F.cross_entropy(model(x), y)
                loss = scheduler.before_backward_pass(epoch, i, len(data), loss, opt)
                opt.zero_grad()
                loss.backward()
                opt.step()
                scheduler.on_minibatch_end(epoch, i, len(data), opt)
                losses.append(float(loss))
            scheduler.on_epoch_end(epoch, opt)
    except RuntimeError as e:
        error = f"epoch {epoch}, minibatch {i}: {str(e).splitlines()[0]}"
    built["error"] = error
    built["losses"] = losses
    tensors = {}
    if error is None:
        model.eval()
        with torch.no_grad():
            tensors = {"final": _float_state(model), "eval_out": model(nets.batches(1, seed=2)[0][0])}
    return built, tensors


def _plain_tensors(obj):
    """Copies of every tensor without attributes Distiller attached (loadable with weights_only=True)."""
    if isinstance(obj, torch.Tensor):
        return torch.empty_like(obj).copy_(obj.detach())
    if isinstance(obj, dict):
        return {k: _plain_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain_tensors(v) for v in obj]
    return obj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--distiller", type=Path, required=True, help="a checkout of IntelLabs/distiller")
    args = ap.parse_args()
    distiller, dq = load_distiller(args.distiller.resolve())
    os.chdir(tempfile.mkdtemp())  # PostTrainLinearQuantizer writes its YAML reports into the working directory
    try:
        commit = subprocess.run(["git", "-C", str(args.distiller), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    refs = {"tensors": tensor_cases(dq), "trajectories": {}}
    for name, (cls_name, kind, kwargs) in TRAJECTORIES.items():
        refs["trajectories"][name] = trajectory(dq, cls_name, kind, kwargs)
    schedules = {k: schedule_case(distiller, v) for k, v in SCHEDULES.items()}
    ptq_meta, refs["ptq"] = ptq_cases(distiller, dq)
    refs["schedules"] = {k: t for k, (_, t) in schedules.items()}
    meta = {"distiller_commit": commit, "torch": torch.__version__,
            "training": {"lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY, "steps": STEPS,
                         "schedule_epochs": SCHEDULE_EPOCHS},
            "trajectories": {k: {"class": c, "net": n, "kwargs": kw} for k, (c, n, kw) in TRAJECTORIES.items()},
            "schedules": {k: b for k, (b, _) in schedules.items()}, "ptq": ptq_meta,
            "ptq_models": PTQ_MODELS}
    torch.save(_plain_tensors(refs), HERE / "distiller_refs.pt")
    (HERE / "distiller_refs.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    print(f"wrote {HERE / 'distiller_refs.pt'} and distiller_refs.json (Distiller {commit[:7]})")


if __name__ == "__main__":
    main()
