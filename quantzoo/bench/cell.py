"""`Cell`: one result row of a benchmark, a method at one W/A setting on one (model, data set, seed) under the
protocol. It is plain data (it travels to pool workers and Ray tasks as a dict); :mod:`quantzoo.bench.run`
runs it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .protocol import Protocol, hash_of

FP_METHOD = "fp32"


@dataclass(frozen=True)
class Cell:
    """Everything that determines one result row (JSON-serialisable, so it travels to workers as a dict)."""

    method: str
    model: str
    dataset: str
    seed: int
    w_bits: int | None  # None: float (the FP row)
    a_bits: int | None  # None: float activations
    mode: str  # "ptq", "qat" or "fp" (the baseline row)
    config: dict = field(default_factory=dict)  # the method's full, validated config (model_dump, JSON mode)
    config_version: int = 1
    protocol: dict = field(default_factory=dict)  # Protocol.model_dump(mode="json")
    baseline: dict = field(default_factory=dict)  # Budget.model_dump(mode="json")
    #: versions of quantzoo and of the method's plugin distribution: part of the key, so that a release
    #: that changes a method's results recomputes its cells instead of reusing the old rows
    code: dict = field(default_factory=dict)
    #: the hardware scheme the method follows (the protocol's), "own: <why>" where it cannot, None: the method's
    scheme: str | None = None
    #: the key of the cell this one re-runs at a longer QAT budget (the suite's budget check); None: a result row
    check_of: str | None = None
    data_root: str | None = None  # where the data lies: not part of the key
    paper: dict | None = None  # the published number to print beside ours: not part of the key

    def identity(self) -> dict:
        proto = Protocol.model_validate(self.protocol).semantic()
        return {"method": self.method, "model": self.model, "dataset": self.dataset, "seed": self.seed,
                "w_bits": self.w_bits, "a_bits": self.a_bits, "mode": self.mode, "config": self.config,
                "config_version": self.config_version, "protocol": proto, "baseline": self.baseline,
                "code": self.code, "scheme": self.scheme, **({"check_of": self.check_of} if self.check_of else {})}

    @property
    def key(self) -> str:
        """sha256 of the full configuration: the primary key of the results database."""
        return hash_of(self.identity())

    @property
    def config_hash(self) -> str:
        return hash_of({"method": self.method, "version": self.config_version, "config": self.config})

    @property
    def bits_label(self) -> str:
        return bits_label(self.w_bits, self.a_bits, self.mode)

    @property
    def label(self) -> str:
        return f"{self.method}[{self.mode}] {self.bits_label} {self.model}/{self.dataset} seed {self.seed}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        return cls(**d)


def bits_label(w_bits: int | None, a_bits: int | None, mode: str) -> str:
    """``W4A4``; ``W2A32`` for float activations (the papers' spelling); ``FP32`` for the baseline row."""
    if mode == "fp":
        return "FP32"
    return f"W{w_bits}A{32 if a_bits is None else a_bits}"
