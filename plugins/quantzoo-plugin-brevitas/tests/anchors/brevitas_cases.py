"""The anchor cases: one piece of code run twice, on the real Brevitas (``make_brevitas_refs.py``, which writes
the fixtures) and on ``quantzoo_plugin_brevitas`` (``test_brevitas_anchor.py``, which compares with them).

Both libraries are reached through a small adapter ``lib`` (built in the generator and in the test):

* ``lib.nn``: the layer classes (``QuantLinear``, ``QuantConv1d``, ``QuantConv2d``, ``QuantReLU``,
  ``QuantIdentity``, ``QuantEltwiseAdd``);
* ``lib.preset(name, **settings)``: a quantizer preset by name with settings in this plugin's vocabulary
  (``restrict_scaling_type="power_of_two"``, ...), translated to Brevitas' enums by the Brevitas adapter;
* ``lib.quant_weight(layer) -> (value, scale)``, ``lib.act_quant(module, role)`` (role ``act``, ``input`` or
  ``output``) with ``lib.act_param(q)`` (the learned scale parameter) and ``lib.act_scale(q)`` (eval scale);
* ``lib.calibration_mode``, ``lib.bias_correction_mode``, ``lib.merge_bn(layer, bn)``,
  ``lib.export_qcdq(model, x) -> bytes``.

This file imports only torch (and onnx in :func:`qcdq_signature`), so it runs in either environment. Every
case takes the data dict the generator drew (stored in the fixture) and returns a dict of tensors.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------
LR, WD = 0.05, 0.1  # the manual SGD step of the quantizer cases (weight decay exposes Brevitas' 0·value grad)


def _randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


# ---------------------------------------------------------------------------------------------------------
# weight quantizers: value, scale, gradients, the weight after the call (binary clips it in place)
# ---------------------------------------------------------------------------------------------------------
WEIGHT_CASES = {
    "w_tensor_float": ("linear", "Int8WeightPerTensorFloat", {}),
    "w_tensor_float_4b": ("linear", "Int8WeightPerTensorFloat", {"bit_width": 4}),
    "w_tensor_float_2b": ("conv2d", "Int8WeightPerTensorFloat", {"bit_width": 2}),
    "w_tensor_float_po2": ("linear", "Int8WeightPerTensorFloat", {"restrict_scaling_type": "power_of_two"}),
    "w_tensor_float_po2_3b": ("conv1d", "Int8WeightPerTensorFloat",
                              {"bit_width": 3, "restrict_scaling_type": "power_of_two"}),
    "w_channel_float": ("conv2d", "Int8WeightPerChannelFloat", {}),
    "w_channel_float_4b": ("linear", "Int8WeightPerChannelFloat", {"bit_width": 4}),
    "w_channel_float_2b": ("conv1d", "Int8WeightPerChannelFloat", {"bit_width": 2}),
    "w_channel_float_po2": ("conv2d", "Int8WeightPerChannelFloat", {"restrict_scaling_type": "power_of_two"}),
    "w_fixed": ("linear", "Int8WeightPerTensorFixedPoint", {}),
    "w_fixed_4b": ("conv2d", "Int8WeightPerTensorFixedPoint", {"bit_width": 4}),
    "w_fixed_as_fp": ("linear", "Int8WeightPerTensorFixedPoint", {"restrict_scaling_type": "fp"}),
    "w_binary": ("linear", "SignedBinaryWeightPerTensorConst", {}),
    "w_ternary": ("linear", "SignedTernaryWeightPerTensorConst", {}),
    "w_ternary_conv": ("conv2d", "SignedTernaryWeightPerTensorConst", {}),
}
_SHAPES = {  # weight, input
    "linear": ((6, 16), (5, 16)),
    "conv2d": ((4, 2, 3, 3), (2, 2, 5, 5)),
    "conv1d": ((3, 2, 3), (2, 2, 7)),
}


def weight_data(g, name):
    kind, preset, _ = WEIGHT_CASES[name]
    w_shape, x_shape = _SHAPES[kind]
    if "Const" in preset:
        w = _randn(g, *w_shape, scale=0.1)
        flat = w.view(-1)
        flat[:6] = torch.tensor([0.05, -0.05, 0.15, 0.0, 0.25, -0.1])  # ties of round(w/0.1) and the clip
    else:
        w = _randn(g, *w_shape, scale=0.3)
    layer = _make_layer(_FloatPresets.nn, kind, None)
    y_shape = layer(torch.zeros(x_shape)).shape
    return {"weight": w, "bias": _randn(g, w_shape[0], scale=0.1), "x": _randn(g, *x_shape),
            "gy": _randn(g, *y_shape)}


def _make_layer(ns, kind, wq, **kw):
    w_shape, _ = _SHAPES[kind]
    if kind == "linear":
        return ns.QuantLinear(w_shape[1], w_shape[0], bias=True, weight_quant=wq, **kw)
    cls = ns.QuantConv2d if kind == "conv2d" else ns.QuantConv1d
    return cls(w_shape[1], w_shape[0], w_shape[2], bias=True, weight_quant=wq, **kw)


def run_weight(lib, d, name):
    kind, preset, over = WEIGHT_CASES[name]
    layer = _make_layer(lib.nn, kind, lib.preset(preset, **over))
    with torch.no_grad():
        layer.weight.copy_(d["weight"])
        layer.bias.copy_(d["bias"])
    layer.train()
    x = d["x"].clone().requires_grad_(True)
    y = layer(x)
    (y * d["gy"]).sum().backward()
    value, scale = lib.quant_weight(layer)
    return {"y": y.detach(), "qw": value.detach(), "scale": scale.detach().reshape(-1), "gx": x.grad,
            "gw": layer.weight.grad, "gb": layer.bias.grad, "w_after": layer.weight.detach().clone()}


# ---------------------------------------------------------------------------------------------------------
# activation quantizers: statistics phase, the switch to a learned scale, learning, eval
# ---------------------------------------------------------------------------------------------------------
ACT_STEPS, ACT_COLLECT = 6, 3
ACT_CASES = {
    "a_int8": ("identity", "Int8ActPerTensorFloat", {}),
    "a_int4": ("identity", "Int8ActPerTensorFloat", {"bit_width": 4}),
    "a_int2": ("identity", "Int8ActPerTensorFloat", {"bit_width": 2}),
    "a_int8_q95": ("identity", "Int8ActPerTensorFloat", {"high_percentile_q": 95.0}),
    "a_int8_cumavg": ("identity", "Int8ActPerTensorFloat", {"scaling_stats_momentum": None}),
    "a_int8_max": ("identity", "Int8ActPerTensorFloat", {"scaling_stats_op": "max"}),
    "a_int8_po2": ("identity", "Int8ActPerTensorFloat", {"restrict_scaling_type": "power_of_two"}),
    "a_uint8": ("relu", "Uint8ActPerTensorFloat", {}),
    "a_uint4": ("relu", "Uint8ActPerTensorFloat", {"bit_width": 4}),
    "a_uint8_po2": ("relu", "Uint8ActPerTensorFloat", {"restrict_scaling_type": "power_of_two"}),
    "a_fixed": ("identity", "Int8ActPerTensorFixedPoint", {}),
    "a_fixed_4b": ("identity", "Int8ActPerTensorFixedPoint", {"bit_width": 4}),
    "a_fixed_as_fp": ("identity", "Int8ActPerTensorFixedPoint", {"restrict_scaling_type": "fp"}),
    "a_ufixed": ("relu", "Uint8ActPerTensorFixedPoint", {}),
    "a_ufixed_3b": ("relu", "Uint8ActPerTensorFixedPoint", {"bit_width": 3}),
}


def act_data(g, name):
    # Growing batches: after the statistics phase the learned scale clips the later ones, some values landing
    # within half a step outside the range (where round-then-clamp still passes the gradient).
    return {"x": torch.stack([_randn(g, 2, 20, scale=0.5 + 0.4 * t) for t in range(ACT_STEPS)]),
            "x_eval": _randn(g, 2, 20, scale=1.5)}


def _upstream_grad(t, shape):
    """A fixed upstream gradient for training step ``t`` (a formula, so the fixture need not store it)."""
    n = torch.arange(torch.Size(shape).numel(), dtype=torch.float32)
    return torch.cos(0.7 * n + t).reshape(shape)


def _sgd_(params, lr=LR, wd=WD):
    """One manual SGD step with weight decay on the parameters that have a gradient (Brevitas' statistics
    phase gives the scale parameter a zero gradient, not None, so weight decay moves it)."""
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= lr * (p.grad + wd * p)


def _nan():
    return torch.tensor(float("nan"))


def run_act(lib, d, name):
    kind, preset, over = ACT_CASES[name]
    cls = lib.nn.QuantReLU if kind == "relu" else lib.nn.QuantIdentity
    layer = cls(act_quant=lib.preset(preset, collect_stats_steps=ACT_COLLECT, **over), return_quant_tensor=True)
    q = lib.act_quant(layer, "act")
    param = lib.act_param(q)
    steps = {k: [] for k in ("value", "scale", "gx", "gparam", "param")}
    layer.eval()
    with torch.no_grad():
        qt = layer(d["x_eval"])
    out = {"pre_value": qt.value, "pre_scale": qt.scale.reshape(())}
    layer.train()
    for t in range(ACT_STEPS):
        x = d["x"][t].clone().requires_grad_(True)
        param.grad = None
        qt = layer(x)
        (qt.value * _upstream_grad(t, x.shape)).sum().backward()
        steps["value"].append(qt.value.detach())
        steps["scale"].append(qt.scale.detach().reshape(()))
        steps["gx"].append(x.grad)
        steps["gparam"].append(param.grad.clone().reshape(()) if param.grad is not None else _nan())
        _sgd_([param])
        steps["param"].append(param.detach().clone().reshape(()))
    layer.eval()
    with torch.no_grad():
        qt = layer(d["x_eval"])
    out.update({"eval_value": qt.value, "eval_scale": qt.scale.reshape(())})
    out.update({k: torch.stack(v) for k, v in steps.items()})  # one row per training step
    return out


# ---------------------------------------------------------------------------------------------------------
# quant layers with input/output quantizers and QuantTensor outputs, a few training steps
# ---------------------------------------------------------------------------------------------------------
LAYER_STEPS = 4
LAYER_CASES = ("conv_io", "linear_fixed_io", "conv1d_in", "eltwise")


def _build_layer_case(lib, name):
    p = lib.preset
    if name == "conv_io":
        m = lib.nn.QuantConv2d(2, 3, 3, padding=1, bias=True,
                               weight_quant=p("Int8WeightPerChannelFloat", bit_width=4),
                               input_quant=p("Int8ActPerTensorFloat", collect_stats_steps=2),
                               output_quant=p("Int8ActPerTensorFloat", bit_width=6, collect_stats_steps=2),
                               return_quant_tensor=True)
        return m, ("input", "output"), [(2, 2, 5, 5)]
    if name == "linear_fixed_io":
        m = lib.nn.QuantLinear(8, 4, bias=True, weight_quant=p("Int8WeightPerTensorFixedPoint"),
                               input_quant=p("Int8ActPerTensorFixedPoint", collect_stats_steps=2),
                               output_quant=p("Int8ActPerTensorFloat", collect_stats_steps=2),
                               return_quant_tensor=True)
        return m, ("input", "output"), [(6, 8)]
    if name == "conv1d_in":
        m = lib.nn.QuantConv1d(2, 3, 3, bias=True, weight_quant=p("Int8WeightPerTensorFloat"),
                               input_quant=p("Uint8ActPerTensorFloat", collect_stats_steps=2))
        return m, ("input",), [(3, 2, 9)]
    if name == "eltwise":
        m = lib.nn.QuantEltwiseAdd(input_quant=p("Int8ActPerTensorFloat", collect_stats_steps=3),
                                   output_quant=p("Int8ActPerTensorFloat", collect_stats_steps=3),
                                   return_quant_tensor=True)
        return m, ("input", "output"), [(4, 10), (4, 10)]
    raise KeyError(name)


def layer_data(g, name):
    m, _, in_shapes = _build_layer_case(_FloatPresets, name)
    d = {f"x{i}": torch.stack([_randn(g, *s, scale=1 + 0.3 * t) for t in range(LAYER_STEPS)])
         for i, s in enumerate(in_shapes)}
    d["x_eval"] = [_randn(g, *s) for s in in_shapes]
    d.update({k: _randn(g, *v.shape, scale=0.3) for k, v in m.named_parameters()})
    with torch.no_grad():
        y = m(*[torch.zeros(s) for s in in_shapes])
    d["gy"] = _randn(g, LAYER_STEPS, *y.shape)
    return d


class _FloatPresets:  # float layers standing in for the quant ones, to draw shapes and initial parameters
    class nn:  # noqa: N801
        QuantConv2d = staticmethod(lambda *a, weight_quant=None, input_quant=None, output_quant=None,
                                   return_quant_tensor=False, **kw: nn.Conv2d(*a, **kw))
        QuantConv1d = staticmethod(lambda *a, weight_quant=None, input_quant=None, output_quant=None,
                                   return_quant_tensor=False, **kw: nn.Conv1d(*a, **kw))
        QuantLinear = staticmethod(lambda *a, weight_quant=None, input_quant=None, output_quant=None,
                                   return_quant_tensor=False, **kw: nn.Linear(*a, **kw))

        class QuantEltwiseAdd(nn.Module):
            def __init__(self, **kw):
                super().__init__()

            def forward(self, a, b):
                return a + b

    preset = staticmethod(lambda name, **kw: None)


def _value(y):
    return y.value if hasattr(y, "value") and not isinstance(y, torch.Tensor) else y


def run_layer(lib, d, name):
    m, roles, in_shapes = _build_layer_case(lib, name)
    with torch.no_grad():
        for k, p in m.named_parameters(recurse=False):
            p.copy_(d[k])
    params = [p for _, p in m.named_parameters(recurse=False)] + [lib.act_param(lib.act_quant(m, r)) for r in roles]
    steps: dict[str, list] = {}

    def keep(key, t):
        steps.setdefault(key, []).append(t)

    m.train()
    for t in range(LAYER_STEPS):
        xs = [d[f"x{i}"][t].clone().requires_grad_(True) for i in range(len(in_shapes))]
        for p in params:
            p.grad = None
        y = m(*xs)
        (_value(y) * d["gy"][t]).sum().backward()
        keep("y", _value(y).detach())
        if not isinstance(y, torch.Tensor):
            keep("scale", y.scale.detach().reshape(()))
        for i, x in enumerate(xs):
            keep(f"gx{i}", x.grad)
        for j, p in enumerate(params):
            keep(f"gp{j}", p.grad.clone() if p.grad is not None else torch.full_like(p, float("nan")))
        _sgd_(params)
    m.eval()
    with torch.no_grad():
        y = m(*d["x_eval"])
    out = {k: torch.stack(v) for k, v in steps.items()}  # one row per training step
    out["eval_y"] = _value(y)
    for j, p in enumerate(params):
        out[f"p{j}"] = p.detach().clone()
    return out


# ---------------------------------------------------------------------------------------------------------
# calibration_mode and bias_correction_mode on a small hand-built model
# ---------------------------------------------------------------------------------------------------------
CALIB_BATCHES = 5


def small_data(g):
    return {"conv_w": _randn(g, 4, 1, 3, 3, scale=0.5), "lin_w": _randn(g, 5, 144, scale=0.1),
            "lin_b": _randn(g, 5, scale=0.1), "calib": _randn(g, CALIB_BATCHES, 3, 1, 6, 6),
            "x_eval": _randn(g, 8, 1, 6, 6)}


def small_model(lib, d, collect_stats_steps):
    a = lib.preset("Int8ActPerTensorFloat", collect_stats_steps=collect_stats_steps)
    u = lib.preset("Uint8ActPerTensorFloat", bit_width=4, collect_stats_steps=collect_stats_steps)
    m = nn.Sequential(
        lib.nn.QuantIdentity(act_quant=a),
        lib.nn.QuantConv2d(1, 4, 3, padding=1, bias=False, weight_quant=lib.preset("Int8WeightPerChannelFloat",
                                                                                   bit_width=4)),
        lib.nn.QuantReLU(act_quant=u),
        nn.Flatten(),
        lib.nn.QuantLinear(144, 5, bias=True, weight_quant=lib.preset("Int8WeightPerTensorFloat"),
                           output_quant=a),
    )
    with torch.no_grad():
        m[1].weight.copy_(d["conv_w"])
        m[4].weight.copy_(d["lin_w"])
        m[4].bias.copy_(d["lin_b"])
    return m


def _small_scales(lib, m):
    return torch.stack([lib.act_scale(lib.act_quant(m[0], "act")), lib.act_scale(lib.act_quant(m[2], "act")),
                        lib.act_scale(lib.act_quant(m[4], "output"))]).detach().reshape(-1)


def run_calibration(lib, d, collect_stats_steps, batches=CALIB_BATCHES, bias_correction=False):
    m = small_model(lib, d, collect_stats_steps).eval()
    out = {}
    with lib.calibration_mode(m), torch.no_grad():
        for i in range(batches):
            out[f"calib_y{i}"] = _value(m(d["calib"][i]))
    out["scales"] = _small_scales(lib, m)
    with torch.no_grad():
        out["eval_y"] = _value(m(d["x_eval"]))
    if bias_correction:
        with lib.bias_correction_mode(m), torch.no_grad():
            for i in range(batches):
                out[f"bc_y{i}"] = _value(m(d["calib"][i]))
        out["conv_bias"] = m[1].bias.detach().clone()
        out["lin_bias"] = m[4].bias.detach().clone()
        with torch.no_grad():
            out["bc_eval_y"] = _value(m(d["x_eval"]))
    # train mode after calibration: the scales are learned parameters now (no more statistics)
    m.train()
    out["train_y"] = _value(m(d["x_eval"])).detach()
    return out


# ---------------------------------------------------------------------------------------------------------
# the plugin's methods: brevitas-ptq and brevitas-qat, mirrored layer by layer in the other library
# ---------------------------------------------------------------------------------------------------------
def float_cnn() -> nn.Sequential:
    """The float model both flows start from (1x8x8 input, 10 classes). Its layers exercise the three input
    kinds of the plugin's layer swap: the input (signed), a ReLU through max-pool (already quantized) and a
    ReLU through an average pool (unsigned)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(32, 10),
    )


