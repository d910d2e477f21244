"""Running one cell: load the FP baseline, drive the method through the pipeline under the protocol, measure.

Every executor calls :func:`execute_cell`; :func:`run_cell` is the Python entry point for plugin authors.
A cell's data flows one way: baseline and data (:mod:`.data`) → quantization (:mod:`quantzoo.pipeline`) →
measurements (:mod:`.measure`) → one :class:`~.metrics.CellMetrics`.
"""

from __future__ import annotations

import copy
import time
import traceback
import warnings
from typing import Any

import torch

from ..backends import FakeQuantBackend, state_dict_bytes
from ..errors import UnsupportedError
from ..nn.fold import fold_batch_norms
from ..pipeline import default_mode, finish_model, lower, prepare_model
from ..quantized_weights import ideal_size_bytes
from .cell import FP_METHOD, Cell
from .data import get_baseline, load_splits, train_config
from .measure import cpu_isa, degeneracy, latency_ms, peak_rss_mb, reset_peak_rss, speedup
from .metrics import CellMetrics, Latency
from .protocol import Budget, Protocol, default_baseline

#: Test samples each converted model runs once before it is scored (the pipeline's forward check) and on
#: which degeneracy is judged.
_CHECK_SAMPLES = 64


def make_cell(method: str, model: str, dataset: str, w_bits: int | None = 8, a_bits: int | None = 8,
              seed: int = 0, config: dict | Any = None, *, mode: str | None = None,
              protocol: Protocol | dict | None = None, baseline: Budget | dict | None = None,
              data_root: str | None = None, paper: dict | None = None, registry=None) -> Cell:
    """Validate names and bits and resolve the method's full config into a :class:`Cell` (no heavy work).

    ``a_bits=None``: float activations. The quantizer is built once here, so that a name its config refers
    to (an observer, ...) that is not registered fails now, not after the FP baseline trained.
    """
    from ..config import QuantizerConfig
    from ..registry import get_registry
    from .configs import bits_config, scheme_followed

    reg = registry or get_registry()
    proto = protocol if isinstance(protocol, Protocol) else Protocol.model_validate(protocol or {})
    mdef, ddef = reg.get("model", model), reg.get("dataset", dataset)
    if ddef.name not in mdef.datasets:
        raise UnsupportedError(f"model {mdef.name!r} does not fit data set {ddef.name!r}; it fits: "
                               f"{', '.join(mdef.datasets)}")
    budget = Budget.model_validate(baseline) if baseline is not None else default_baseline(mdef.name, ddef.name)
    common = dict(model=mdef.name, dataset=ddef.name, seed=int(seed), protocol=proto.model_dump(mode="json"),
                  baseline=budget.model_dump(mode="json"), data_root=data_root, paper=paper)
    if method == FP_METHOD:
        return Cell(method=FP_METHOD, w_bits=None, a_bits=None, mode="fp",
                    code=reg.code_versions("model", mdef.name), **common)
    cls = reg.get("quantizer", method)
    caps = cls.capabilities
    mode = mode or default_mode(caps)
    if mode not in ("ptq", "qat"):
        raise UnsupportedError(f"mode must be 'ptq' or 'qat', not {mode!r}")
    if (mode == "ptq" and not caps.ptq) or (mode == "qat" and not caps.qat):
        raise UnsupportedError(f"{cls.name} does not support {mode.upper()} (capabilities: ptq={caps.ptq}, "
                               f"qat={caps.qat})")
    cfg = cls.make_config(config) if isinstance(config, QuantizerConfig) else bits_config(
        cls, w_bits, a_bits, config, proto)
    cls(cfg, registry=reg)  # resolves the config's names now
    scheme = None if isinstance(config, QuantizerConfig) else scheme_followed(cls, w_bits, a_bits, proto)
    if w_bits is None:  # a config file or the method's defaults: read the widths back from the config
        w_bits, a_bits = cls.bits_of_config(cfg)
    return Cell(method=cls.name, w_bits=w_bits, a_bits=a_bits, mode=mode, config=cfg.model_dump(mode="json"),
                config_version=cfg.version, code=reg.code_versions("quantizer", cls.name), scheme=scheme, **common)


