"""Nested field paths (`address.city`) over struct columns or flattened columns."""

from __future__ import annotations

from engine.lazy import lazy_module

pl = lazy_module("polars")


def _walk(path: str, schema: pl.Schema | dict) -> tuple[pl.Expr, pl.DataType]:
    """(expression, dtype) of `path`. A column literally named `path` wins (flattened data such as
    `address.city` from a CSV); otherwise the dots walk into struct columns."""
    if path in schema:
        return pl.col(path), schema[path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in schema:
            expr, dtype = pl.col(head), schema[head]
            for name in parts[cut:]:
                fields = {f.name: f.dtype for f in dtype.fields} if isinstance(dtype, pl.Struct) else {}
                if name not in fields:
                    raise KeyError(path)
                expr, dtype = expr.struct.field(name), fields[name]
            return expr, dtype
    raise KeyError(path)


def resolve(path: str, schema: pl.Schema | dict) -> pl.Expr:
    """Expression reading `path` (a column, or a field inside struct columns); KeyError if absent."""
    return _walk(path, schema)[0]


def exists(path: str, schema: pl.Schema | dict) -> bool:
    try:
        _walk(path, schema)
    except KeyError:
        return False
    return True


def dtype_of(path: str, schema: pl.Schema | dict) -> pl.DataType:
    return _walk(path, schema)[1]


def assign(
    lf: pl.LazyFrame, path: str, value: pl.Expr, schema: pl.Schema | dict | None = None
) -> pl.LazyFrame:
    """Write `value` to `path`: a top-level column, or a field inside a struct column."""
    schema = schema if schema is not None else lf.collect_schema()
    if path in schema or "." not in path:
        return lf.with_columns(value.alias(path))
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in schema and isinstance(schema[head], pl.Struct):
            return lf.with_columns(
                _with_struct_field(pl.col(head), schema[head], parts[cut:], value).alias(head)
            )
    return lf.with_columns(value.alias(path))


def _with_struct_field(expr: pl.Expr, dtype: pl.Struct, names: list[str], value: pl.Expr) -> pl.Expr:
    name = names[0]
    if len(names) == 1:
        return expr.struct.with_fields(value.alias(name))
    fields = {f.name: f.dtype for f in dtype.fields}
    inner = fields.get(name)
    if not isinstance(inner, pl.Struct):
        return expr.struct.with_fields(value.alias(".".join(names)))
    return expr.struct.with_fields(
        _with_struct_field(expr.struct.field(name), inner, names[1:], value).alias(name)
    )


def missing_field_message(path: str, schema: pl.Schema | dict) -> str:
    cols = ", ".join(list(schema)[:20])
    return f"field '{path}' not found (columns: {cols})"