COMPUTE_IDX, BN_IDX, RELU_IDX = (0, 4, 9), (1, 5), (2, 6)


def flow_data(g):
    torch.manual_seed(0)  # only the float model's initialisation; everything is stored below
    m = float_cnn()
    with torch.no_grad():
        for i in BN_IDX:
            bn = m[i]
            bn.running_mean.copy_(_randn(g, bn.num_features, scale=0.2))
            bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=g))
            bn.weight.copy_(1 + _randn(g, bn.num_features, scale=0.2))
            bn.bias.copy_(_randn(g, bn.num_features, scale=0.2))
    return {"float_state": {k: v.clone() for k, v in m.state_dict().items()},
            "calib": _randn(g, 4, 8, 1, 8, 8), "x_eval": _randn(g, 16, 1, 8, 8),
            "train_x": _randn(g, 64, 1, 8, 8), "train_y": torch.randint(0, 10, (64,), generator=g)}


def load_float_cnn(d) -> nn.Sequential:
    m = float_cnn()
    m.load_state_dict(d["float_state"])
    return m


#: Defaults of the plugin's BrevitasConfig (quantizers.py), which the mirror reads.
CONFIG_DEFAULTS = {"weight_quant": "Int8WeightPerChannelFloat", "weight_bit_width": None,
                   "act_quant": "Int8ActPerTensorFloat", "unsigned_act_quant": "Uint8ActPerTensorFloat",
                   "act_bit_width": None, "restrict_scaling_type": None, "high_percentile_q": 99.999,
                   "first_layer": "same", "last_layer": "same"}


