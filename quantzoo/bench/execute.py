"""Run one cell: load the FP baseline, quantize under the protocol, measure. Every executor calls
:func:`execute_cell`; :func:`run_cell` is the Python entry point for plugin authors."""

from __future__ import annotations

import copy
import time
import traceback
import warnings
from typing import Any

import torch

from ..backends import state_dict_bytes
from ..errors import UnsupportedError
from ..nn.fold import fold_batch_norms
from .cell import (FLOAT_BITS, FP_METHOD, Cell, accuracy, get_baseline, ideal_size_bytes, latency_ms,
                   load_splits, paired_latency_ms, peak_rss_mb, reset_peak_rss)
from .protocol import Budget, Protocol, default_baseline


def make_cell(method: str, model: str, dataset: str, w_bits: int | None = 8, a_bits: int | None = 8,
              seed: int = 0, config: dict | Any = None, *, mode: str | None = None,
              protocol: Protocol | dict | None = None, baseline: Budget | dict | None = None,
              data_root: str | None = None, paper: dict | None = None) -> Cell:
    """Validate names and bits and resolve the method's full config into a :class:`Cell` (no heavy work)."""
    from ..api import get_quantizer
    from ..quantizer import QuantizerConfig
    from ..registry import get_registry
    from .configs import bits_config

    reg = get_registry()
    proto = protocol if isinstance(protocol, Protocol) else Protocol.model_validate(protocol or {})
    mdef, ddef = reg.get("model", model), reg.get("dataset", dataset)
    if ddef.name not in mdef.datasets:
        raise UnsupportedError(f"model {mdef.name!r} does not fit data set {ddef.name!r}; it fits: "
                               f"{', '.join(mdef.datasets)}")
    budget = Budget.model_validate(baseline) if baseline is not None else default_baseline(mdef.name, ddef.name)
    common = dict(model=mdef.name, dataset=ddef.name, seed=int(seed), protocol=proto.model_dump(mode="json"),
                  baseline=budget.model_dump(mode="json"), data_root=data_root, paper=paper)
    if method == FP_METHOD:
        return Cell(method=FP_METHOD, w_bits=FLOAT_BITS, a_bits=FLOAT_BITS, mode="fp",
                    code=reg.code_versions("model", mdef.name), **common)
    cls = get_quantizer(method)
    caps = cls.capabilities
    if mode is None:
        mode = "ptq" if caps.ptq else "qat"
    if mode not in ("ptq", "qat"):
        raise UnsupportedError(f"mode must be 'ptq' or 'qat', not {mode!r}")
    if (mode == "ptq" and not caps.ptq) or (mode == "qat" and not caps.qat):
        raise UnsupportedError(f"{cls.name} does not support {mode.upper()} (capabilities: ptq={caps.ptq}, "
                               f"qat={caps.qat})")
    if isinstance(config, QuantizerConfig):
        cfg = cls.make_config(config)
    else:
        cfg = bits_config(cls, w_bits, a_bits, config, proto)
    if w_bits is None:  # a config file or the method's defaults: read the widths back from the config
        w_bits, a_bits = cls.bits_of_config(cfg)
    return Cell(method=cls.name, w_bits=int(w_bits or FLOAT_BITS), a_bits=int(a_bits or FLOAT_BITS), mode=mode,
                config=cfg.model_dump(mode="json"), config_version=cfg.version,
                code=reg.code_versions("quantizer", cls.name), **common)


def run_cell(method: str, model: str, dataset: str, w_bits: int | None = 8, a_bits: int | None = 8,
             seed: int = 0, config: dict | Any = None, train: Budget | dict | None = None, *,
             mode: str | None = None, protocol: Protocol | dict | None = None, data_root: str | None = None,
             cache_dir=None, baseline: Budget | dict | None = None) -> dict:
    """Score one method on one model/data set under the harness protocol and return its metrics.

    ``method`` is a registry name (or ``"fp32"`` for the baseline row); ``config`` a dict of overrides on top
    of ``config_for_bits(w_bits, a_bits)`` (or a full config instance); ``train`` a QAT budget (implies
    ``mode="qat"``). The FP baseline is trained once and cached (``cache_dir`` / ``$QUANTZOO_CACHE``);
    ``baseline`` overrides its recipe (default: :data:`~quantzoo.bench.protocol.DEFAULT_BASELINES`).
    Exceptions propagate (the sweep runner records them as failed cells instead).

    Example::

        from quantzoo.bench import run_cell
        run_cell("uniform", "cnn", "digits", 4, 4)["accuracy"]
    """
    proto = protocol if isinstance(protocol, Protocol) else Protocol.model_validate(protocol or {})
    if train is not None:
        proto = proto.model_copy(update={"qat": Budget.model_validate(train)})
        mode = mode or "qat"
    cell = make_cell(method, model, dataset, w_bits, a_bits, seed, config, mode=mode, protocol=proto,
                     data_root=data_root, baseline=baseline)
    return execute_cell(cell, cache_dir=cache_dir)