def run_cell(method: str, model: str, dataset: str, w_bits: int | None = 8, a_bits: int | None = 8,
             seed: int = 0, config: dict | Any = None, train: Budget | dict | None = None, *,
             mode: str | None = None, protocol: Protocol | dict | None = None, data_root: str | None = None,
             cache_dir=None, baseline: Budget | dict | None = None) -> dict:
    """Score one method on one model/data set under the harness protocol and return its metrics as a dict.

    ``method`` is a registry name (or ``"fp32"`` for the baseline row); ``config`` a dict of overrides on top
    of ``config_for_bits(w_bits, a_bits)`` (or a full config instance); ``train`` a QAT budget (implies
    ``mode="qat"``). The FP baseline is trained once and cached (``cache_dir`` / ``$QUANTZOO_CACHE``);
    ``baseline`` overrides its recipe (default: :data:`~quantzoo.bench.protocol.DEFAULT_BASELINES`).
    Exceptions propagate (the sweep runner records them as failed or unsupported cells instead).

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
    return execute_cell(cell, cache_dir=cache_dir).as_dict()


def execute_cell(cell: Cell | dict, cache_dir=None) -> CellMetrics:
    """The metrics of one cell."""
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
    from .scoring import evaluate, loss_for
    from ..registry import get_registry

    reg = get_registry()

    def score(net, batches) -> dict[str, float]:
        """The data set's metrics of ``net``: ``accuracy`` (percent) and, e.g. for detection, map50."""
        return evaluate(net, batches, model=cell.model, dataset=cell.dataset, registry=reg)

    m = CellMetrics(fp_accuracy=base.accuracy, metric=reg.get("dataset", cell.dataset).metric,
                    fp_task_metrics=dict(base.task_metrics), baseline_key=base.key, baseline_cached=base.cached,
                    baseline_train_s=base.train_s, fp_size_bytes=state_dict_bytes(fp_model), bn_fold=proto.bn_fold,
                    first_layer=cell.config.get("first_layer", "method"),
                    last_layer=cell.config.get("last_layer", "method"), threads=torch.get_num_threads(),
                    isa=cpu_isa())
    if cell.mode == "fp":
        m.accuracy = m.fakequant_accuracy = base.accuracy
        m.task_metrics = dict(base.task_metrics)
        m.backend, m.size_bytes, m.compression = "float32", m.fp_size_bytes, 1.0
        m.ideal_size_bytes, m.ideal_compression = 4.0 * sum(p.numel() for p in fp_model.parameters()), 1.0
        m.first_layer = m.last_layer = "fp"
        if proto.latency:
            folded = fold_batch_norms(fp_model)
            for b in proto.latency_batches:
                ms = latency_ms(folded, splits.test_x[:b])
                m.latency[b] = Latency(ms=ms, fp_ms=ms, speedup=1.0, spread=0.0, runs=0, noisy=False)
        m.wall_s, m.peak_rss_mb = time.perf_counter() - t_start, peak_rss_mb()
        return m, fp_model

    cls = reg.get("quantizer", cell.method)
    quantizer = cls(cls.make_config(cell.config), registry=reg)
    model_in = fold_batch_norms(fp_model) if proto.bn_fold == "before" else copy.deepcopy(fp_model)
    check_x = splits.test_x[:_CHECK_SAMPLES]
    # the same samples for every method: drawn by the seed alone (Splits.calibration_indices)
    batches = splits.calibration_batches(proto.calibration_samples, cell.seed, proto.calibration_batch_size)
    trained: dict[str, Any] = {}

    def train(prepared, q):
        best, info = _train(q, prepared, splits, proto, cell.seed, loss_for(cell.model, cell.dataset, registry=reg),
                            score)
        trained.update(info)
        return best

    torch.manual_seed(cell.seed)
    times: dict[str, float] = {}
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        prepared, _, samples = prepare_model(quantizer, model_in, mode=cell.mode, calibration=batches,
                                             train=train if cell.mode == "qat" else None, times=times)
        converted, _ = finish_model(quantizer, prepared, example_input=check_x, times=times)
    m.warnings = sorted({f"{w.category.__name__}: {w.message}" for w in wlist
                         if not issubclass(w.category, DeprecationWarning)})
    m.prepare_s, m.convert_s = times.get("prepare_s", 0.0), times.get("convert_s", 0.0)
    m.calib_s, m.train_s, m.calibration_samples = times.get("calib_s", 0.0), times.get("train_s", 0.0), samples
    if cell.mode == "qat":
        m.qat_epochs, m.qat_lr, m.lr_trials = proto.qat.epochs, trained.get("qat_lr"), trained.get("lr_trials", {})
    plan = getattr(prepared, "_quantzoo_plan", None)
    if plan is not None:
        m.float_layers = {n: r for n, r in plan.describe().items() if plan.role(n) == "fp"}
    m.float_layers.update(getattr(converted, "_quantzoo_float_layers", {}) or {})
    t = time.perf_counter()
    m.task_metrics = score(converted, splits.test_batches(proto.eval_batch_size))
    m.fakequant_accuracy = m.task_metrics.pop("accuracy")
    m.eval_s = time.perf_counter() - t
    m.ideal_size_bytes = ideal_size_bytes(converted, fp_model)
    m.ideal_compression = 4.0 * sum(p.numel() for p in fp_model.parameters()) / m.ideal_size_bytes
    m.degenerate = degeneracy(converted, check_x)
    _backend_metrics(m, cls.default_backend, converted, fp_model, splits, proto, reg, score)
    m.accuracy = m.real_accuracy if m.real_accuracy is not None else m.fakequant_accuracy
    m.compression = m.fp_size_bytes / m.size_bytes if m.size_bytes else None
    m.delta = m.accuracy - base.accuracy
    m.wall_s, m.peak_rss_mb = time.perf_counter() - t_start, peak_rss_mb()
    return m, converted


