"""Suite files (TOML): which methods, models, bit settings and seeds a benchmark runs, under which protocol.

A suite is validated completely (pydantic, then names against the registry) before any cell runs. Format::

    name = "quick"
    description = "..."
    seeds = [0]

    [protocol]                  # quantzoo.bench.Protocol: shared by every method
    calibration_samples = 512
    first_layer = "int8"        # fp | int8 | same | method
    last_layer = "int8"
    bn_fold = "method"          # method | before
    [protocol.qat]              # the one QAT budget
    epochs = 1
    lr = 1e-4

    [[targets]]                 # model/data set pairs; each gets an FP32 row per seed
    model = "cnn"
    dataset = "digits"
    baseline = { epochs = 8 }   # optional: the FP recipe (default: quantzoo.bench.DEFAULT_BASELINES)
    paper_fp = 99.41            # optional: published FP accuracy printed beside ours
    rank = true                 # optional: false = shown on the leaderboard but not used to rank

    [[entries]]                 # method rows
    methods = ["*"]             # fnmatch patterns over installed quantizers
    exclude = []
    models = ["*"]              # patterns over "model" or "model/dataset" of the targets
    bits = ["W8A8", "W4A4"]     # WnAm; A32 (or "Wn") = float activations; "default" = method defaults
    modes = ["auto"]            # ptq | qat | auto (ptq where supported, else qat)
    config = {}                 # overrides merged into config_for_bits(w, a)
    config_file = "x.yaml"      # instead of bits: a method config file (JSON/YAML/TOML, Distiller/NNI formats)
    note = "why"                # optional: shown beside these rows (an anchor quirk, a known bug)
    protocol = {}               # per-entry protocol fields, e.g. a section's QAT budget (recorded in each row)
    paper = { accuracy = 99.35, source = "TWN (Li & Liu 2016), Table 2" }

    [budget_check]              # optional: QAT cells again at factor x the epochs; the leaderboard reports
    factor = 2                  # each row's mean shift (goal: at most 0.5 points) and ranks on the main
    targets = ["cnn1d"]         # cells only
    bits = ["W4A4", "W2A2"]
    seeds = [0]

    [[trends]]                  # optional: a published ordering, checked on every rendering (bench/trends.py)
    claim = "RTN < GPTQ"        # each row of `order` should be at least as good as the one before it
    order = ["uniform", { method = "gptq", config = { group_size = 128 } }]  # a method, or a table naming
    bits = ["W3A32"]            # its mode/config part where the method has several rows at the setting
    targets = ["cnn1d/mnist1d"]
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError, UnknownNameError, UnsupportedError
from ..quantizer import format_validation_error
from .cell import FP_METHOD, Cell, parse_bits
from .configs import deep_merge
from .protocol import Budget, Protocol
from .trends import Trend

#: Built-in suites ship inside the package (symlinks to benchmarks/suites/ in the repository, copied into
#: wheels); in a checkout, ``benchmarks/suites/*.toml`` is the place to edit and add suites.
SUITES_DIR = Path(__file__).resolve().parent / "suites"
REPO_SUITES_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "suites"


class Paper(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accuracy: float = Field(ge=0, le=100)
    source: str = ""


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    dataset: str
    baseline: Budget | None = None
    paper_fp: float | None = Field(None, ge=0, le=100)
    paper_source: str = ""
    seeds: list[int] | None = Field(None, min_length=1)  # overrides the suite's seeds (e.g. fewer on MNIST)
    #: Whether the leaderboard ranks on this target (a smoke target whose intervals cannot separate methods,
    #: such as digits' 360 test images, is shown but does not rank).
    rank: bool = True

    @property
    def name(self) -> str:
        return f"{self.model}/{self.dataset}"


class SuiteEntry(BaseModel):
    """One [[entries]] table of a suite: which methods, models, bits and modes get rows."""

    model_config = ConfigDict(extra="forbid")
    methods: list[str] = ["*"]
    exclude: list[str] = []
    models: list[str] = ["*"]
    bits: list[str] | None = None  # default ["W8A8"]; with config_file: the file's own widths ("default")
    modes: list[str] = ["auto"]
    config: dict = {}
    #: A method config file (JSON/YAML/TOML or the method's own format, e.g. a Distiller schedule or an NNI
    #: config_list), relative to the suite file; it replaces config_for_bits, ``config`` still overrides it.
    config_file: str | None = None
    protocol: dict = {}
    paper: Paper | None = None
    seeds: list[int] | None = Field(None, min_length=1)  # overrides the target's/suite's seeds
    #: why these rows look the way they do (an anchor quirk, a known bug): shown in the leaderboard's notes,
    #: also for cells an earlier entry already planned
    note: str | None = None

    @field_validator("methods", "exclude", "models", mode="before")
    @classmethod
    def _listify(cls, v):
        return [v] if isinstance(v, str) else v

    @field_validator("bits")
    @classmethod
    def _bits(cls, v):
        for b in v or ():
            parse_bits(b)
        return v

    @model_validator(mode="after")
    def _bits_default(self):
        if self.config_file and self.bits not in (None, ["default"]):
            raise ValueError("an entry with config_file takes its widths from the file: leave 'bits' out")
        if self.bits is None:
            self.bits = ["default"] if self.config_file else ["W8A8"]
        return self

    @field_validator("modes")
    @classmethod
    def _modes(cls, v):
        bad = [m for m in v if m not in ("ptq", "qat", "auto")]
        if bad:
            raise ValueError(f"modes {bad} are not ptq, qat or auto")
        return v


class BudgetCheck(BaseModel):
    """Re-run the QAT cells at ``factor`` x the epochs to show the budget has converged
    (docs/benchmark-protocol.md, "Budgets"): the leaderboard reports each row's mean shift, never ranks them."""

    model_config = ConfigDict(extra="forbid")
    factor: float = Field(2.0, gt=1)
    targets: list[str] = ["*"]  # model or model/dataset patterns
    bits: list[str] = ["*"]  # W/A labels (W4A4, W2A32, ...), fnmatch patterns
    seeds: list[int] | None = None  # None: every seed of the checked cells


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    seeds: list[int] = Field([0], min_length=1)
    jobs: int = Field(1, ge=1)  # default parallel cells when the CLI does not say (--jobs)
    protocol: Protocol = Protocol()
    targets: list[Target] = Field(min_length=1)
    entries: list[SuiteEntry] = []
    budget_check: BudgetCheck | None = None
    trends: list[Trend] = []  # published orderings checked on every rendering (quantzoo.bench.trends)
    source: str | None = None  # the file it came from (set by load_suite)

    @model_validator(mode="after")
    def _trend_targets(self):
        names = [t.name for t in self.targets]
        for i, trend in enumerate(self.trends):
            unknown = [t for t in trend.targets if t not in names]
            if unknown:
                raise ValueError(f"trends[{i}] ({trend.claim!r}): {unknown} are not targets of the suite; its "
                                 f"targets: {', '.join(names)}")
        return self


