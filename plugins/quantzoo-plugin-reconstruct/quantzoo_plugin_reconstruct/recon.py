"""The reconstruction loop shared by AdaRound, BRECQ and QDrop (the loop of MQBench's ``advanced_ptq.py``,
which runs all three under one protocol).

For each unit, in execution order:

1. cache its input from the model with every earlier unit already rounded (``x̂``, activations quantized:
   AdaRound's asymmetric reconstruction, eq. 25) and from the float model (``x``), and the float unit's
   output on ``x`` as the target;
2. (BRECQ) cache the Fisher weights ``|∂KL/∂z| + 1`` of the unit output ``z``, with the KL divergence of the
   model quantized up to and including the unit from the float model (BRECQ ``save_grad_data``);
3. optimise the rounding ``V`` of every quantized weight in the unit (Adam) on random mini-batches,
   loss = reconstruction error + ``λ·f_reg(V)`` after the warm-up, ``β`` annealed; the activation
   quantizers inside the unit stay on, each element kept quantized with probability ``drop_prob``
   (QDrop: 0.5; AdaRound/BRECQ: 1) and their step sizes optionally learned (LSQ gradient);
4. harden the rounding (``1[V ≥ 0]``) and move on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import fx, nn

from quantzoo import UnsupportedError
from quantzoo.math import beta_schedule, lsq_fake_quantize, rounding_regularizer
from quantzoo.nn import FakeQuant, QuantLayerMixin
from quantzoo.nn.capture import batch_inputs, capture
from quantzoo.nn.reference import quantizers_off

from .units import Unit, run_in_chunks
from .weight import AdaRoundWeight


def quant_layers(model: nn.Module) -> dict[str, QuantLayerMixin]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLayerMixin)}


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, fisher: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """``mean_n Σ_c (ẑ − z)²`` over the sample and spatial dimensions (BRECQ/MQBench ``lp_loss`` with p = 2;
    AIMET's mean of channel norms squared), or with BRECQ's diagonal Fisher weights ``g²`` on each element:
    ``mean_n Σ_c (ẑ − z)²·g²`` (``LossFunction`` ``fisher_diag``)."""
    err = (pred - target).pow(2)
    if fisher is not None:
        err = err * fisher.pow(2)
    return err.sum(1).mean() if err.dim() > 1 else err.mean()


class _GradAt(fx.Interpreter):
    """Runs a traced model with the value of one node (the unit output) made a leaf that requires grad, so
    that the gradient of the model's loss with respect to it can be taken."""

    def __init__(self, module: fx.GraphModule, node_name: str):
        super().__init__(module)
        self.node_name = node_name
        self.value: torch.Tensor | None = None

    def run_node(self, n):
        out = super().run_node(n)
        if n.name == self.node_name:
            out = self.value = out.detach().requires_grad_()
        return out


def fisher_weights(full: fx.GraphModule, unit: Unit, inputs: torch.Tensor, quantized: set[str],
                   batch_size: int) -> torch.Tensor:
    """BRECQ's diagonal Fisher weights of the unit output: ``|∂KL/∂z| + 1`` per element, where
    ``KL = KL(softmax(f_float(x)) ‖ softmax(f_q(x)))`` averaged over a mini-batch of ``batch_size`` (PyTorch's
    ``batchmean``), ``f_q`` the model with the layers in ``quantized`` (those up to and including the unit)
    quantized and the rest float, and ``+1`` the damping of ``save_grad_data``. ``full`` is the traced model."""
    grads = []
    for i in range(0, len(inputs), batch_size):
        xb = inputs[i:i + batch_size]
        with torch.no_grad(), quantizers_off(full):
            out_fp = full(xb)
        if not torch.is_tensor(out_fp) or out_fp.dim() != 2:
            raise UnsupportedError("the Fisher-weighted loss needs a model whose output is one N x classes tensor "
                                   "of logits; use loss='mse'")
        run = _GradAt(full, unit.output.name)
        with torch.enable_grad(), quantizers_off(full, lambda n: n not in quantized):
            out_q = run.run(xb)
            loss = F.kl_div(F.log_softmax(out_q, dim=1), F.softmax(out_fp, dim=1), reduction="batchmean")
            (g,) = torch.autograd.grad(loss, run.value)
        grads.append(g.abs() + 1.0)
    return torch.cat(grads)


class _ActivationHooks:
    """Forward hooks on the unit's input quantizers during its optimisation: optionally learn their step
    size (LSQ, Esser et al. 2020, gradient scale ``1/sqrt(numel·Q_P)`` as in QDrop/MQBench), and keep each
    element quantized with probability ``keep`` (QDrop, Wei et al. 2022 §4: otherwise the float value; at the
    unit input the float model's value, as QDrop's ``torch.where(rand < prob, quant_inp, fp_inp)``)."""

    def __init__(self, quantizers: list[FakeQuant], keep: float, learn_scale: bool, generator: torch.Generator):
        self.quantizers, self.keep, self.gen = quantizers, keep, generator
        self.scales = {id(q): nn.Parameter(q.scale.detach().clone()) for q in quantizers} if learn_scale else {}
        self.current_input: torch.Tensor | None = None
        self.float_input: torch.Tensor | None = None
        self.handles = [q.register_forward_hook(self._hook) for q in quantizers]

    def _hook(self, q: FakeQuant, args, out):
        x = args[0]
        if id(q) in self.scales:
            zp = None if q.spec.symmetric else q.zero_point.float()
            out = lsq_fake_quantize(x, self.scales[id(q)].abs() + torch.finfo(torch.float32).eps, q.spec,
                                    zero_point=zp, grad_factor=1.0 / math.sqrt(x.numel() * q.spec.qmax))
        if self.keep < 1.0:
            alt = self.float_input if (x is self.current_input and self.float_input is not None) else x
            mask = torch.rand(x.shape, generator=self.gen) < self.keep
            out = torch.where(mask, out, alt)
        return out

    @torch.no_grad()
    def close(self) -> None:
        """Remove the hooks and write learned step sizes back (idempotent)."""
        for h in self.handles:
            h.remove()
        for q in self.quantizers:
            if id(q) in self.scales:
                q.scale = (self.scales[id(q)].detach().abs() + torch.finfo(torch.float32).eps).reshape(q.scale.shape)
        self.handles, self.scales = [], {}


def reconstruct(model: nn.Module, graph: fx.Graph, units: list[Unit], batches: list, cfg,
                learn: set[str] | None = None) -> list[dict]:
    """Reconstruct every unit in order (in place), learning the rounding and activation steps of the layers
    in ``learn`` (all quantized layers when ``None``), and return one record per unit: its layers, those it
    learned (``learned``; a unit with none is skipped and has only these keys), the loss curve (``iteration``,
    ``loss``, ``reg``, ``beta``), the rounding softness at the end, and the reconstruction loss on the whole
    calibration set before optimisation and after it with soft and with hard rounding."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    full = fx.GraphModule(model, graph)
    inputs = torch.cat([batch_inputs(b) for b in batches])
    history = []
    done: set[str] = set()
    try:
        for unit in units:
            done.update(unit.layers)
            history.append(_reconstruct_unit(full, unit, batches, inputs, set(done), cfg, gen, learn))
    finally:
        model.train(was_training)
    return history


def _reconstruct_unit(full: fx.GraphModule, unit: Unit, batches, inputs, upto: set[str], cfg, gen,
                      learn: set[str] | None) -> dict:
    layers = quant_layers(full)
    mine = {n: layers[n] for n in unit.layers if n in layers and (learn is None or n in learn)}
    weights = [m.weight_quantizer for m in mine.values() if isinstance(m.weight_quantizer, AdaRoundWeight)]
    acts = [m.input_quantizer for m in mine.values() if isinstance(m.input_quantizer, FakeQuant)]
    record: dict = {"layers": list(unit.layers), "learned": list(mine), "iterations": cfg.iterations, "curve": []}
    if not weights or cfg.iterations == 0:  # e.g. a unit of the policy's 8-bit layers only: nothing to learn
        return record

    with quantizers_off(full):
        x_fp = capture(full, [unit.entry], batches)[unit.entry]
    x_q = capture(full, [unit.entry], batches)[unit.entry]  # earlier units already rounded
    block = unit.module(full)
    with quantizers_off(full):
        target = run_in_chunks(block, x_fp)
    fisher = fisher_weights(full, unit, inputs, upto, cfg.batch_size) if cfg.loss == "fisher_diag" else None

    def whole_set_loss() -> float:
        return float(reconstruction_loss(run_in_chunks(block, x_q), target, fisher))

    record["start_loss"] = whole_set_loss()
    opt = torch.optim.Adam([w.rounding for w in weights], lr=cfg.lr)
    hooks = _ActivationHooks(acts, cfg.drop_prob, cfg.act_scale_lr > 0, gen)
    act_opt = act_sched = None
    if hooks.scales:
        act_opt = torch.optim.Adam(list(hooks.scales.values()), lr=cfg.act_scale_lr)
        act_sched = torch.optim.lr_scheduler.CosineAnnealingLR(act_opt, T_max=cfg.iterations, eta_min=0.0)
    total, n = cfg.iterations, len(x_q)
    log_every = max(1, total // 50)
    try:
        for w in weights:
            w.soft = True
        with torch.enable_grad():
            for t in range(1, total + 1):
                idx = torch.randperm(n, generator=gen)[:cfg.batch_size]
                inp = x_q[idx]
                hooks.current_input, hooks.float_input = inp, x_fp[idx]
                rec = reconstruction_loss(block(inp), target[idx], None if fisher is None else fisher[idx])
                beta = beta_schedule(t, total, start=cfg.beta_start, end=cfg.beta_end, warmup=cfg.warmup)
                # BRECQ/QDrop LossFunction: no rounding loss before the warm-up ends (count < warmup·T)
                reg = (cfg.reg_weight * sum(rounding_regularizer(w.rounding, beta) for w in weights)
                       if t >= cfg.warmup * total else torch.zeros(()))
                opt.zero_grad()
                if act_opt is not None:
                    act_opt.zero_grad()
                (rec + reg).backward()
                opt.step()
                if act_opt is not None:
                    act_opt.step()
                    act_sched.step()
                if t % log_every == 0 or t == total:
                    record["curve"].append({"iteration": t, "loss": float(rec.detach()),
                                            "reg": float(reg.detach()), "beta": beta})
        hooks.close()  # writes learned step sizes back; the losses below run without dropping
        record["soft_loss"] = whole_set_loss()
    finally:
        hooks.close()
        for w in weights:
            w.soft = False
    record["softness"] = sum(w.softness() for w in weights) / len(weights)
    record["hard_loss"] = whole_set_loss()
    return record