def _train(quantizer, prepared, splits, proto: Protocol, seed: int, loss_fn, score):
    """QAT with the protocol's budget and the model's loss; with an ``lr_grid`` every method gets the same
    trials, each trained on the training split minus a fixed hold-out and judged on that hold-out by the data
    set's metric (``score``; never on the test set)."""
    from ..training import fit

    budget = proto.qat
    cfg = train_config(budget)
    if len(proto.lr_grid) <= 1:
        if proto.lr_grid:
            cfg = cfg.model_copy(update={"lr": proto.lr_grid[0]})
        fit(quantizer, prepared, splits.train_batches(budget.batch_size, seed, samples=budget.samples), cfg,
            loss_fn=loss_fn)
        return prepared, {"qat_lr": cfg.lr}
    trials = []
    for lr in proto.lr_grid:
        torch.manual_seed(seed)
        trial = copy.deepcopy(prepared)
        fit(quantizer, trial, splits.train_batches(budget.batch_size, seed, holdout=proto.holdout,
                                                    samples=budget.samples),
            cfg.model_copy(update={"lr": lr}), loss_fn=loss_fn)
        trials.append((score(trial, splits.holdout_batches(proto.holdout))["accuracy"], lr, trial))
    best = max(trials, key=lambda t: (t[0], -t[1]))
    return best[2], {"qat_lr": best[1], "lr_trials": {str(lr): acc for acc, lr, _ in trials}}


def _backend_metrics(m: CellMetrics, name: str, converted, fp_model, splits, proto: Protocol, reg, score) -> None:
    """Real-backend accuracy, size and latency (the latter for real-integer backends, against the BN-folded FP
    model in this same process). A backend that cannot run the model is reported, not fatal."""
    m.backend = name
    if name == FakeQuantBackend.name:
        m.size_bytes = FakeQuantBackend().model_size_bytes(converted)
        return
    try:
        backend = reg.get("backend", name)()
        lowered = lower(converted, name, splits.test_x[:1], registry=reg)
        real = score(lowered, splits.test_batches(proto.eval_batch_size))
        m.real_accuracy = real.pop("accuracy")
        m.task_metrics = real  # the row's scores are the real backend's where it runs
        m.size_bytes = backend.model_size_bytes(lowered)
        m.real_integer = bool(backend.real_integer)
        if backend.real_integer and proto.latency:
            folded = fold_batch_norms(fp_model)
            for b in proto.latency_batches:
                m.latency[b] = Latency(**speedup(lowered, folded, splits.test_x[:b]))
    except Exception as e:  # noqa: BLE001 - reported in the row; fake-quant accuracy still stands
        m.backend_error = f"{type(e).__name__}: {e}"
        m.backend = f"{FakeQuantBackend.name} ({name} failed)"
        m.size_bytes = FakeQuantBackend().model_size_bytes(converted)
        m.backend_traceback = traceback.format_exc(limit=3)
