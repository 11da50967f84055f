"""`json_extract`: read one value out of a JSON text field or a struct field."""

from __future__ import annotations

import re
from typing import Literal

import polars as pl
from pydantic import Field, field_validator

from engine import paths
from engine.context import NodeContext
from engine.errors import TransformError
from engine.transforms.base import OUT, Transform, TransformConfig
from engine.transforms.common import field, is_text
from engine.transforms.registry import register

_SEGMENT = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


def parse_json_path(path: str) -> list[str | int]:
    """`$.a.b[0]` -> ["a", "b", 0]; raises ValueError naming the offending character."""
    if not path.startswith("$"):
        raise ValueError("a JSON path starts with `$` (e.g. `$.reading.value` or `$.tags[0]`)")
    steps: list[str | int] = []
    position = 1
    while position < len(path):
        match = _SEGMENT.match(path, position)
        if not match:
            raise ValueError(
                f"unexpected text at character {position + 1}: use `.name`, `['name']` or `[index]`"
            )
        name, index, quoted, double = match.groups()
        steps.append(int(index) if index is not None else name or quoted or double or "")
        position = match.end()
    return steps


class JsonExtractConfig(TransformConfig):
    type: Literal["json_extract"] = "json_extract"
    field_name: str = Field(description="JSON text field, or a struct field.")
    path: str = Field(description="JSONPath to the value, e.g. `$.reading.value` or `$.tags[0]`.")
    output_field: str | None = Field(None, description="Field written (default: field_name).")

    @field_validator("path")
    @classmethod
    def _valid_path(cls, path: str) -> str:
        parse_json_path(path)
        return path


@register
class JsonExtract(Transform):
    """Extract a value by JSON path. From JSON text the result is text (objects and arrays as JSON);
    from a struct it keeps its type. A missing key or index gives null."""

    type = "json_extract"
    title = "JSON extract"
    category = "reshape"
    Config = JsonExtractConfig

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: JsonExtractConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        schema = lf.collect_schema()
        expr, dtype = field(cfg.field_name, schema, "field_name")
        if is_text(dtype):
            result = expr.cast(pl.String).str.json_path_match(cfg.path)
        elif isinstance(dtype, pl.Struct | pl.List):
            result = _walk(expr, dtype, parse_json_path(cfg.path), cfg.path)
        else:
            raise TransformError(
                f"json_extract needs JSON text or a struct, but '{cfg.field_name}' is {dtype}",
                param="field_name",
            )
        return {OUT: paths.assign(lf, cfg.output_field or cfg.field_name, result, schema)}


def _walk(expr: pl.Expr, dtype: pl.DataType, steps: list[str | int], path: str) -> pl.Expr:
    for step in steps:
        if isinstance(step, int) and isinstance(dtype, pl.List | pl.Array):
            expr, dtype = expr.list.get(step, null_on_oob=True), dtype.inner
        elif isinstance(step, str) and isinstance(dtype, pl.Struct):
            names = {f.name: f.dtype for f in dtype.fields}
            if step not in names:
                raise TransformError(
                    f"path {path}: no field '{step}' (fields: {', '.join(names)})", param="path"
                )
            expr, dtype = expr.struct.field(step), names[step]
        else:
            raise TransformError(f"path {path}: cannot take {step!r} of a {dtype} value", param="path")
    return expr
