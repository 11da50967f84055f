"""The conditions of `error_handling.alerts[i].condition`, typed.

A condition is written as a short text or as a dict (docs/alerts.md has the grammar):

    pipeline failed                      {"type": "pipeline_failed"}
    pipeline warning                     {"type": "pipeline_warning"}
    source lost > 30s                    {"type": "source_lost", "seconds": 30, "source": "plc"}
    tag Boiler.T > 80 for 10s            {"type": "tag", "tag": "Boiler.T", "op": ">", "value": 80, "for_s": 10}
    tag Boiler.T outside [10, 90] for 5s {"type": "tag", "tag": "Boiler.T", "op": "outside", "low": 10, "high": 90}
    outbox age > 300s                    {"type": "outbox_age", "seconds": 300}
    outbox fill > 80%                    {"type": "outbox_fill", "percent": 80}
    drops > 0                            {"type": "drops"}

`parse_condition` raises `ValueError` with a one-line message saying what is allowed; the spec's
validation puts the JSON path in front (`error_handling.alerts[2].condition: ...`).

Tag thresholds are evaluated on whole batches with Polars (`tag_states`): one expression per rule
over the batch, and per tag only the state at the batch's end (is it beyond? since when?).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # Polars is imported when a tag rule looks at values, not when a rule is parsed
    import polars as pl

GRAMMAR = (
    "'pipeline failed', 'pipeline warning', 'source lost > N s', 'tag NAME OP VALUE [for N s]' "
    "(OP: >, <, >=, <=), 'tag NAME outside [LO, HI] [for N s]', 'outbox age > N s', "
    "'outbox fill > X%' or 'drops > 0' (or the same as a dict with 'type')"
)
OPS = (">=", "<=", ">", "<")


@dataclass(frozen=True)
class PipelineFailed:
    type: Literal["pipeline_failed"] = "pipeline_failed"


@dataclass(frozen=True)
class PipelineWarning:
    type: Literal["pipeline_warning"] = "pipeline_warning"


@dataclass(frozen=True)
class SourceLost:
    seconds: float = 0.0
    source: str | None = None  # a source node; None: any source of the pipeline
    type: Literal["source_lost"] = "source_lost"


@dataclass(frozen=True)
class TagThreshold:
    tag: str  # a tag name, or a glob with '*' / '?'
    op: str  # >, <, >=, <=, outside
    value: float | None = None
    low: float | None = None
    high: float | None = None
    for_s: float = 0.0
    type: Literal["tag"] = "tag"

    def describe(self) -> str:
        if self.op == "outside":
            return f"outside [{num(self.low)}, {num(self.high)}]"
        return f"{self.op} {num(self.value)}"

    def beyond(self) -> pl.Expr:
        """True where `value` is beyond the threshold (a null or NaN value never is)."""
        import polars as pl

        v = pl.col("value").cast(pl.Float64, strict=False).fill_nan(None)  # NaN: no value
        if self.op == "outside":
            expr = (v < self.low) | (v > self.high)
        else:
            expr = {">": v > self.value, "<": v < self.value, ">=": v >= self.value, "<=": v <= self.value}[
                self.op
            ]
        return expr.fill_null(False)

    def matches(self) -> pl.Expr:
        import polars as pl

        if any(c in self.tag for c in "*?"):
            pattern = "^" + re.escape(self.tag).replace(r"\*", ".*").replace(r"\?", ".") + "$"
            return pl.col("tag").str.contains(pattern)
        return pl.col("tag") == self.tag


@dataclass(frozen=True)
class OutboxAge:
    seconds: float
    type: Literal["outbox_age"] = "outbox_age"


@dataclass(frozen=True)
class OutboxFill:
    percent: float
    type: Literal["outbox_fill"] = "outbox_fill"


@dataclass(frozen=True)
class Drops:
    more_than: int = 0
    clear_after_s: float = 60.0  # clears once no record was dropped for this long
    type: Literal["drops"] = "drops"


Condition = PipelineFailed | PipelineWarning | SourceLost | TagThreshold | OutboxAge | OutboxFill | Drops

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_DUR = rf"({_NUM})\s*(ms|s|sec|seconds?|m|min|minutes?|h|hours?)?"
_UNITS = {"ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}


def _seconds(number: str, unit: str | None) -> float:
    unit = (unit or "s").lower()
    scale = _UNITS.get(unit) or _UNITS.get(unit[:3]) or (60.0 if unit.startswith("minute") else None)
    if scale is None:
        scale = 3600.0 if unit.startswith("hour") else 1.0
    return float(number) * scale


_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"(?:pipeline[ _])?failed"), lambda m: PipelineFailed()),
    (re.compile(r"(?:pipeline[ _])?(?:warning|warnings)"), lambda m: PipelineWarning()),
    (
        re.compile(rf"source[ _]lost(?:\s+(?P<src>[A-Za-z_][\w\-]*))?(?:\s*(?:>|for)\s*{_DUR})?"),
        lambda m: SourceLost(_seconds(m.group(2), m.group(3)) if m.group(2) else 0.0, m.group("src")),
    ),
    (
        re.compile(
            rf"tag\s+(?P<tag>\S+)\s+outside\s*\[\s*(?P<lo>{_NUM})\s*,\s*(?P<hi>{_NUM})\s*\](?:\s+for\s+{_DUR})?"
        ),
        lambda m: TagThreshold(
            m.group("tag"),
            "outside",
            low=float(m.group("lo")),
            high=float(m.group("hi")),
            for_s=_seconds(m.group(4), m.group(5)) if m.group(4) else 0.0,
        ),
    ),
    (
        re.compile(rf"tag\s+(?P<tag>\S+)\s*(?P<op>>=|<=|>|<)\s*(?P<v>{_NUM})(?:\s+for\s+{_DUR})?"),
        lambda m: TagThreshold(
            m.group("tag"),
            m.group("op"),
            value=float(m.group("v")),
            for_s=_seconds(m.group(4), m.group(5)) if m.group(4) else 0.0,
        ),
    ),
    (re.compile(rf"outbox[ _]age\s*>\s*{_DUR}"), lambda m: OutboxAge(_seconds(m.group(1), m.group(2)))),
    (re.compile(rf"outbox[ _]fill\s*>\s*({_NUM})\s*%?"), lambda m: OutboxFill(float(m.group(1)))),
    (re.compile(r"drops\s*>\s*(\d+)"), lambda m: Drops(int(m.group(1)))),
]


def _parse_text(text: str) -> Condition:
    cleaned = " ".join(text.split())
    for pattern, make in _PATTERNS:
        m = pattern.fullmatch(cleaned) or pattern.fullmatch(cleaned.lower())
        if m:
            return make(m)
    raise ValueError(f"unknown condition {text!r} (allowed: {GRAMMAR})")


def _num(d: dict[str, Any], key: str, default: Any = ...) -> Any:
    if key not in d:
        if default is ...:
            raise ValueError(f"'{key}' is missing (allowed: {GRAMMAR})")
        return default
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{key}' must be a number, not {value!r}")
    return float(value)


def _parse_dict(d: dict[str, Any]) -> Condition:
    kind = str(d.get("type", ""))
    allowed_keys = {
        "pipeline_failed": set(),
        "pipeline_warning": set(),
        "source_lost": {"seconds", "source"},
        "tag": {"tag", "op", "value", "low", "high", "for_s"},
        "outbox_age": {"seconds"},
        "outbox_fill": {"percent"},
        "drops": {"more_than", "clear_after_s"},
    }
    if kind not in allowed_keys:
        raise ValueError(f"unknown condition type {kind!r} (allowed: {', '.join(allowed_keys)})")
    extra = set(d) - allowed_keys[kind] - {"type"}
    if extra:
        raise ValueError(
            f"'{sorted(extra)[0]}' is not a field of a {kind} condition"
            f" (allowed: {', '.join(sorted(allowed_keys[kind])) or 'type only'})"
        )
    if kind == "pipeline_failed":
        return PipelineFailed()
    if kind == "pipeline_warning":
        return PipelineWarning()
    if kind == "source_lost":
        src = d.get("source")
        return SourceLost(_num(d, "seconds", 0.0), str(src) if src is not None else None)
    if kind == "outbox_age":
        return OutboxAge(_num(d, "seconds"))
    if kind == "outbox_fill":
        return OutboxFill(_num(d, "percent"))
    if kind == "drops":
        return Drops(int(_num(d, "more_than", 0)), _num(d, "clear_after_s", 60.0))
    tag, op = d.get("tag"), d.get("op")
    if not isinstance(tag, str) or not tag:
        raise ValueError("'tag' must name a tag (or a glob such as 'Boiler.*')")
    if op not in (*OPS, "outside"):
        raise ValueError(f"'op' {op!r} is not allowed (allowed: >, <, >=, <=, outside)")
    if op == "outside":
        low, high = _num(d, "low"), _num(d, "high")
        if low > high:
            raise ValueError(f"'low' ({low:g}) is above 'high' ({high:g})")
        return TagThreshold(tag, op, low=low, high=high, for_s=_num(d, "for_s", 0.0))
    return TagThreshold(tag, op, value=_num(d, "value"), for_s=_num(d, "for_s", 0.0))


def parse_condition(condition: str | dict[str, Any]) -> Condition:
    """The typed condition of a spec's `condition` (text or dict); ValueError in one line."""
    if isinstance(condition, dict):
        parsed = _parse_dict(condition)
    elif isinstance(condition, str):
        parsed = _parse_text(condition)
    else:
        raise ValueError(f"a condition is a text or a dict, not {type(condition).__name__}")
    for name in ("seconds", "for_s", "percent", "clear_after_s"):
        value = getattr(parsed, name, None)
        if value is not None and value < 0:
            raise ValueError(f"'{name}' must not be negative")
    if isinstance(parsed, TagThreshold) and parsed.op == "outside" and parsed.low > parsed.high:
        raise ValueError(f"'low' ({parsed.low:g}) is above 'high' ({parsed.high:g})")
    return parsed