def builtin_suites() -> dict[str, Path]:
    """Suite names → files: ``benchmarks/suites/*.toml`` of a checkout, else those shipped in the package."""
    found = {p.stem: p for p in sorted(SUITES_DIR.glob("*.toml")) if p.is_file()}
    found.update({p.stem: p for p in sorted(REPO_SUITES_DIR.glob("*.toml"))})
    return dict(sorted(found.items()))


def find_suite(name_or_path: str | os.PathLike) -> Path:
    """A suite file by path, or by built-in name (``quick``, ``standard``, ``paper``)."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists() or os.sep in str(name_or_path):
        if not p.is_file():
            raise ConfigError(f"suite file {p} does not exist")
        return p
    suites = builtin_suites()
    if str(name_or_path) in suites:
        return suites[str(name_or_path)]
    raise ConfigError(f"unknown suite {str(name_or_path)!r}; built-in suites: {', '.join(suites) or '(none)'}, "
                      "or give the path of a .toml file")


def load_suite(name_or_path: str | os.PathLike) -> Suite:
    """Parse and validate a suite (schema, then model/data-set names against the registry)."""
    path = find_suite(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"suite {path}: invalid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"suite {path}: cannot read it as a UTF-8 TOML file ({e})") from None
    data.setdefault("name", path.stem)
    try:
        suite = Suite.model_validate({**data, "source": str(path)})
    except ValidationError as e:
        raise ConfigError(format_validation_error(f"suite {path}", e)) from None
    check_suite(suite)
    return suite


def check_suite(suite: Suite) -> None:
    """Names that must exist: every target's model and data set, and that the model fits the data set."""
    from ..registry import get_registry

    reg = get_registry()
    for i, t in enumerate(suite.targets):
        where = f"suite {suite.source or suite.name}: targets[{i}]"
        try:
            m, d = reg.get("model", t.model), reg.get("dataset", t.dataset)
        except UnknownNameError as e:
            raise ConfigError(f"{where}: {e}") from None
        if d.name not in m.datasets:
            raise ConfigError(f"{where}: model {m.name!r} does not fit data set {d.name!r} (it fits "
                              f"{', '.join(m.datasets)})")
    for i, e in enumerate(suite.entries):
        if e.protocol:
            try:
                Protocol.model_validate(deep_merge(suite.protocol.model_dump(mode="json"), e.protocol))
            except ValidationError as err:
                where = f"suite {suite.source}: entries[{i}].protocol"
                raise ConfigError(format_validation_error(where, err)) from None


