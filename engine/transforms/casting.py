"""Type conversions: the `cast` operation and literals written into typed columns.

A cast never fails the run: a value that cannot be converted becomes null (plant data is messy, and a
validation step after the cast is how a plant engineer catches it).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import polars as pl

from engine.errors import TransformError
from engine.transforms.common import is_numeric, is_text
from engine.transforms.isotime import UTC_DATETIME, parse_iso_date, parse_iso_datetime, parse_literal

_TRUE = ["true", "t", "yes", "y", "on", "1"]
_FALSE = ["false", "f", "no", "n", "off", "0"]


def cast_expr(expr: pl.Expr, dtype: pl.DataType, to: str, path: str) -> pl.Expr:
    text = expr.cast(pl.String).str.strip_chars()
    if to == "string":
        return iso_text(expr, dtype)
    if to == "float":
        return text.cast(pl.Float64, strict=False) if is_text(dtype) else expr.cast(pl.Float64, strict=False)
    if to == "int":
        if is_text(dtype):
            # "42" and "42.0" are both 42; "42.5" is not a whole number and becomes null.
            as_float = text.cast(pl.Float64, strict=False)
            whole = pl.when(as_float == as_float.floor()).then(as_float.cast(pl.Int64, strict=False))
            return pl.coalesce(text.cast(pl.Int64, strict=False), whole)
        return expr.cast(pl.Int64, strict=False)
    if to == "bool":
        if is_text(dtype):
            lowered = text.str.to_lowercase()
            return pl.when(lowered.is_in(_TRUE)).then(True).when(lowered.is_in(_FALSE)).then(False)
        if is_numeric(dtype) or dtype == pl.Boolean:
            return expr.cast(pl.Boolean, strict=False) if dtype == pl.Boolean else expr != 0
    if to == "date":
        if is_text(dtype):
            return parse_iso_date(text)
        if dtype.is_temporal() and dtype != pl.Time:
            return expr.cast(pl.Date)
    if to == "datetime":
        if is_text(dtype):
            return parse_iso_datetime(text)
        if isinstance(dtype, pl.Datetime):
            return (
                expr.dt.replace_time_zone("UTC")
                if dtype.time_zone is None
                else expr.dt.convert_time_zone("UTC")
            )
        if dtype == pl.Date:
            return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    raise TransformError(f"cannot cast '{path}' ({dtype}) to {to}", param="parameters.to")


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
        lit = pl.lit(instant, dtype=UTC_DATETIME)
        return (
            lit.dt.convert_time_zone(dtype.time_zone) if dtype.time_zone else lit.dt.replace_time_zone(None)
        )
    return pl.lit(value)