def num(x: float) -> str:
    """A number as its shortest exact text (80.0 -> '80', 0.125 -> '0.125')."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def describe(condition: Condition) -> str:
    """The condition as one line of text (its canonical text form)."""
    if isinstance(condition, PipelineFailed):
        return "pipeline failed"
    if isinstance(condition, PipelineWarning):
        return "pipeline warning"
    if isinstance(condition, SourceLost):
        who = f" {condition.source}" if condition.source else ""
        return f"source lost{who} > {num(condition.seconds)}s"
    if isinstance(condition, TagThreshold):
        tail = f" for {num(condition.for_s)}s" if condition.for_s else ""
        return f"tag {condition.tag} {condition.describe()}{tail}"
    if isinstance(condition, OutboxAge):
        return f"outbox age > {num(condition.seconds)}s"
    if isinstance(condition, OutboxFill):
        return f"outbox fill > {num(condition.percent)}%"
    return f"drops > {condition.more_than}"


# ---- tag thresholds over a batch ---------------------------------------------------------------
def tag_states(batch: pl.DataFrame, rule: TagThreshold) -> pl.DataFrame:
    """Per tag of `batch` that `rule` names: the state at the batch's end, vectorised.

    Columns: tag, beyond (the last value is beyond the threshold), last_ts_us, run_start_us (the
    first timestamp of the batch's final run of equal `beyond` values), whole_run (that run began
    at the batch's first row: a `since` carried from an earlier batch still holds), last_value.
    """
    import polars as pl

    if batch.height == 0 or "tag" not in batch.columns or "value" not in batch.columns:
        return pl.DataFrame(
            schema={
                "tag": pl.String,
                "beyond": pl.Boolean,
                "last_ts_us": pl.Int64,
                "run_start_us": pl.Int64,
                "whole_run": pl.Boolean,
                "last_value": pl.Float64,
            }
        )
    ts = pl.col("timestamp").dt.epoch("us") if "timestamp" in batch.columns else pl.int_range(pl.len())
    rows = batch.select(
        pl.col("tag"),
        ts.alias("ts"),
        rule.beyond().alias("beyond"),
        pl.col("value").cast(pl.Float64, strict=False).alias("v"),
    ).filter(rule.matches())
    # Per tag, in one pass and in any row order: the newest row's state, and when the final run of
    # that state began (the first timestamp after the newest row of the other state).
    newest = pl.col("ts").arg_max()
    last_beyond = pl.col("beyond").get(newest)
    other = pl.col("ts").filter(pl.col("beyond") != last_beyond).max()
    return rows.group_by("tag", maintain_order=True).agg(
        last_beyond.alias("beyond"),
        pl.col("ts").max().alias("last_ts_us"),
        pl.coalesce(pl.col("ts").filter(pl.col("ts") > other).min(), pl.col("ts").min()).alias(
            "run_start_us"
        ),
        other.is_null().alias("whole_run"),
        pl.col("v").get(newest).alias("last_value"),
    )
