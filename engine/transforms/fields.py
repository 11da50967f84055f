"""Adding, removing and renaming fields: `field_addition`, `field_removal`, `schema_mapping`."""

from __future__ import annotations

import os
from typing import Literal

import polars as pl
from pydantic import Field, model_validator

from engine import paths
from engine.context import NodeContext
from engine.errors import TransformError
from engine.transforms.base import OUT, Transform, TransformConfig
from engine.transforms.common import Params, config_error, field
from engine.transforms.isotime import utc_datetime
from engine.transforms.registry import register

SPECIAL_VALUES = ("current_timestamp", "run_id", "source_name", "uuid")


class SchemaMappingConfig(TransformConfig):
    type: Literal["schema_mapping"] = "schema_mapping"
    mapping: dict[str, str] = Field(
        min_length=1, description='{source path: new name}, e.g. {"total_price": "price"}.'
    )
    drop_unmapped: bool = Field(False, description="Keep only the mapped fields, in mapping order.")


@register
class SchemaMapping(Transform):
    """Rename fields to a target schema.

    A top-level source field is renamed in place. A nested source path (`customer.email`) is copied
    out to a new top-level column and its struct is left as it was. A new name that equals an existing
    unmapped column replaces that column.
    """

    type = "schema_mapping"
    title = "Schema mapping"
    category = "clean"
    Config = SchemaMappingConfig

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: SchemaMappingConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        schema = lf.collect_schema()
        renamed = {src: field(src, schema, "mapping")[0].alias(new) for src, new in cfg.mapping.items()}
        if cfg.drop_unmapped:
            return {OUT: lf.select(list(renamed.values()))}
        targets = set(cfg.mapping.values())
        columns = []
        for name in schema:
            if name in renamed:
                columns.append(renamed.pop(name))
            elif name not in targets:
                columns.append(pl.col(name))
        return {OUT: lf.select([*columns, *renamed.values()])}


class ConcatParameters(Params):
    source_fields: list[str] = Field(min_length=1, description="Fields joined as text, in order.")
    separator: str = Field("", description="Text put between the values (null values are skipped).")


class FieldAdditionConfig(TransformConfig):
    type: Literal["field_addition"] = "field_addition"
    field_name: str = Field(description="Field to add (or overwrite); nested paths write into structs.")
    value: str | int | float | bool | None = Field(
        None,
        description="A literal, or a special: current_timestamp (the run's start, UTC), run_id, "
        "source_name, uuid (a new one per record).",
    )
    operation: Literal["concat"] | None = Field(None, description="`concat`: join source_fields as text.")
    parameters: ConcatParameters | None = Field(None, description="For concat: source_fields, separator.")

    @model_validator(mode="after")
    def _value_or_operation(self) -> FieldAdditionConfig:
        if self.operation == "concat" and self.parameters is None:
            raise config_error(
                type(self).__name__, ("parameters",), "operation 'concat' needs parameters.source_fields"
            )
        if self.operation is None and self.parameters is not None:
            raise config_error(
                type(self).__name__, ("parameters",), "parameters are only used with operation 'concat'"
            )
        if self.operation is not None and self.value is not None:
            raise config_error(type(self).__name__, ("value",), "give either value or operation, not both")
        return self


@register
class FieldAddition(Transform):
    """Add a field: a literal, a run value (timestamp, run id, source name), a UUID or a concatenation."""

    type = "field_addition"
    title = "Add field"
    category = "calculate"
    Config = FieldAdditionConfig

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: FieldAdditionConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        schema = lf.collect_schema()
        if cfg.parameters is not None:
            parts = [
                field(f, schema, "parameters.source_fields")[0].cast(pl.String)
                for f in cfg.parameters.source_fields
            ]
            value = pl.concat_str(parts, separator=cfg.parameters.separator, ignore_nulls=True)
        elif cfg.value == "current_timestamp":
            # One instant for the whole run, so every batch and every record carry the same value.
            value = pl.lit(ctx.started_at, dtype=utc_datetime())
        elif cfg.value == "run_id":
            value = pl.lit(str(ctx.run_id))
        elif cfg.value == "source_name":
            value = pl.lit(ctx.batch_source or ctx.pipeline)
        elif cfg.value == "uuid":
            value = pl.int_range(pl.len()).map_batches(lambda s: uuid4_series(len(s)), return_dtype=pl.String)
        else:
            value = pl.lit(cfg.value)
        return {OUT: paths.assign(lf, cfg.field_name, value, schema)}


def uuid4_series(n: int) -> pl.Series:
    """`n` random (version 4) UUID strings, built column-wise from one block of OS randomness."""
    hexes = pl.Series("h", [os.urandom(16 * n).hex()]).str.extract_all(".{32}").explode()
    h = pl.col("h")
    # RFC 9562: version nibble 4, and the variant's top bits 10 (first hex digit of group 4 is 8-b).
    variant = (
        h.str.slice(16, 1)
        .str.to_integer(base=16)
        .mod(4)
        .replace_strict([0, 1, 2, 3], ["8", "9", "a", "b"], return_dtype=pl.String)
    )
    groups = [h.str.slice(0, 8), h.str.slice(8, 4), pl.concat_str([pl.lit("4"), h.str.slice(13, 3)])]
    groups += [pl.concat_str([variant, h.str.slice(17, 3)]), h.str.slice(20, 12)]
    return hexes.to_frame().select(pl.concat_str(groups, separator="-")).to_series()


class FieldRemovalConfig(TransformConfig):
    type: Literal["field_removal"] = "field_removal"
    field_names: list[str] = Field(min_length=1, description="Fields to remove (nested paths allowed).")


@register
class FieldRemoval(Transform):
    """Remove fields. Removing a field that does not exist is an error (it is usually a typo)."""

    type = "field_removal"
    title = "Remove fields"
    category = "clean"
    Config = FieldRemovalConfig

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: FieldRemovalConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        for path in cfg.field_names:
            schema = lf.collect_schema()
            field(path, schema, "field_names")
            lf = lf.drop(path) if path in schema else _drop_nested(lf, path, schema)
        return {OUT: lf}


def _drop_nested(lf: pl.LazyFrame, path: str, schema: pl.Schema) -> pl.LazyFrame:
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in schema:
            rebuilt = _struct_without(pl.col(head), schema[head], parts[cut:])
            return lf.with_columns(rebuilt.alias(head))
    raise TransformError(paths.missing_field_message(path, schema), param="field_names")


def _struct_without(expr: pl.Expr, dtype: pl.Struct, names: list[str]) -> pl.Expr:
    kept = []
    for f in dtype.fields:
        if f.name != names[0]:
            kept.append(expr.struct.field(f.name))
        elif len(names) > 1:
            kept.append(_struct_without(expr.struct.field(f.name), f.dtype, names[1:]).alias(f.name))
    # A null struct stays null rather than becoming a struct of nulls.
    return pl.when(expr.is_not_null()).then(pl.struct(kept))
