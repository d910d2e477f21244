"""`quantzoo analyze`: where a quantized model loses accuracy, layer by layer, for any installed method.

For one method at one W/A setting on a zoo model (the harness's FP checkpoint, calibration set and budget):

* **SQNR per layer** (cheap; the idea of torchao's numeric debugger): run the FP and the converted model on a
  few calibration batches and compare each compute layer's output, ``10·log10(Σy² / Σ(y − ŷ)²)`` dB. Two
  numbers: ``sqnr_db``, the error as it accumulates in the deployed model, and ``local_sqnr_db``, the layer's
  own error (the converted layer run on the FP model's input to it), which ranks the layers: the lowest
  local SQNR is the most sensitive layer.
* **Ranges**: each layer's weight range and the range of its input activation on the calibration data.
* **Ablation** (``ablation=True``, one quantization run per layer; the idea of AIMET's QuantAnalyzer): the
  accuracy with only that layer quantized (``include=[layer]``) and with only that layer left float
  (``exclude=[layer]``), for methods that take the layer policy.
* **Mixed precision** (``mixed=K``): keep the k most sensitive layers at 8 bits (``int8_layers``) for
  k = 0..K and report accuracy and the average weight width: the accuracy/size trade-off.

Each unit of work is stored in the results database (table ``analyses``) under the hash of everything that
determines it, so a repeated or interrupted analysis reuses what is done. The JSON it returns is documented
in docs/analyze.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedError
from ..nn.capture import capture
from ..quantized_weights import find_quantized_weights
from .cell import Cell
from .data import get_baseline, load_splits
from .protocol import Protocol, hash_of
from .run import make_cell, quantize_cell

SCHEMA_VERSION = 3


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (``inf`` for identical tensors)."""
    ref = reference.detach().double()
    noise = (ref - test.detach().double()).square().sum().item()
    signal = ref.square().sum().item()
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-30) / noise)


def _converted_name(converted: nn.Module, name: str) -> str | None:
    """Where the float layer ``name`` lives in the converted model: the same name, or under a wrapper."""
    modules = dict(converted.named_modules())
    alias = getattr(converted, "_quantzoo_layer_names", {}) or {}
    for candidate in (alias.get(name), name, f"module.{name}"):
        if candidate and candidate in modules:
            return candidate
    return None


def _plain(t: Any) -> torch.Tensor:
    return t.dequantize() if torch.is_tensor(t) and t.is_quantized else t


def _local(module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """A converted layer run alone on a float input (None where it takes only quantized tensors: torch.ao)."""
    try:
        with torch.no_grad():
            return _plain(module.eval()(x))
    except Exception:  # noqa: BLE001 - integer modules refuse float input; the accumulated SQNR still stands
        return None


def layer_sqnr(fp_model: nn.Module, converted: nn.Module, layers: list[str], batches: list) -> dict[str, dict]:
    """``{layer: {"sqnr_db", "local_sqnr_db", "weight_min", "weight_max", "input_min", "input_max"}}``."""
    fp_out = capture(fp_model, layers, batches, outputs=True)
    fp_in = capture(fp_model, layers, batches)
    names = {n: _converted_name(converted, n) for n in layers}
    found = [c for c in names.values() if c is not None]
    q_out = {}
    if found:
        was = converted.training
        converted.eval()
        records: dict[str, list] = {c: [] for c in found}
        handles = [converted.get_submodule(c).register_forward_hook(
            lambda m, a, o, c=c: records[c].append(_plain(o).detach())) for c in found]
        try:
            with torch.no_grad():
                for b in batches:
                    converted(b[0] if isinstance(b, (tuple, list)) else b)
        finally:
            for h in handles:
                h.remove()
            converted.train(was)
        q_out = {c: torch.cat(v) for c, v in records.items() if v}
    out = {}
    for n in layers:
        w = fp_model.get_submodule(n).weight.detach()
        c = names[n]
        sq = sqnr_db(fp_out[n], q_out[c]) if c in q_out and q_out[c].shape == fp_out[n].shape else None
        local = _local(converted.get_submodule(c), fp_in[n]) if c is not None else None
        loc = sqnr_db(fp_out[n], local) if local is not None and local.shape == fp_out[n].shape else None
        out[n] = {"sqnr_db": sq, "local_sqnr_db": loc, "weight_min": w.min().item(), "weight_max": w.max().item(),
                  "input_min": fp_in[n].min().item(), "input_max": fp_in[n].max().item()}
    return out


def sensitivity_order(layers: dict[str, dict], names: list[str]) -> list[str]:
    """Most sensitive first: lowest local SQNR (the layer's own error), else lowest accumulated SQNR."""
    def key(n):
        info = layers[n]
        v = info["local_sqnr_db"] if info.get("local_sqnr_db") is not None else info["sqnr_db"]
        return (v is None, v if v is not None else 0.0)

    return sorted(names, key=key)


def _average_weight_bits(converted: nn.Module, fp_model: nn.Module) -> float:
    """Weight bits averaged over the FP model's compute-layer weights (a float layer counts 32)."""
    total = sum(m.weight.numel() for m in fp_model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)))
    quant = {n: (w.numel(), b) for n, w, b, _ in find_quantized_weights(converted)}
    bits = sum(n * b for n, b in quant.values()) + 32 * max(total - sum(n for n, _ in quant.values()), 0)
    return bits / max(total, 1)


