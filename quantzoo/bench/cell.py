"""`Cell`: one result row of a benchmark, a method at one W/A setting on one (model, data set, seed) under the
protocol. It is plain data (it travels to pool workers and Ray tasks as a dict); :mod:`quantzoo.bench.run`
runs it."""

from __future__ import annotations

import re
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


_BITS = re.compile(r"^W(\d+)(?:A(\d+))?$", re.IGNORECASE)


def parse_bits(text: str) -> tuple[int | None, int | None]:
    """``"W4A8"`` → (4, 8); ``"W2"``/``"W2A32"`` → (2, None) (float activations); ``"default"`` → (None, None)."""
    if str(text).lower() == "default":
        return None, None
    m = _BITS.match(str(text).strip())
    if not m:
        raise ValueError(f"bits {text!r} is not of the form W<n>A<m> (e.g. W8A8, W2A32, W1A1) or 'default'")
    w, a = int(m.group(1)), int(m.group(2)) if m.group(2) else 32
    if not 1 <= w <= 16 or not (1 <= a <= 16 or a == 32):
        raise ValueError(f"bits {text!r}: weight widths lie in 1..16, activation widths in 1..16 or 32 (float)")
    return w, (None if a == 32 else a)