def mirror(lib, model: nn.Module, cfg: dict, qat: bool) -> nn.Module:
    """``model`` (a :func:`float_cnn`) quantized layer by layer as the plugin's ``quantize_model`` does (graph.py):
    the first conv gets the signed input quantizer, the second none (its input is a QuantReLU output through a
    max-pool), the Linear the unsigned one (through an average pool); ReLUs become QuantReLU; first/last
    layers follow ``first_layer``/``last_layer`` for the whole layer, as quantzoo's layer policy
    (docs/layer-policy.md): 'fp' leaves the layer float, 'int8' gives it Int8WeightPerChannelFloat and an
    8-bit input quantizer; in both cases the ReLU feeding that layer stays a float ReLU (ReLU 6 feeds only the
    Linear; ReLU 2 feeds the middle conv, which is always the method's)."""
    c = {**CONFIG_DEFAULTS, **cfg}  # (store_weights only says what the fixture keeps)
    merge = c.get("merge_bn", not qat)
    model = copy.deepcopy(model)
    if merge:
        for i in BN_IDX:
            lib.merge_bn(model[i - 1], model[i])
            model[i] = nn.Identity()
    restrict = c["restrict_scaling_type"]
    is_int = c["weight_quant"].startswith("Int")
    w_over = {} if c["weight_bit_width"] is None else {"bit_width": c["weight_bit_width"]}
    a_over = {"high_percentile_q": c["high_percentile_q"]}
    if c["act_bit_width"] is not None:
        a_over["bit_width"] = c["act_bit_width"]
    if qat:
        a_over["collect_stats_steps"] = c.get("collect_stats_steps", 300)
    if restrict is not None:
        a_over["restrict_scaling_type"] = restrict
        if is_int:
            w_over["restrict_scaling_type"] = restrict
    w = lib.preset(c["weight_quant"], **w_over)
    a = lib.preset(c["act_quant"], **a_over) if c["act_quant"] else None
    u = lib.preset(c["unsigned_act_quant"], **a_over) if c["act_quant"] else None
    w8 = lib.preset("Int8WeightPerChannelFloat", **({"restrict_scaling_type": restrict} if restrict else {}))

    def swap(i, inp, policy):
        mod = model[i]
        if policy == "fp":
            return mod
        wq = w8 if policy == "int8" else w
        if inp is not None and policy == "int8":
            inp = inp.let(bit_width=8)
        if isinstance(mod, nn.Linear):
            new = lib.nn.QuantLinear(mod.in_features, mod.out_features, bias=True, weight_quant=wq, input_quant=inp)
        else:
            new = lib.nn.QuantConv2d(mod.in_channels, mod.out_channels, mod.kernel_size, padding=mod.padding,
                                     bias=True, weight_quant=wq, input_quant=inp)
        with torch.no_grad():
            new.weight.copy_(mod.weight)
            new.bias.copy_(mod.bias)
        return new

    model[0] = swap(0, a, c["first_layer"])
    model[4] = swap(4, None, "same")
    model[9] = swap(9, u, c["last_layer"])
    float_relus = {6} if c["last_layer"] != "same" else set()
    if u is not None:
        for i in RELU_IDX:
            if i not in float_relus:
                model[i] = lib.nn.QuantReLU(act_quant=u)
    return model