def analyze(method: str, model: str, dataset: str, w_bits: int, a_bits: int | None, *, seed: int = 0,
            mode: str | None = None, protocol: Protocol | dict | None = None, ablation: bool = False,
            mixed: int | None = None, batches: int = 4, db=None, cache_dir=None, data_root: str | None = None,
            progress: Callable[[str, int, int], None] | None = None) -> dict:
    """The per-layer analysis of one method (see the module doc); ``db`` (a ResultsDB) stores and reuses
    each unit of work. ``progress(what, done, total)`` is called as ablation and mixed-precision runs finish."""
    proto = protocol if isinstance(protocol, Protocol) else Protocol.model_validate(
        {"latency": False, **(protocol or {})})
    base_cell = make_cell(method, model, dataset, w_bits, a_bits, seed, mode=mode, protocol=proto,
                          data_root=data_root)
    spec = {"schema": SCHEMA_VERSION, "method": base_cell.method, "model": base_cell.model,
            "dataset": base_cell.dataset, "seed": seed, "bits": base_cell.bits_label, "mode": base_cell.mode,
            "cell": base_cell.key}

    def unit(kind: str, extra: dict, compute: Callable[[], dict]) -> dict:
        key = hash_of({**spec, "kind": kind, **extra})
        if db is not None:
            hit = db.analysis(key)
            if hit is not None:
                return hit
        result = compute()
        if db is not None:
            db.save_analysis(key, kind, {**spec, **extra}, result)
        return result

    def run(cell: Cell) -> tuple[dict, nn.Module]:
        m, converted = quantize_cell(cell, cache_dir=cache_dir)
        return m.as_dict(), converted

    base = get_baseline(model, dataset, seed, base_cell.baseline, data_root=data_root, cache_dir=cache_dir)
    splits = load_splits(base_cell.dataset, data_root)
    layers = [n for n, m in base.model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    calib = splits.calibration_batches(proto.calibration_samples, seed, proto.calibration_batch_size)[:batches]

    def main() -> dict:
        t = time.perf_counter()
        metrics, converted = run(base_cell)
        plan = getattr(converted, "_quantzoo_plan", None)
        return {"accuracy": metrics["accuracy"], "fp_accuracy": metrics["fp_accuracy"],
                "average_weight_bits": _average_weight_bits(converted, base.model),
                "method_layers": plan.method_layers() if plan is not None else layers,
                "layers": layer_sqnr(base.model, converted, layers, calib), "wall_s": time.perf_counter() - t}

    result = {**spec, **unit("sqnr", {}, main)}
    # sensitivity: lowest SQNR first, among the layers the method quantizes its own way (the policy's 8-bit
    # layers are 8-bit already)
    result["sensitivity_order"] = sensitivity_order(result["layers"], result["method_layers"])
    takes_policy = "include" in base_cell.config
    if ablation:
        if not takes_policy:
            result["ablation"] = {"skipped": f"{base_cell.method} does not take the layer policy (include/exclude)"}
        else:
            result["ablation"] = {}
            for i, n in enumerate(layers):
                only = unit("only_quantized", {"layer": n}, lambda n=n: {"accuracy": run(_variant(
                    base_cell, proto, {"include": [n], "first_layer": "same", "last_layer": "same"}))[0]["accuracy"]})
                left = unit("only_float", {"layer": n}, lambda n=n: {"accuracy": run(_variant(
                    base_cell, proto, {"exclude": [n]}))[0]["accuracy"]})
                result["ablation"][n] = {"only_this_quantized": only["accuracy"], "only_this_float": left["accuracy"]}
                if progress:
                    progress("ablation", i + 1, len(layers))
            # with an ablation, sensitivity is what leaving the layer float recovers
            result["sensitivity_order"] = sorted(result["method_layers"],
                                                 key=lambda n: -result["ablation"][n]["only_this_float"])
    if mixed is not None:
        if not takes_policy:
            result["mixed_precision"] = {"skipped": f"{base_cell.method} does not take the layer policy"}
        else:
            curve = []
            ks = min(mixed, len(result["sensitivity_order"]) - 1)  # at least one layer stays the method's
            for k in range(0, ks + 1):
                keep = result["sensitivity_order"][:k]

                def mixed_run(keep=keep):
                    metrics, converted = run(_variant(base_cell, proto, {"int8_layers": keep}))
                    return {"accuracy": metrics["accuracy"], "ideal_size_bytes": metrics["ideal_size_bytes"],
                            "average_weight_bits": _average_weight_bits(converted, base.model)}

                point = unit("mixed", {"int8_layers": keep}, mixed_run)
                curve.append({"k": k, "int8_layers": keep, **point})
                if progress:
                    progress("mixed precision", k + 1, ks + 1)
            result["mixed_precision"] = curve
    return result


def _variant(cell: Cell, proto: Protocol, overrides: dict) -> Cell:
    if not set(overrides) <= set(cell.config):
        raise UnsupportedError(f"{cell.method} has no config fields {sorted(set(overrides) - set(cell.config))}")
    return make_cell(cell.method, cell.model, cell.dataset, cell.w_bits, cell.a_bits, cell.seed,
                     {**cell.config, **overrides}, mode=cell.mode, protocol=proto, data_root=cell.data_root)


# ---------------------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------------------
def analysis_table(results: list[dict]) -> str:
    """Layers as rows, one SQNR (and ablation) column per method: which method hurts which layer."""
    from tabulate import tabulate

    layers = list(results[0]["layers"])
    header = ["layer", "weight range", "input range"]
    for r in results:
        header += [f"{r['method']} SQNR dB", f"{r['method']} own dB"]
        if isinstance(r.get("ablation"), dict) and "skipped" not in r["ablation"]:
            header += [f"{r['method']} only-q %", f"{r['method']} only-float %"]
    rows = []
    for n in layers:
        info = results[0]["layers"][n]
        row = [n, f"[{info['weight_min']:.2f}, {info['weight_max']:.2f}]",
               f"[{info['input_min']:.2f}, {info['input_max']:.2f}]"]
        for r in results:
            for k in ("sqnr_db", "local_sqnr_db"):
                sq = r["layers"].get(n, {}).get(k)
                row.append("" if sq is None else ("inf" if math.isinf(sq) else f"{sq:.1f}"))
            if isinstance(r.get("ablation"), dict) and "skipped" not in r["ablation"]:
                a = r["ablation"][n]
                row += [f"{a['only_this_quantized']:.2f}", f"{a['only_this_float']:.2f}"]
        rows.append(row)
    head = " · ".join(f"{r['method']} {r['bits']}: {r['accuracy']:.2f}% (FP {r['fp_accuracy']:.2f}%)"
                      for r in results)
    return head + "\n\n" + tabulate(rows, headers=header, tablefmt="pipe", disable_numparse=True)


def analysis_plot(results: list[dict], path) -> None:
    """A PNG: per-layer SQNR, one bar group per layer and one colour per method; and, where computed, the
    mixed-precision curve (accuracy against average weight bits)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in results if isinstance(r.get("mixed_precision"), list)]
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(13 if curves else 8, 4.5), squeeze=False)
    ax = axes[0][0]
    layers = list(results[0]["layers"])
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        vals = [r["layers"][n]["sqnr_db"] for n in layers]
        vals = [min(v, 80.0) if v is not None else 0.0 for v in vals]
        ax.bar([j + i * width for j in range(len(layers))], vals, width, label=f"{r['method']} {r['bits']}")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))])
    ax.set_xticklabels(layers, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("output SQNR vs FP (dB, higher is better)")
    ax.set_title(f"Per-layer SQNR: {results[0]['model']} on {results[0]['dataset']}", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    if curves:
        ax = axes[0][1]
        for r in curves:
            xs = [p["average_weight_bits"] for p in r["mixed_precision"]]
            ys = [p["accuracy"] for p in r["mixed_precision"]]
            ax.plot(xs, ys, marker="o", label=f"{r['method']} {r['bits']}")
            for p in r["mixed_precision"]:
                ax.annotate(f"k={p['k']}", (p["average_weight_bits"], p["accuracy"]), fontsize=6,
                            xytext=(3, -8), textcoords="offset points")
        ax.axhline(curves[0]["fp_accuracy"], color="k", ls="--", lw=0.8, label="FP32")
        ax.set_xlabel("average weight bits (the k most sensitive layers at 8 bits)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title("Mixed precision: accuracy vs size", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
