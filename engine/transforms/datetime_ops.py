"""`date_time`: parse, format, truncate, convert, shift and subtract timestamps.

A text field is read as ISO 8601 by every operation except `parse` (which uses `format`). Naive
timestamps are taken as UTC. Results of parse, truncate and add are UTC timestamps (or dates, for a
date-only parse format or a Date field); `to_timezone` gives a timestamp in that zone; `format` gives
text; `diff` gives a float in `unit`.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Literal

import polars as pl
from pydantic import Field, model_validator

from engine import paths
from engine.context import NodeContext
from engine.errors import TransformError
from engine.transforms.base import OUT, Transform, TransformConfig
from engine.transforms.common import config_error, field, is_text
from engine.transforms.isotime import iso_duration_to_polars, to_utc_datetime
from engine.transforms.registry import register

_UNIT_NAMES = {
    "second": "1s",
    "minute": "1m",
    "hour": "1h",
    "day": "1d",
    "week": "1w",
    "month": "1mo",
    "quarter": "1q",
    "year": "1y",
}
_EVERY = re.compile(r"^(\d+(ns|us|ms|s|m|h|d|w|mo|q|y))+$")
_TIME_CODES = re.compile(r"%[HIMSfpTRrXcsZz:.+]")
_SECONDS_PER = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
_REQUIRED = {
    "parse": "format",
    "format": "format",
    "truncate": "unit",
    "to_timezone": "timezone",
    "add": "duration",
    "diff": "other_field",
}


class DateTimeConfig(TransformConfig):
    type: Literal["date_time"] = "date_time"
    field_name: str = Field(description="Timestamp field (or ISO 8601 text).")
    operation: Literal["parse", "format", "truncate", "to_timezone", "add", "diff"] = Field(
        description="parse text with format; format as text; truncate to unit; convert to timezone; "
        "add an ISO 8601 duration; diff with other_field."
    )
    format: str | None = Field(None, description="parse/format: strftime codes, e.g. `%d/%m/%Y %H:%M`.")
    unit: str | None = Field(
        None,
        description="truncate: second, minute, hour, day, week, month, quarter, year or a count like "
        "`15m`, `1h`, `1d`, `1mo`; diff: seconds, minutes, hours or days.",
    )
    timezone: str | None = Field(None, description="to_timezone: an IANA zone, e.g. `Europe/Berlin`.")
    duration: str | None = Field(None, description="add: ISO 8601 duration, e.g. `PT15M`, `P1DT2H`, `-P1D`.")
    other_field: str | None = Field(
        None, description="diff: the timestamp subtracted (field_name - other_field)."
    )
    output_field: str | None = Field(None, description="Field written (default: field_name).")

    @model_validator(mode="after")
    def _check(self) -> DateTimeConfig:
        name, op = type(self).__name__, self.operation
        required = _REQUIRED[op]
        if getattr(self, required) is None:
            raise config_error(name, (required,), f"operation '{op}' needs {required}")
        if op == "truncate":
            self._truncate_every()
        if op == "diff" and (self.unit or "seconds") not in _SECONDS_PER:
            raise config_error(
                name, ("unit",), f"diff unit must be one of: {', '.join(_SECONDS_PER)}", self.unit
            )
        if op == "to_timezone":
            try:
                zoneinfo.ZoneInfo(self.timezone or "")
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise config_error(
                    name,
                    ("timezone",),
                    "unknown time zone (use an IANA name such as Europe/Berlin)",
                    self.timezone,
                ) from None
        if op == "add":
            try:
                iso_duration_to_polars(self.duration or "")
            except ValueError as exc:
                raise config_error(name, ("duration",), str(exc), self.duration) from None
        return self

    def _truncate_every(self) -> str:
        unit = (self.unit or "").strip().lower()
        every = _UNIT_NAMES.get(unit, unit)
        if not _EVERY.match(every):
            allowed = ", ".join(_UNIT_NAMES) + " or a count such as 15m, 1h, 1d, 1mo"
            raise config_error(
                type(self).__name__, ("unit",), f"unknown unit (allowed: {allowed})", self.unit
            )
        return every


@register
class DateTimeOperation(Transform):
    """Parse, format, truncate, convert time zones, add durations and take differences."""

    type = "date_time"
    title = "Date & time"
    category = "calculate"
    Config = DateTimeConfig

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: DateTimeConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        schema = lf.collect_schema()
        expr, dtype = field(cfg.field_name, schema, "field_name")
        if cfg.operation == "parse":
            result = _parse(expr, dtype, cfg)
        else:
            result = _operate(cfg, expr, dtype, schema)
        return {OUT: paths.assign(lf, cfg.output_field or cfg.field_name, result, schema)}


def _parse(expr: pl.Expr, dtype: pl.DataType, cfg: DateTimeConfig) -> pl.Expr:
    if not is_text(dtype):
        raise TransformError(
            f"parse needs a text field, but '{cfg.field_name}' is {dtype}", param="field_name"
        )
    fmt = cfg.format or ""
    text = expr.cast(pl.String).str.strip_chars()
    if not _TIME_CODES.search(fmt):
        return text.str.strptime(pl.Date, fmt, strict=False)
    if "%z" in fmt or "%:z" in fmt or "%#z" in fmt:
        return text.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False)
    return text.str.to_datetime(fmt, time_unit="us", strict=False).dt.replace_time_zone("UTC")


def _utc(expr: pl.Expr, dtype: pl.DataType, path: str, param: str) -> pl.Expr:
    utc = to_utc_datetime(expr, dtype)
    if utc is None:
        raise TransformError(
            f"date_time needs a timestamp, date or ISO 8601 text field, but '{path}' is {dtype}", param=param
        )
    return utc


def _operate(cfg: DateTimeConfig, expr: pl.Expr, dtype: pl.DataType, schema: pl.Schema) -> pl.Expr:
    op = cfg.operation
    # A Date stays a Date where that makes sense (format, truncate, add); otherwise it is midnight UTC.
    keep_date = dtype == pl.Date and op in ("format", "truncate", "add")
    ts = expr if keep_date else _utc(expr, dtype, cfg.field_name, "field_name")
    if op == "format":
        return ts.dt.strftime(cfg.format or "")
    if op == "truncate":
        return ts.dt.truncate(cfg._truncate_every())
    if op == "to_timezone":
        return ts.dt.convert_time_zone(cfg.timezone or "UTC")
    if op == "add":
        return ts.dt.offset_by(iso_duration_to_polars(cfg.duration or ""))
    other_expr, other_type = field(cfg.other_field or "", schema, "other_field")
    other = _utc(other_expr, other_type, cfg.other_field or "", "other_field")
    seconds = (ts - other).dt.total_microseconds() / 1_000_000
    return seconds / _SECONDS_PER[cfg.unit or "seconds"]
