"""Shared pieces of the file formats: options, value formatting for text, declared-type casts."""

from __future__ import annotations

import codecs
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from engine.errors import DataError, first_line  # noqa: F401  (formats import it from here)
from engine.lazy import lazy_module
from engine.transforms.casting import convert  # the one cast

pl = lazy_module("polars")

FieldType = Literal["string", "int", "float", "bool", "date", "datetime"]

# One format for every timestamp we write: UTC, `Z` suffix, fractional seconds only when non-zero
# (then 3, 6 or 9 digits, as many as the value needs). The historian's reject store uses the same.
ISO_DATETIME = "%Y-%m-%dT%H:%M:%S%.fZ"
ISO_DATE = "%Y-%m-%d"


@dataclass
class FormatOptions:
    """The per-format options reading and writing share."""

    delimiter: str = ","
    header: bool = True
    encoding: str = "utf8"
    sheet: str | int | None = None
    record_path: str | None = None


@dataclass
class ReadOptions(FormatOptions):
    declared: dict[str, FieldType] = field(default_factory=dict)


@dataclass
class WriteOptions(FormatOptions):
    compression: str = "snappy"


def is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


# ---- text formatting ---------------------------------------------------------------------------
def _text_expr(expr: pl.Expr, dtype: pl.DataType, nested_as_json: bool, decimal_as_float: bool) -> pl.Expr:
    """`expr` made writable as text: timestamps as ISO 8601 UTC `Z`, binary as base64, recursively."""
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            expr = expr.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return expr.dt.to_string(ISO_DATETIME)
    if dtype == pl.Date:
        return expr.dt.to_string(ISO_DATE)
    if dtype == pl.Binary:
        return expr.bin.encode("base64")
    if isinstance(dtype, pl.Decimal) and decimal_as_float:
        return expr.cast(pl.Float64)
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return expr.cast(pl.String)
    if isinstance(dtype, pl.Struct):
        inner = [
            _text_expr(expr.struct.field(f.name), f.dtype, False, decimal_as_float).alias(f.name)
            for f in dtype.fields
        ]
        out = pl.when(expr.is_null()).then(None).otherwise(pl.struct(inner)) if inner else expr
        return _json_text(out, is_list=False) if nested_as_json else out
    if isinstance(dtype, pl.List | pl.Array):
        if isinstance(dtype, pl.Array):
            expr = expr.arr.to_list()
        inner_dtype = dtype.inner
        if _needs_text(inner_dtype, decimal_as_float):
            expr = expr.list.eval(_text_expr(pl.element(), inner_dtype, False, decimal_as_float))
        return _json_text(expr, is_list=True) if nested_as_json else expr
    return expr


def _needs_text(dtype: pl.DataType, decimal_as_float: bool) -> bool:
    if isinstance(dtype, pl.Struct):
        return True
    if isinstance(dtype, pl.List | pl.Array):
        return _needs_text(dtype.inner, decimal_as_float)
    return (
        isinstance(dtype, pl.Datetime | pl.Categorical | pl.Enum)
        or dtype in (pl.Date, pl.Binary)
        or (isinstance(dtype, pl.Decimal) and decimal_as_float)
    )


def _json_text(expr: pl.Expr, *, is_list: bool) -> pl.Expr:
    if is_list:
        # Polars encodes structs only: wrap the list in a one-field struct and cut the wrapper off.
        text = pl.struct(expr.alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")
    else:
        text = expr.struct.json_encode()
    return pl.when(expr.is_null()).then(None).otherwise(text)


def to_text_frame(df: pl.DataFrame, *, nested_as_json: bool, decimal_as_float: bool = False) -> pl.DataFrame:
    """The batch with every value in the form text formats write (see ISO_DATETIME)."""
    exprs = [
        _text_expr(pl.col(name), dtype, nested_as_json, decimal_as_float).alias(name)
        for name, dtype in df.schema.items()
        if _needs_text(dtype, decimal_as_float) or (nested_as_json and dtype.is_nested())
    ]
    return df.with_columns(exprs) if exprs else df


# ---- declared types (the `schema` option) --------------------------------------------------------
def cast_expr(expr: pl.Expr, dtype: pl.DataType, target: FieldType) -> pl.Expr:
    """`expr` (of `dtype`) as the declared type; a value that does not fit becomes null (and
    `apply_declared` reports the first one). The conversion is the `cast` operation's
    (engine/transforms/casting.py `convert`), so both read `"42.0"` as the same int."""
    if target == "string":
        if dtype == pl.String:
            return expr
        return _text_expr(expr, dtype, True, False).cast(pl.String)
    out = convert(expr, dtype, target)
    return pl.lit(None, declared_dtypes()[target]) if out is None else out


@functools.cache
def declared_dtypes() -> dict[str, pl.DataType]:
    """The Polars type of each declared field type (made on first use: Polars is imported lazily)."""
    return {
        "string": pl.String(),
        "int": pl.Int64(),
        "float": pl.Float64(),
        "bool": pl.Boolean(),
        "date": pl.Date(),
        "datetime": pl.Datetime("us", "UTC"),
    }


Locator = Callable[[int], dict]  # row index in the file -> {"line": n} or {"record": n}


def apply_declared(
    batch: pl.DataFrame,
    declared: dict[str, FieldType],
    *,
    file: Path,
    first_row: int,
    locate: Locator,
    fixed_columns: bool = True,
) -> pl.DataFrame:
    """Force the declared column types; the first value that does not fit is a DataError.
    A declared column missing from a file with `fixed_columns` is an error (a typo, most likely);
    where records vary (XML), it is a column of nulls in the batches that lack it."""
    missing = [c for c in declared if c not in batch.columns]
    if missing and not fixed_columns:
        batch = batch.with_columns(pl.lit(None, pl.String).alias(c) for c in missing)
    elif missing:
        raise DataError(
            f"column '{missing[0]}' named in `schema` is not in the file (columns: {', '.join(batch.columns)})",
            file=str(file),
        )
    result = batch.with_columns(
        cast_expr(pl.col(c), batch.schema[c], t).alias(c) for c, t in declared.items()
    )
    unfit = {c: rows[0] for c in declared if len(rows := _unfit_rows(batch, result, c))}
    if unfit:
        row, column = min((r, c) for c, r in unfit.items())  # the earliest bad row in the batch
        value = batch.get_column(column)[row]
        raise DataError(
            f"value {value if isinstance(value, str) else str(value)!r} is not a valid {declared[column]}",
            file=str(file),
            field=column,
            **locate(first_row + row),
        )
    return result


def _unfit_rows(batch: pl.DataFrame, result: pl.DataFrame, column: str) -> pl.Series:
    given = batch.get_column(column)
    present = given.is_not_null()
    if given.dtype == pl.String:
        present &= given.str.strip_chars() != ""  # blank text is a missing value, as in CSV
    return (present & result.get_column(column).is_null()).arg_true()