def rank_targets(suite: Suite) -> set[str]:
    """The ``model/dataset`` names the leaderboard may rank on."""
    return {t.name for t in suite.targets if t.rank}


@dataclass
class Plan:
    """The cells of a suite (FP rows first), and what was left out and why."""

    suite: Suite
    cells: list[Cell] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # method patterns that matched no installed method
    notes: dict[str, str] = field(default_factory=dict)  # cell key -> the note of the entries that plan it


def _matches(name: str, patterns) -> bool:
    return any(fnmatchcase(name.lower(), p.lower()) for p in patterns)


def _model_modules(model: str, dataset: str) -> set[str]:
    from .data import build_model

    return {type(m).__name__ for m in build_model(model, dataset).modules()}


def plan_suite(suite: Suite, *, methods: str | None = None, models: str | None = None,
               data_root: str | None = None) -> Plan:
    """Expand a suite into cells. ``methods``/``models``: extra comma-separated fnmatch filters (CLI).

    A method gets a row for a bit setting when its ``capabilities`` allow the widths and its
    ``config_for_bits`` returns a config; otherwise the (method, bits) pair is listed in ``skipped``. A config
    override that the method rejects is an error (raised here, before anything runs).
    """
    from ..registry import get_registry
    from .run import make_cell

    reg = get_registry()
    mfilter = [p.strip() for p in methods.split(",")] if methods else None
    tfilter = [p.strip() for p in models.split(",")] if models else None
    targets = [t for t in suite.targets
               if tfilter is None or _matches(t.model, tfilter) or _matches(t.name, tfilter)]
    plan = Plan(suite)
    seen: set[str] = set()

    def add(cell: Cell) -> None:
        if cell.key not in seen:
            seen.add(cell.key)
            plan.cells.append(cell)

    for t in targets:
        for seed in t.seeds or suite.seeds:
            add(make_cell(FP_METHOD, t.model, t.dataset, seed=seed, protocol=suite.protocol, baseline=t.baseline,
                          data_root=data_root,
                          paper={"accuracy": t.paper_fp, "source": t.paper_source} if t.paper_fp else None))
    modules = {t.name: _model_modules(t.model, t.dataset) for t in targets}
    installed = reg.names("quantizer")
    for i, entry in enumerate(suite.entries):
        names = [n for n in installed if _matches(n, entry.methods) and not _matches(n, entry.exclude)
                 and (mfilter is None or _matches(n, mfilter))]
        if not names and mfilter is None:
            plan.unmatched.append(f"entries[{i}].methods={entry.methods}{_suggest(entry.methods, installed)}")
        proto = (Protocol.model_validate(deep_merge(suite.protocol.model_dump(mode="json"), entry.protocol))
                 if entry.protocol else suite.protocol)
        for name in names:
            cls = reg.get("quantizer", name)
            caps = cls.capabilities
            config = entry.config
            if entry.config_file:
                config = _config_from_file(suite, i, entry, cls)
            for t in targets:
                if not (_matches(t.model, entry.models) or _matches(t.name, entry.models)):
                    continue
                if not set(caps.module_types) & modules[t.name]:
                    plan.skipped.append((f"{name} {t.name}", f"quantizes {', '.join(caps.module_types)}; "
                                                             "the model has none"))
                    continue
                for bits in entry.bits:
                    w, a = parse_bits(bits)
                    if w is not None and not caps.supports(w, a):
                        plan.skipped.append((f"{name} {bits} {t.name}", "outside the method's capabilities"))
                        continue
                    for mode in _modes(entry.modes, caps):
                        for seed in entry.seeds or t.seeds or suite.seeds:
                            try:
                                cell = make_cell(name, t.model, t.dataset, w, a, seed, config, mode=mode,
                                                 protocol=proto, baseline=t.baseline, data_root=data_root,
                                                 paper=entry.paper.model_dump() if entry.paper else None)
                            except UnsupportedError as e:
                                plan.skipped.append((f"{name}[{mode}] {bits} {t.name}", str(e)))
                                break
                            except ConfigError as e:
                                raise ConfigError(f"suite {suite.source or suite.name}: entries[{i}] ({name}): "
                                                  f"{e}") from None
                            add(cell)
                            if entry.note:
                                plan.notes[cell.key] = entry.note
    if suite.budget_check:
        for cell in _budget_check_cells(suite.budget_check, plan.cells):
            add(cell)
    return plan