def flow_state(lib, model, weights: bool = True) -> dict:
    """Weights (if ``weights``), biases, BN statistics and the activation scale parameters/eval scales of a flow
    model, under names that do not depend on the library."""
    out = {}
    for i in COMPUTE_IDX + BN_IDX:
        mod = model[i]
        for k in ("weight", "bias", "running_mean", "running_var") if weights else ("bias",):
            t = getattr(mod, k, None)
            if isinstance(t, torch.Tensor):
                out[f"{i}.{k}"] = t.detach().clone()
    for i, role in ((0, "input"), (2, "act"), (6, "act"), (9, "input")):
        q = lib.act_quant(model[i], role)
        if q is not None:
            out[f"{i}.{role}.value"] = lib.act_param(q).detach().clone().reshape(())
            out[f"{i}.{role}.scale"] = lib.act_scale(q).detach().clone().reshape(())
    return out


def calibrate_flow(lib, model, d, bias_correction: bool) -> None:
    """What ``brevitas-ptq`` does after the layer swap: eval mode, ``calibration_mode`` over the calibration
    batches, then ``bias_correction_mode`` over the same batches."""
    model.eval()
    with lib.calibration_mode(model), torch.no_grad():
        for x in d["calib"]:
            model(x)
    if bias_correction:
        with lib.bias_correction_mode(model), torch.no_grad():
            for x in d["calib"]:
                model(x)


