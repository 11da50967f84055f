"""Shared by the time-series transformations: which columns form a series, durations, quality ranks.

Every time-series node works per series. A series is the rows of one tag (the long tag table of
`engine.tags`), or the whole input when there is no tag column. Field names are parameters with the
tag table's names as defaults, so the same nodes work on wide tables too.

Rows whose timestamp is missing or not ISO 8601 cannot be placed on a time axis; they go to the
`rejected` port with a reason instead of being dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl
from pydantic import Field

from engine import paths
from engine.errors import TransformError
from engine.transforms.base import OUT, REJECT_REASON, REJECTED, Transform, TransformConfig
from engine.transforms.common import is_numeric
from engine.transforms.isotime import iso_duration_to_polars, to_utc_datetime

QUALITY_RANK = {"good": 0, "uncertain": 1, "bad": 2}
QUALITY_NAMES = ["good", "uncertain", "bad"]
_POLARS_DURATION = re.compile(r"^(\d+(ns|us|ms|s|m|h|d|w|mo|q|y))+$")
_FIXED_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_PART = re.compile(r"(\d+)(ns|us|ms|s|mo|m|h|d|w|q|y)")
_PARSED = "__aggregator_time"
PER_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


class SeriesConfig(TransformConfig):
    """Fields every time-series node reads; defaults fit `engine.tags.TAG_SCHEMA`."""

    time_field: str = Field("timestamp", description="Timestamp field (a datetime or ISO 8601 text).")
    tag_field: str | None = Field(
        "tag",
        description="Field naming the series (one series per value); null, or the default `tag` when the "
        "input has no such column: the whole input is one series.",
    )
    value_field: str = Field("value", description="Numeric field the node works on.")


def to_polars_duration(text: str, *, fixed: bool = False) -> str:
    """`10s`, `1m`, `1h30m` (Polars) or `PT10S`, `P1D` (ISO 8601) -> Polars' duration language.

    `fixed` refuses calendar units (months, quarters, years), whose length in seconds varies.
    Raises ValueError with what is allowed.
    """
    raw = text.strip()
    offset = iso_duration_to_polars(raw) if raw.upper().startswith("P") else raw
    if not _POLARS_DURATION.match(offset) or (duration_seconds_raw(offset) <= 0 and not _calendar(offset)):
        raise ValueError(
            f"'{text}' is not a positive duration (examples: '10s', '1m', '15m', '1h', '1d', 'PT5M')"
        )
    if fixed and _calendar(offset):
        raise ValueError(f"'{text}' must have a fixed length (use s, m, h, d or w, not mo, q or y)")
    return offset


def _calendar(offset: str) -> bool:
    return any(unit in ("mo", "q", "y") for _, unit in _PART.findall(offset))


def duration_seconds_raw(offset: str) -> float:
    return sum(int(n) * _FIXED_UNITS.get(unit, 0.0) for n, unit in _PART.findall(offset))


def duration_seconds(text: str) -> float:
    """Seconds in a fixed-length duration (`5m` -> 300.0)."""
    return duration_seconds_raw(to_polars_duration(text, fixed=True))


def validated_duration(value: str | None, *, fixed: bool = False) -> str | None:
    """Pydantic field-validator body: the duration as given, once checked (ValueError otherwise)."""
    if value is not None:
        to_polars_duration(value, fixed=fixed)
    return value


@dataclass(frozen=True)
class Series:
    """An input prepared for per-series work: time as UTC datetime, sorted by (tag, time)."""

    frame: pl.LazyFrame  # valid rows, sorted
    rejected: pl.LazyFrame  # rows without a usable timestamp, with REJECT_REASON
    time: str
    tag: str | None
    schema: pl.Schema

    def over(self, expr: pl.Expr) -> pl.Expr:
        """`expr` evaluated per series."""
        return expr.over(self.tag) if self.tag else expr

    @property
    def keys(self) -> list[str]:
        return [self.tag] if self.tag else []

    def outputs(self, out: pl.LazyFrame) -> dict[str, pl.LazyFrame]:
        return {OUT: out, REJECTED: self.rejected}


def prepare(lf: pl.LazyFrame, cfg: SeriesConfig, *, need_value: bool = True) -> Series:
    schema = lf.collect_schema()
    time = _column(cfg.time_field, schema, "time_field")
    as_time = to_utc_datetime(pl.col(time), schema[time])
    if as_time is None:
        raise TransformError(
            f"time_field '{time}' must be a datetime or ISO 8601 text, but it is {schema[time]}",
            param="time_field",
        )
    tag = cfg.tag_field
    if tag is not None and tag not in schema:
        if "tag_field" in cfg.model_fields_set:
            _column(tag, schema, "tag_field")  # raises, naming the field and what exists
        tag = None  # the default `tag` on a wide table: one series
    if need_value:
        value = _column(cfg.value_field, schema, "value_field")
        if not is_numeric(schema[value]):
            raise TransformError(
                f"value_field '{value}' must be numeric, but it is {schema[value]}", param="value_field"
            )
    # rejected rows keep their original timestamp text, so the reject store shows what was wrong
    lf = lf.with_columns(as_time.alias(_PARSED))
    good = pl.col(_PARSED).is_not_null()
    rejected = with_time_reason(lf.filter(~good).drop(_PARSED), time)
    keys = [tag, time] if tag else [time]
    valid = lf.filter(good).with_columns(pl.col(_PARSED).alias(time)).drop(_PARSED)
    frame = valid.sort(keys, nulls_last=True, maintain_order=True)
    return Series(frame, rejected, time, tag, frame.collect_schema())


def with_time_reason(lf: pl.LazyFrame, time: str) -> pl.LazyFrame:
    reason = f"{time} is missing or not an ISO 8601 timestamp"
    return lf.with_columns(pl.lit(reason).alias(REJECT_REASON))


def _column(name: str, schema: pl.Schema, param: str) -> str:
    if name not in schema:
        raise TransformError(paths.missing_field_message(name, schema), param=param)
    return name


def quality_rank(column: str) -> pl.Expr:
    """good 0, uncertain 1, bad 2; any other text counts as uncertain; null stays null."""
    text = pl.col(column).cast(pl.String).str.to_lowercase()
    ranked = text.replace_strict(QUALITY_RANK, default=1, return_dtype=pl.Int8)
    return pl.when(text.is_not_null()).then(ranked)


def quality_name(rank: pl.Expr) -> pl.Expr:
    return rank.replace_strict(
        {i: n for i, n in enumerate(QUALITY_NAMES)}, default=None, return_dtype=pl.String
    )


class SeriesTransform(Transform):
    """Time-series nodes route rows without a timestamp to `rejected`."""

    category = "timeseries"

    def stream_state(self) -> object | None:
        """State carried across a streaming run's micro-batches; None: each micro-batch on its own.

        A node with state also has `apply_stream(frame, state, ctx) -> {port: DataFrame}` and
        `flush_stream(state, ctx) -> {port: DataFrame}` (what is still held when the stream stops)."""
        return None

    def output_ports(self) -> list[str]:
        return [OUT, REJECTED]