def execute_cell(cell: Cell | dict, cache_dir=None) -> dict:
    """The metrics of one cell (see the README's Protocol section for each key)."""
    return quantize_cell(cell, cache_dir)[0]


def quantize_cell(cell: Cell | dict, cache_dir=None):
    """``(metrics, model)``: the metrics of one cell and the converted model (the FP model for the FP row)."""
    cell = Cell.from_dict(cell) if isinstance(cell, dict) else cell
    proto = Protocol.model_validate(cell.protocol)
    threads = torch.get_num_threads()
    torch.set_num_threads(proto.threads)
    try:
        return _quantize_cell(cell, proto, cache_dir)
    finally:
        torch.set_num_threads(threads)  # the caller's setting is theirs


def _quantize_cell(cell: Cell, proto: Protocol, cache_dir):
    reset_peak_rss()
    t_start = time.perf_counter()
    splits = load_splits(cell.dataset, cell.data_root)
    base = get_baseline(cell.model, cell.dataset, cell.seed, cell.baseline, data_root=cell.data_root,
                        cache_dir=cache_dir)
    fp_model = base.model
    test = splits.test_batches(proto.eval_batch_size)
    fp_size = state_dict_bytes(fp_model)
    fp_ideal = ideal_size_bytes(fp_model)
    m: dict[str, Any] = {
        "fp_accuracy": base.accuracy, "baseline_key": base.key, "baseline_cached": base.cached,
        "baseline_train_s": base.train_s, "fp_size_bytes": fp_size, "bn_fold": proto.bn_fold,
        "first_layer": cell.config.get("first_layer", "method"), "last_layer": cell.config.get("last_layer", "method"),
        "threads": torch.get_num_threads(), "calibration_samples": None, "calib_s": 0.0, "train_s": 0.0,
    }
    if cell.mode == "fp":
        m.update(accuracy=base.accuracy, fakequant_accuracy=base.accuracy, real_accuracy=None, backend="float32",
                 size_bytes=fp_size, compression=1.0, ideal_size_bytes=fp_ideal, ideal_compression=1.0,
                 first_layer="fp", last_layer="fp")
        if proto.latency:
            folded = fold_batch_norms(fp_model)
            for b in proto.latency_batches:
                m[f"fp_latency_b{b}_ms"] = latency_ms(folded, splits.test_x[:b])
        m.update(wall_s=time.perf_counter() - t_start, peak_rss_mb=peak_rss_mb())
        return m, fp_model

    from ..api import get_quantizer

    cls = get_quantizer(cell.method)
    quantizer = cls(cls.make_config(cell.config))
    model_in = fold_batch_norms(fp_model) if proto.bn_fold == "before" else copy.deepcopy(fp_model)
    torch.manual_seed(cell.seed)
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        prepared = quantizer.prepare(model_in)
        if cell.mode == "ptq" or cls.capabilities.needs_calibration:
            # the same samples for every method: drawn by the seed alone (Splits.calibration_indices)
            t = time.perf_counter()
            batches = splits.calibration_batches(proto.calibration_samples, cell.seed, proto.calibration_batch_size)
            quantizer.calibrate(prepared, batches)
            m["calib_s"] = time.perf_counter() - t
            m["calibration_samples"] = sum(len(b[0]) for b in batches)
        if cell.mode == "qat":
            t = time.perf_counter()
            prepared, grid = _train(quantizer, prepared, splits, proto, cell.seed)
            m["train_s"] = time.perf_counter() - t
            m["qat_epochs"] = proto.qat.epochs
            m.update(grid)
        converted = quantizer.convert(prepared)
        caught = sorted({f"{w.category.__name__}: {w.message}" for w in wlist
                         if not issubclass(w.category, DeprecationWarning)})
    m["warnings"] = caught
    t = time.perf_counter()
    fq_acc = accuracy(converted, test)
    m["eval_s"] = time.perf_counter() - t
    m["fakequant_accuracy"] = fq_acc
    m["ideal_size_bytes"] = ideal_size_bytes(converted, sum(p.numel() for p in fp_model.parameters()))
    m["ideal_compression"] = fp_ideal / m["ideal_size_bytes"] if m["ideal_size_bytes"] else None
    m.update(_backend_metrics(cls.default_backend, converted, fp_model, splits, proto))
    m["accuracy"] = m["real_accuracy"] if m.get("real_accuracy") is not None else fq_acc
    m["compression"] = fp_size / m["size_bytes"] if m.get("size_bytes") else None
    m["delta"] = m["accuracy"] - base.accuracy
    m.update(wall_s=time.perf_counter() - t_start, peak_rss_mb=peak_rss_mb())
    return m, converted


