"""Type conversions: the one cast, the `cast` operation and literals written into typed columns.

`convert` is the one conversion of a value to `int`, `float`, `bool`, `date` or `datetime`. Two
paths use it and so always agree: the `cast` operation of `field_mapping`, and the declared column
types of file sources (`schema`, engine/connectors/formats/common.py). The rule, value by value:

- text is trimmed first; blank text is a missing value (null);
- int: `"42"`, `"+42"`, `"42.0"` and `"4.2e1"` are 42; `"42.5"` is not a whole number, and a
  number outside Int64 does not fit: neither is an int. A float column: 42.0 is 42, 42.5 is not;
- float: what Polars reads as a number (`"1e3"`, `"-0.5"`, `"nan"`, `"inf"`);
- bool: `true t yes y on 1` / `false f no n off 0`, any case; numbers 1 and 0 (2 is neither);
- date: an ISO 8601 date, or the (UTC) date of an ISO 8601 timestamp;
- datetime: ISO 8601 (`T` or a space; an offset or `Z` is converted to UTC, none is taken as UTC),
  or a bare date (midnight UTC); timestamps of other columns are converted to UTC.

What does not convert is null. The `cast` operation never fails the run on it (plant data is
messy: a validation step after the cast is how a plant engineer catches it); a declared type is
strict: the first value that does not fit is an error naming the file, line and field.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from engine.errors import TransformError
from engine.lazy import lazy_module
from engine.transforms.common import is_numeric, is_text
from engine.transforms.isotime import parse_iso_date, parse_iso_datetime, parse_literal, utc_datetime

pl = lazy_module("polars")

TRUE_WORDS = ("true", "t", "yes", "y", "on", "1")
FALSE_WORDS = ("false", "f", "no", "n", "off", "0")


def convert(expr: pl.Expr, dtype: pl.DataType, to: str) -> pl.Expr | None:
    """`expr` (a column of `dtype`) converted to `to` (int, float, bool, date, datetime) by the rule
    above; a value that does not convert is null. None when `dtype` cannot become `to` at all."""
    if is_text(dtype):
        text = expr.cast(pl.String).str.strip_chars()
        text = pl.when(text == "").then(None).otherwise(text)
        if to == "int":
            as_float = text.cast(pl.Float64, strict=False)
            return pl.coalesce(text.cast(pl.Int64, strict=False), _whole(as_float))
        if to == "float":
            return text.cast(pl.Float64, strict=False)
        if to == "bool":
            low = text.str.to_lowercase()
            return pl.when(low.is_in(TRUE_WORDS)).then(True).when(low.is_in(FALSE_WORDS)).then(False)
        if to == "date":
            return parse_iso_date(text)
        if to == "datetime":
            return parse_iso_datetime(text)
        return None
    if to == "int":
        return _whole(expr) if dtype.is_float() else expr.cast(pl.Int64, strict=False)
    if to == "float":
        return expr.cast(pl.Float64, strict=False)
    if to == "bool":
        if dtype == pl.Boolean:
            return expr
        if is_numeric(dtype):
            return pl.when(expr == 1).then(True).when(expr == 0).then(False)
        return None
    if to == "date":
        if isinstance(dtype, pl.Datetime):
            return _utc(expr, dtype).dt.date()
        return expr if dtype == pl.Date else None
    if to == "datetime":
        if isinstance(dtype, pl.Datetime):
            return _utc(expr, dtype)
        if dtype == pl.Date:
            return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return None
    return None


def _whole(number: pl.Expr) -> pl.Expr:
    """A float that is a whole number inside Int64, as Int64; otherwise null."""
    whole = number.is_finite() & (number == number.floor()) & (number.abs() < 2.0**63)
    return pl.when(whole).then(number.cast(pl.Int64, strict=False)).otherwise(None)


def _utc(expr: pl.Expr, dtype: pl.Datetime) -> pl.Expr:
    """A timestamp column as Datetime("us", "UTC"); a naive one is taken as UTC."""
    if dtype.time_zone is None:
        return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return expr.cast(pl.Datetime("us", dtype.time_zone)).dt.convert_time_zone("UTC")


def cast_expr(expr: pl.Expr, dtype: pl.DataType, to: str, path: str) -> pl.Expr:
    """The `cast` operation: `convert`, and text as the file destination writes it."""
    if to == "string":
        return iso_text(expr, dtype)
    out = convert(expr, dtype, to)
    if out is None:
        raise TransformError(f"cannot cast '{path}' ({dtype}) to {to}", param="parameters.to")
    return out


def iso_text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Text of a value; timestamps in ISO 8601 UTC with `Z`, as the file destination writes them."""
    if isinstance(dtype, pl.Datetime):
        utc = (
            expr.dt.replace_time_zone("UTC") if dtype.time_zone is None else expr.dt.convert_time_zone("UTC")
        )
        return utc.dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")
    return expr.cast(pl.String)


def coerce_literal(value: Any, dtype: pl.DataType, path: str, param: str) -> pl.Expr:
    """`value` as a literal of `dtype` (e.g. a default written into a column), or a TransformError."""
    if value is None or dtype == pl.Null:
        return pl.lit(value)
    wrong = TransformError(f"value {value!r} does not fit field '{path}' ({dtype})", param=param)
    if is_numeric(dtype):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise wrong
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            raise wrong from None
        if dtype.is_integer() and not float(number).is_integer():
            raise wrong
        return pl.lit(number).cast(dtype)
    if is_text(dtype):
        return pl.lit(value if isinstance(value, str) else str(value))
    if dtype == pl.Boolean:
        if not isinstance(value, bool):
            raise wrong
        return pl.lit(value)
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        try:
            instant = value if isinstance(value, date | datetime) else parse_literal(str(value))
        except ValueError:
            raise wrong from None
        if dtype == pl.Date:
            return pl.lit(instant.date() if isinstance(instant, datetime) else instant)
        lit = pl.lit(instant, dtype=utc_datetime())
        return (
            lit.dt.convert_time_zone(dtype.time_zone) if dtype.time_zone else lit.dt.replace_time_zone(None)
        )
    return pl.lit(value)