def _budget_check_cells(check: BudgetCheck, cells: list[Cell]) -> list[Cell]:
    """Twins of the QAT cells on the checked targets/seeds with ``factor`` x the epochs (``check_of`` set)."""
    out = []
    for c in cells:
        if c.mode != "qat" or not (_matches(c.model, check.targets) or _matches(f"{c.model}/{c.dataset}",
                                                                                 check.targets)):
            continue
        if (check.seeds is not None and c.seed not in check.seeds) or not _matches(c.bits_label, check.bits):
            continue
        proto = Protocol.model_validate(c.protocol)
        longer = proto.model_copy(update={"qat": proto.qat.model_copy(
            update={"epochs": max(1, round(proto.qat.epochs * check.factor))})})
        out.append(dataclasses.replace(c, protocol=longer.model_dump(mode="json"), check_of=c.key))
    return out


def _suggest(patterns: list[str], installed: list[str]) -> str:
    """`` (did you mean: uniform?)`` for plain names close to an installed method (a typo, not a missing plugin)."""
    import difflib

    close = sorted({c for p in patterns if not any(ch in p for ch in "*?[")
                    for c in difflib.get_close_matches(p.lower(), installed, n=2, cutoff=0.75)})
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def _config_from_file(suite: Suite, i: int, entry: SuiteEntry, cls):
    from .configs import load_method_config

    base = Path(suite.source).parent if suite.source else Path.cwd()
    path = Path(entry.config_file).expanduser()
    path = path if path.is_absolute() else base / path
    try:
        cfg = load_method_config(path, cls)
        return cls.make_config(deep_merge(cfg.model_dump(), entry.config)) if entry.config else cfg
    except ConfigError as e:
        raise ConfigError(f"suite {suite.source or suite.name}: entries[{i}].config_file ({cls.name}): {e}") from None


def _modes(modes: list[str], caps) -> list[str]:
    out = []
    for m in modes:
        m = ("ptq" if caps.ptq else "qat") if m == "auto" else m
        if ((m == "ptq" and caps.ptq) or (m == "qat" and caps.qat)) and m not in out:
            out.append(m)
    return out