def _train(quantizer, prepared, splits, proto: Protocol, seed: int):
    """QAT with the protocol's budget; with an ``lr_grid`` every method gets the same trials, each trained on
    the training split minus a fixed hold-out and judged on that hold-out (never on the test set)."""
    from ..training import TrainConfig, fit

    budget = proto.qat
    cfg = TrainConfig(**budget.model_dump(exclude={"batch_size", "samples"}))
    if len(proto.lr_grid) <= 1:
        if proto.lr_grid:
            cfg = cfg.model_copy(update={"lr": proto.lr_grid[0]})
        fit(quantizer, prepared, splits.train_batches(budget.batch_size, seed, samples=budget.samples), cfg)
        return prepared, {"qat_lr": cfg.lr}
    trials = []
    for lr in proto.lr_grid:
        torch.manual_seed(seed)
        trial = copy.deepcopy(prepared)
        fit(quantizer, trial, splits.train_batches(budget.batch_size, seed, holdout=proto.holdout,
                                                    samples=budget.samples),
            cfg.model_copy(update={"lr": lr}))
        trials.append((accuracy(trial, splits.holdout_batches(proto.holdout)), lr, trial))
    best = max(trials, key=lambda t: (t[0], -t[1]))
    return best[2], {"qat_lr": best[1], "lr_trials": {str(lr): acc for acc, lr, _ in trials}}


def _backend_metrics(name: str, converted, fp_model, splits, proto: Protocol) -> dict:
    """Real-backend accuracy, size and latency (the latter where the backend says the lowered model runs on
    real kernels, :meth:`~quantzoo.backends.Backend.measures_latency`, against the BN-folded FP model in this
    same process). A backend that cannot run the model is reported, not fatal."""
    from ..backends import FakeQuantBackend
    from ..registry import get_registry

    out: dict[str, Any] = {"backend": name, "real_accuracy": None, "backend_error": None}
    if name == FakeQuantBackend.name:
        out["size_bytes"] = FakeQuantBackend().model_size_bytes(converted)
        return out
    try:
        backend = get_registry().get("backend", name)()
        ok, why = backend.is_available()
        if not ok:
            raise UnsupportedError(f"backend {name} is unavailable: {why}")
        lowered = backend.lower(converted, splits.test_x[:1])
        out["real_accuracy"] = accuracy(lowered, splits.test_batches(proto.eval_batch_size))
        out["size_bytes"] = backend.model_size_bytes(lowered)
        out["real_integer"] = bool(backend.real_integer)
        if hasattr(lowered, "kernel_report"):
            out["kernels"] = lowered.kernel_report()  # which layer ran on which kernel (packed backend)
        if backend.measures_latency(lowered) and proto.latency:
            folded = fold_batch_norms(fp_model)
            for b in proto.latency_batches:
                x = splits.test_x[:b]
                q_ms, fp_ms = paired_latency_ms([lowered, folded], x)
                out[f"latency_b{b}_ms"], out[f"fp_latency_b{b}_ms"] = q_ms, fp_ms
                out[f"speedup_b{b}"] = out[f"fp_latency_b{b}_ms"] / out[f"latency_b{b}_ms"]
    except Exception as e:  # noqa: BLE001 - reported in the row; fake-quant accuracy still stands
        out["backend_error"] = f"{type(e).__name__}: {e}"
        out["backend"] = f"{FakeQuantBackend.name} ({name} failed)"
        out["size_bytes"] = FakeQuantBackend().model_size_bytes(converted)
        out["backend_traceback"] = traceback.format_exc(limit=3)
    return out