def run_ptq_mirror(lib, d, cfg):
    model = mirror(lib, load_float_cnn(d).eval(), cfg, qat=False)
    calibrate_flow(lib, model, d, cfg.get("bias_correction", True))
    with torch.no_grad():
        y = model(d["x_eval"])
    return {"eval_y": y, **flow_state(lib, model, weights=cfg.get("store_weights", False))}, model


#: Training trajectories run in float64 (models, quantizers and data), in both libraries: a float32 summation
#: order that differs by one ulp (another thread count or CPU) flips a rounding somewhere within a few dozen
#: steps and the runs part; in float64 that takes a value within ~1e-16 of a rounding tie. Everything
#: evaluated in one pass (quantizers, layers, calibration, PTQ, export) is compared in float32, bit for bit.
TRAJECTORY_DTYPE = torch.float64


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def train_flow(model, d, steps, lr=0.05):
    """``steps`` SGD steps (momentum 0.9, weight decay 1e-4, fixed lr) over the 64 stored samples in batches of
    16, cross-entropy; returns the loss of every step. The inputs take the model's dtype."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    dtype = next(model.parameters()).dtype
    losses = []
    for step in range(steps):
        b = step % 4
        x, y = d["train_x"][16 * b:16 * b + 16].to(dtype), d["train_y"][16 * b:16 * b + 16]
        loss = F.cross_entropy(_value(model(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def run_qat_mirror(lib, d, cfg, steps):
    with default_dtype(TRAJECTORY_DTYPE):
        model = mirror(lib, load_float_cnn(d), cfg, qat=True)
        losses = train_flow(model, d, steps)
        model.eval()
        with torch.no_grad():
            y = model(d["x_eval"].to(TRAJECTORY_DTYPE))
        return {"losses": losses, "eval_y": y, **flow_state(lib, model)}


PTQ_CONFIGS = {
    "ptq_default": {"store_weights": True},
    "ptq_w4a4": {"weight_bit_width": 4, "act_bit_width": 4},
    "ptq_w2a2": {"weight_bit_width": 2, "act_bit_width": 2},
    "ptq_w8_float_act": {"act_quant": None},
    "ptq_per_tensor": {"weight_quant": "Int8WeightPerTensorFloat", "weight_bit_width": 6},
    "ptq_fixed_point": {"weight_quant": "Int8WeightPerTensorFixedPoint", "act_quant": "Int8ActPerTensorFixedPoint",
                        "unsigned_act_quant": "Uint8ActPerTensorFixedPoint"},
    "ptq_restrict_po2": {"restrict_scaling_type": "power_of_two", "weight_bit_width": 5, "act_bit_width": 5},
    "ptq_fixed_as_fp": {"weight_quant": "Int8WeightPerTensorFixedPoint", "act_quant": "Int8ActPerTensorFixedPoint",
                        "unsigned_act_quant": "Uint8ActPerTensorFixedPoint", "restrict_scaling_type": "fp"},
    "ptq_q99": {"high_percentile_q": 99.0, "act_bit_width": 6},
    "ptq_no_bias_correction": {"bias_correction": False, "weight_bit_width": 4, "act_bit_width": 4},
    "ptq_keep_bn": {"merge_bn": False, "weight_bit_width": 4, "store_weights": True},
    "ptq_first_last_int8": {"weight_bit_width": 3, "act_bit_width": 3, "first_layer": "int8", "last_layer": "int8"},
    "ptq_first_last_fp": {"weight_bit_width": 4, "act_bit_width": 4, "first_layer": "fp", "last_layer": "fp"},
}
#: the long trajectory (through the 300-step statistics phase) and short ones for every other setting
QAT_LONG_STEPS, QAT_SHORT_STEPS, QAT_SHORT_COLLECT = 310, 24, 8
QAT_CONFIGS = {
    "qat_default": ({}, QAT_LONG_STEPS),
    "qat_w4a4": ({"weight_bit_width": 4, "act_bit_width": 4, "collect_stats_steps": QAT_SHORT_COLLECT},
                 QAT_SHORT_STEPS),
    "qat_binary_a4": ({"weight_quant": "SignedBinaryWeightPerTensorConst", "act_bit_width": 4,
                       "collect_stats_steps": QAT_SHORT_COLLECT}, QAT_SHORT_STEPS),
    "qat_ternary_w_only": ({"weight_quant": "SignedTernaryWeightPerTensorConst", "act_quant": None},
                           QAT_SHORT_STEPS),
    "qat_fixed_point": ({"weight_quant": "Int8WeightPerTensorFixedPoint", "act_quant": "Int8ActPerTensorFixedPoint",
                         "unsigned_act_quant": "Uint8ActPerTensorFixedPoint",
                         "collect_stats_steps": QAT_SHORT_COLLECT}, QAT_SHORT_STEPS),
    "qat_restrict_po2": ({"restrict_scaling_type": "power_of_two", "weight_bit_width": 6, "act_bit_width": 6,
                          "collect_stats_steps": QAT_SHORT_COLLECT}, QAT_SHORT_STEPS),
    "qat_merge_bn_first_last_int8": ({"merge_bn": True, "weight_bit_width": 4, "act_bit_width": 4,
                                      "first_layer": "int8", "last_layer": "int8",
                                      "collect_stats_steps": QAT_SHORT_COLLECT}, QAT_SHORT_STEPS),
}


# ---------------------------------------------------------------------------------------------------------
# the hand-built Brevitas CNN trained through the statistics phase (the trajectory check)
# ---------------------------------------------------------------------------------------------------------
def layer_cnn(lib, d):
    p = lib.preset
    m = nn.Sequential(
        lib.nn.QuantIdentity(),
        lib.nn.QuantConv2d(1, 4, 3, padding=1, bias=True),
        lib.nn.QuantReLU(),
        nn.MaxPool2d(2),
        lib.nn.QuantConv2d(4, 8, 3, padding=1, bias=True, weight_quant=p("Int8WeightPerChannelFloat", bit_width=4)),
        lib.nn.QuantReLU(act_quant=p("Uint8ActPerTensorFloat", bit_width=4)),
        nn.Flatten(),
        lib.nn.QuantLinear(128, 10, bias=True),
    )
    with torch.no_grad():
        for k, v in d["layer_cnn_state"].items():
            i, name = k.split(".")
            getattr(m[int(i)], name).copy_(v)
    return m


def layer_cnn_data(g):
    return {"layer_cnn_state": {"1.weight": _randn(g, 4, 1, 3, 3, scale=0.4), "1.bias": _randn(g, 4, scale=0.1),
                                "4.weight": _randn(g, 8, 4, 3, 3, scale=0.2), "4.bias": _randn(g, 8, scale=0.1),
                                "7.weight": _randn(g, 10, 128, scale=0.1), "7.bias": _randn(g, 10, scale=0.1)}}


def run_layer_cnn(lib, d, steps=QAT_LONG_STEPS):
    with default_dtype(TRAJECTORY_DTYPE):
        m = layer_cnn(lib, d)
        losses = train_flow(m, d, steps)
        out = {"losses": losses}
        for i in (1, 4, 7):
            out[f"{i}.weight"] = m[i].weight.detach().clone()
            out[f"{i}.bias"] = m[i].bias.detach().clone()
        for i in (0, 2, 5):
            q = lib.act_quant(m[i], "act")
            out[f"{i}.value"] = lib.act_param(q).detach().clone().reshape(())
            out[f"{i}.scale"] = lib.act_scale(q).detach().clone().reshape(())
        m.eval()
        with torch.no_grad():
            out["eval_y"] = m(d["x_eval"].to(TRAJECTORY_DTYPE))
        return out


# ---------------------------------------------------------------------------------------------------------
# ONNX QCDQ: the quantization nodes of an exported graph
# ---------------------------------------------------------------------------------------------------------
_COMPUTE_OPS = {"Conv", "Gemm", "MatMul", "Relu", "MaxPool", "AveragePool", "BatchNormalization", "Add"}


def qcdq_signature(onnx_bytes: bytes) -> list[tuple]:
    """The graph's quantization and compute nodes in order: ``(op, scale, zp dtype, zp, axis)`` for Q/DQ,
    ``("Clip", lo, hi, dtype)`` and the bare op type for compute nodes (names, Constant/Reshape/Flatten nodes
    and the exporter's other choices left out)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    sig = []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale, zp = consts[n.input[1]], consts[n.input[2]]
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1) if scale.size > 1 else None
            sig.append((n.op_type, [round(float(v), 12) for v in scale.reshape(-1)], str(zp.dtype),
                        [int(v) for v in zp.reshape(-1)], axis))
        elif n.op_type == "Clip":
            lo, hi = consts[n.input[1]], consts[n.input[2]]
            sig.append(("Clip", int(lo), int(hi), str(lo.dtype)))
        elif n.op_type in _COMPUTE_OPS:
            sig.append((n.op_type,))
    return sig
