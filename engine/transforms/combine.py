"""Transformations over two or more inputs: `join`, `lookup` and `union`.

In the linear form the second input is another source named by `join_source`, `lookup_source` or
`sources`; in the graph form it is the node's second input and those keys are absent.
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from engine import paths
from engine.context import NodeContext
from engine.errors import TransformError
from engine.transforms.base import OUT, Transform, TransformConfig
from engine.transforms.casting import coerce_literal
from engine.transforms.common import config_error, field, is_numeric
from engine.transforms.registry import register

RIGHT_SUFFIX = "_right"


def _keys(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class JoinConfig(TransformConfig):
    type: Literal["join"] = "join"
    join_type: Literal["inner", "left", "right", "full", "semi", "anti"] = Field(
        "inner",
        description="semi keeps primary records with a match, anti those without; neither adds fields.",
    )
    primary_key: str | list[str] = Field(description="Key field(s) of the primary (first) input.")
    foreign_key: str | list[str] = Field(
        description="Key field(s) of the joined (second) input, in the same order."
    )
    join_source: str | None = Field(None, description="Linear form: the name of the source joined in.")
    included_fields: list[str] | None = Field(
        None, description="Fields of the joined input to bring (default: all). Name clashes get `_right`."
    )

    @model_validator(mode="after")
    def _same_key_count(self) -> JoinConfig:
        if len(_keys(self.primary_key)) != len(_keys(self.foreign_key)):
            raise config_error(
                type(self).__name__, ("foreign_key",), "foreign_key needs as many fields as primary_key"
            )
        return self


@register
class Join(Transform):
    """Join a second input on key fields. The output keeps the primary key names; order follows the primary."""

    type = "join"
    title = "Join"
    category = "combine"
    Config = JoinConfig
    min_inputs = 2
    max_inputs = 2

    @property
    def streaming(self) -> bool:
        return False

    @classmethod
    def side_sources(cls, config: TransformConfig) -> list[str]:
        return [config.join_source] if getattr(config, "join_source", None) else []

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: JoinConfig = self.config  # type: ignore[assignment]
        left, right = inputs
        left_schema, right_schema = left.collect_schema(), right.collect_schema()
        left_keys, right_keys = _keys(cfg.primary_key), _keys(cfg.foreign_key)
        key_names = [f"__key{i}" for i in range(len(left_keys))]
        for i, (lk, rk) in enumerate(zip(left_keys, right_keys, strict=True)):
            lexpr, ltype = field(lk, left_schema, "primary_key")
            rexpr, rtype = field(rk, right_schema, "foreign_key")
            if ltype != rtype and not (is_numeric(ltype) and is_numeric(rtype)):
                raise TransformError(
                    f"key types differ: '{lk}' is {ltype} but '{rk}' is {rtype}; cast one of them first",
                    param="foreign_key",
                )
            left = left.with_columns(lexpr.alias(key_names[i]))
            right = right.with_columns(rexpr.alias(key_names[i]))
        if cfg.join_type in ("semi", "anti"):
            joined = left.join(
                right.select(key_names), on=key_names, how=cfg.join_type, maintain_order="left"
            )
            return {OUT: joined.drop(key_names)}

        if cfg.included_fields is None:
            # The foreign key equals the primary key after the join: it is not brought again.
            brought = [n for n in right_schema if n not in right_keys]
        else:
            brought = list(cfg.included_fields)
        for name in brought:
            if name not in right_schema:
                raise TransformError(paths.missing_field_message(name, right_schema), param="included_fields")
        renamed = {n: (f"{n}{RIGHT_SUFFIX}" if n in left_schema else n) for n in brought}
        right = right.select([*key_names, *(pl.col(n).alias(new) for n, new in renamed.items())])
        order = {"right": "right", "full": "left_right"}.get(cfg.join_type, "left")
        joined = left.join(right, on=key_names, how=cfg.join_type, coalesce=True, maintain_order=order)  # type: ignore[arg-type]
        joined = joined.with_columns(_fill_keys(left_keys, key_names, left_schema))
        return {OUT: joined.select([*left_schema, *renamed.values()])}


def _fill_keys(left_keys: list[str], key_names: list[str], schema: pl.Schema) -> list[pl.Expr]:
    # For right/full joins a record only in the second input has no primary key value of its own:
    # the (coalesced) join key fills it, so the key column is complete.
    return [
        pl.col(name).fill_null(pl.col(tmp)).alias(name)
        for name, tmp in zip(left_keys, key_names, strict=True)
        if name in schema
    ]


class LookupConfig(TransformConfig):
    type: Literal["lookup"] = "lookup"
    field_name: str = Field(description="Field whose value is looked up.")
    table: dict[str, Any] | None = Field(None, description="{value: replacement}; or use lookup_source.")
    lookup_source: str | None = Field(None, description="Linear form: the source holding the lookup table.")
    key_field: str | None = Field(None, description="With a lookup input: its field matched to field_name.")
    value_field: str | None = Field(
        None, description="With a lookup input: its field written to output_field."
    )
    output_field: str | None = Field(None, description="Field written (default: field_name, in place).")
    default: Any = Field(
        None,
        description="Written when no match: default if given, else the original value (in place) or null.",
    )

    @model_validator(mode="after")
    def _table_or_source(self) -> LookupConfig:
        name = type(self).__name__
        if self.table is not None and (self.lookup_source or self.key_field or self.value_field):
            raise config_error(
                name, ("table",), "give either table, or key_field and value_field (with lookup_source)"
            )
        if self.table is None and not (self.key_field and self.value_field):
            missing = "key_field" if not self.key_field else "value_field"
            raise config_error(
                name, (missing,), "a lookup needs table, or key_field and value_field (with lookup_source)"
            )
        return self

    @property
    def uses_input(self) -> bool:
        return self.table is None


@register
class Lookup(Transform):
    """Replace or enrich a field from a table in the spec or from a second input (first match wins)."""

    type = "lookup"
    title = "Lookup"
    category = "combine"
    Config = LookupConfig
    max_inputs = 2

    @property
    def cfg(self) -> LookupConfig:
        return self.config  # type: ignore[return-value]

    @property
    def streaming(self) -> bool:
        return not self.cfg.uses_input

    @classmethod
    def side_sources(cls, config: TransformConfig) -> list[str]:
        return [config.lookup_source] if getattr(config, "lookup_source", None) else []

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg, lf = self.cfg, inputs[0]
        schema = lf.collect_schema()
        key, dtype = field(cfg.field_name, schema, "field_name")
        output = cfg.output_field or cfg.field_name
        if cfg.uses_input:
            if len(inputs) < 2:
                raise TransformError(
                    "lookup with key_field/value_field needs a second input", param="lookup_source"
                )
            return {OUT: self._from_input(lf, inputs[1], key, dtype, output)}
        table = cfg.table or {}
        keys = [coerce_key(k, dtype) for k in table]
        try:
            values = pl.Series(list(table.values()))
        except (TypeError, pl.exceptions.PolarsError):
            raise TransformError(
                "table values must all have one type (all text, or all numbers)", param="table"
            ) from None
        found = key.replace_strict(keys, values, default=None, return_dtype=values.dtype)
        return {OUT: paths.assign(lf, output, self._fallback(found, key, values.dtype, output), schema)}

    def _fallback(self, found: pl.Expr, key: pl.Expr, dtype: pl.DataType, output: str) -> pl.Expr:
        cfg = self.cfg
        if cfg.default is not None:
            return found.fill_null(coerce_literal(cfg.default, dtype, output, "default"))
        if output == cfg.field_name:  # in place: an unknown code keeps its original value
            return pl.coalesce(found, key.cast(dtype, strict=False))
        return found

    def _from_input(
        self, lf: pl.LazyFrame, table: pl.LazyFrame, key: pl.Expr, dtype: pl.DataType, output: str
    ) -> pl.LazyFrame:
        cfg = self.cfg
        table_schema = table.collect_schema()
        table_key, key_type = field(cfg.key_field or "", table_schema, "key_field")
        value, value_type = field(cfg.value_field or "", table_schema, "value_field")
        if key_type != dtype and not (is_numeric(key_type) and is_numeric(dtype)):
            raise TransformError(
                f"'{cfg.key_field}' is {key_type} but '{cfg.field_name}' is {dtype}; cast one of them first",
                param="key_field",
            )
        # One row per key, so a lookup never multiplies records.
        pairs = table.select(table_key.alias("__lookup_key"), value.alias("__lookup_value")).unique(
            "__lookup_key", keep="first", maintain_order=True
        )
        joined = lf.with_columns(key.alias("__lookup_key")).join(
            pairs, on="__lookup_key", how="left", maintain_order="left"
        )
        result = self._fallback(pl.col("__lookup_value"), pl.col("__lookup_key"), value_type, output)
        schema = joined.collect_schema()
        return paths.assign(joined, output, result, schema).drop("__lookup_key", "__lookup_value")


def coerce_key(key: str, dtype: pl.DataType) -> Any:
    """JSON object keys are text; bring them to the looked-up field's type (`"1"` for an integer field)."""
    if dtype.is_integer():
        try:
            return int(key)
        except ValueError:
            raise TransformError(f"table key '{key}' is not an integer", param="table") from None
    if dtype.is_float():
        try:
            return float(key)
        except ValueError:
            raise TransformError(f"table key '{key}' is not a number", param="table") from None
    if dtype == pl.Boolean:
        return key.lower() == "true"
    return key


class UnionConfig(TransformConfig):
    type: Literal["union"] = "union"
    sources: list[str] | None = Field(None, description="Linear form: other sources appended to this stream.")

    @field_validator("sources")
    @classmethod
    def _distinct(cls, sources: list[str] | None) -> list[str] | None:
        if sources is not None and len(set(sources)) != len(sources):
            raise ValueError("a source is listed twice")
        return sources


@register
class Union(Transform):
    """Append records of 2+ inputs; columns are matched by name and a missing column is null."""

    type = "union"
    title = "Union"
    category = "combine"
    Config = UnionConfig
    min_inputs = 2
    max_inputs = None

    @property
    def streaming(self) -> bool:
        return False

    @classmethod
    def side_sources(cls, config: TransformConfig) -> list[str]:
        return list(getattr(config, "sources", None) or [])

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        if len(inputs) < 2:
            raise TransformError("union needs 2 or more inputs")
        try:
            combined = pl.concat(inputs, how="diagonal_relaxed")
            combined.collect_schema()
        except pl.exceptions.PolarsError as exc:
            raise TransformError(f"inputs cannot be combined: {str(exc).splitlines()[0]}") from None
        return {OUT: combined}
