"""Published orderings a suite checks on every rendering ("min-max < bias correction < AdaRound", "RTN < GPTQ").

A suite's ``[[trends]]`` table names rows from the one expected worst to the one expected best. Each adjacent
pair is compared, per W/A setting and target, on the paired per-seed accuracy difference (seed ``s`` of every
row shares the FP checkpoint and the calibration samples, :mod:`quantzoo.bench.stats`), and gets a verdict:

- ``ahead``: the 95% interval of the mean difference lies above 0 (the paper's ordering, significantly);
- ``ahead within noise``: mean ≥ 0, the interval contains 0;
- ``behind within noise``: mean < 0, the interval contains 0;
- ``behind``: the interval lies below 0 (the ordering is reversed here).

A trend holds within noise where no pair is ``behind``. docs/benchmark-protocol.md ("Trends") says more.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .cell import bits_label, parse_bits
from .configs import flatten
from .stats import Summary


class RowRef(BaseModel):
    """A leaderboard row by method, optionally mode and a part of its config (``{p = 0.0}``) that tells it
    apart from the method's other rows at the same setting."""

    model_config = ConfigDict(extra="forbid")
    method: str
    mode: Literal["ptq", "qat"] | None = None
    config: dict = {}
    label: str | None = None  # how the trend table names the row (default: method, mode and config)

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        extra = ", ".join(f"{k}={v}" for k, v in flatten(self.config).items())
        return self.method + (f" ({self.mode})" if self.mode else "") + (f" [{extra}]" if extra else "")

    def matches(self, rec: dict) -> bool:
        return (rec["method"] == self.method and (self.mode is None or rec["mode"] == self.mode)
                and _contains(rec.get("config") or {}, self.config))


class Trend(BaseModel):
    """One ``[[trends]]`` table of a suite."""

    model_config = ConfigDict(extra="forbid")
    claim: str  # the published statement, as the table's title
    source: str = ""  # where it is published
    order: list[RowRef] = Field(min_length=2)  # expected worst first
    bits: list[str] = Field(min_length=1)  # W/A labels: W4A4, W3A32, ...
    targets: list[str] = Field(min_length=1)  # model/dataset

    @field_validator("order", mode="before")
    @classmethod
    def _refs(cls, v):
        return [{"method": r} if isinstance(r, str) else r for r in v]

    @field_validator("bits")
    @classmethod
    def _bits(cls, v):
        return [bits_label(*parse_bits(b), "ptq") for b in v]


def _contains(config: dict, part: dict) -> bool:
    """Whether ``part`` (nested) agrees with ``config`` on every key it names."""
    return all(k in config and (_contains(config[k], v) if isinstance(v, dict) and isinstance(config[k], dict)
                                else config[k] == v) for k, v in part.items())


def verdict(diff: Summary) -> str | None:
    """The verdict of a paired difference (upper row minus lower row); None without an interval (one seed)."""
    if diff.ci95 is None:
        return None
    if diff.mean - diff.ci95 > 0:
        return "ahead"
    if diff.mean + diff.ci95 < 0:
        return "behind"
    return "ahead within noise" if diff.mean >= 0 else "behind within noise"


def _pick(ref: RowRef, bits: str, target: str, records: list[dict]) -> tuple[dict | None, str | None]:
    found = [r for r in records if r["bits"] == bits and r["target"] == target and ref.matches(r)]
    if not found:
        return None, f"no {ref.name} row at {bits} on {target}"
    if len(found) > 1:
        return None, (f"{ref.name} matches {len(found)} rows at {bits} on {target}: name more of its config "
                      "in the trend")
    if not found[0]["per_seed"]:
        return None, f"{ref.name} has no finished seed at {bits} on {target}"
    return found[0], None


def evaluate(trends: list[Trend], records: list[dict]) -> list[dict]:
    """One entry per (trend, setting, target): its pairs with the paired difference, interval and verdict."""
    mains = [r for r in records if not r["check_of"]]
    out = []
    for trend in trends:
        for bits in trend.bits:
            for target in trend.targets:
                picked = [_pick(ref, bits, target, mains) for ref in trend.order]
                pairs = []
                for (lo_ref, hi_ref), ((lo, lo_why), (hi, hi_why)) in zip(
                        zip(trend.order, trend.order[1:]), zip(picked, picked[1:])):
                    pair = {"lower": lo_ref.name, "upper": hi_ref.name}
                    seeds = sorted(set(lo["per_seed"]) & set(hi["per_seed"])) if lo and hi else []
                    if not seeds:
                        pair["missing"] = lo_why or hi_why or "no seed in common"
                    else:
                        diff = Summary.of([hi["per_seed"][s]["accuracy"] - lo["per_seed"][s]["accuracy"]
                                           for s in seeds])
                        pair.update(lower_accuracy=lo["accuracy"], upper_accuracy=hi["accuracy"],
                                    difference=diff.mean, ci95=diff.ci95, seeds=seeds, verdict=verdict(diff))
                    pairs.append(pair)
                complete = all("missing" not in p and p["verdict"] for p in pairs)
                out.append({"claim": trend.claim, "source": trend.source, "bits": bits, "target": target,
                            "pairs": pairs,
                            "holds": (not any(p["verdict"] == "behind" for p in pairs)) if complete else None,
                            "significant": all(p["verdict"] == "ahead" for p in pairs) if complete else None})
    return out


def trend_tables(results: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """One (title, header, rows) per claim, in the suite's order: a line per compared pair, the outcome of the
    trend on each setting and target beside its first pair."""
    header = ["setting", "target", "pair (expected worse < better)", "better − worse", "seeds", "verdict",
              "trend"]
    tables: dict[str, tuple[str, list[str], list[list[str]]]] = {}
    for res in results:
        title = res["claim"] + (f" ({res['source']})" if res["source"] else "")
        rows = tables.setdefault(res["claim"], (title, header, []))[2]
        for i, p in enumerate(res["pairs"]):
            if "missing" in p:
                diff, seeds, word = "", "", f"missing: {p['missing']}"
            else:
                diff = f"{p['difference']:+.2f}" + (f" ±{p['ci95']:.2f}" if p["ci95"] is not None else "")
                seeds, word = str(len(p["seeds"])), p["verdict"] or "one seed: no interval"
            rows.append([res["bits"], res["target"],
                         f"{p['lower']} ({_acc(p, 'lower')}) < {p['upper']} ({_acc(p, 'upper')})", diff, seeds,
                         word, _outcome(res) if i == 0 else ""])
    return list(tables.values())


def _acc(pair: dict, side: str) -> str:
    v = pair.get(f"{side}_accuracy")
    return "-" if v is None else f"{v:.2f}"


def _outcome(res: dict) -> str:
    if res["holds"] is None:
        return "incomplete"
    if not res["holds"]:
        return "does not hold"
    return "holds" if res["significant"] else "holds within noise"
