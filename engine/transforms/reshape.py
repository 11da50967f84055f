"""Order and shape of records: `sort`, `deduplicate`, `explode`."""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine import paths
from engine.context import NodeContext
from engine.errors import TransformError
from engine.transforms.base import OUT, Transform, TransformConfig
from engine.transforms.common import config_error, field, is_text
from engine.transforms.fuzzy import fuzzy_duplicates
from engine.transforms.registry import register


class SortConfig(TransformConfig):
    type: Literal["sort"] = "sort"
    fields: list[str] = Field(min_length=1, description="Sort keys, most significant first.")
    descending: bool | list[bool] = Field(False, description="One flag for all keys, or one per key.")

    @model_validator(mode="after")
    def _one_flag_per_field(self) -> SortConfig:
        if isinstance(self.descending, list) and len(self.descending) != len(self.fields):
            raise config_error(type(self).__name__, ("descending",), "give one descending flag per field")
        return self


@register
class Sort(Transform):
    """Sort records (stable; nulls last in either direction)."""

    type = "sort"
    title = "Sort"
    category = "reshape"
    Config = SortConfig

    @property
    def streaming(self) -> bool:
        return False

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: SortConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        schema = lf.collect_schema()
        keys = [field(path, schema, "fields")[0] for path in cfg.fields]
        return {OUT: lf.sort(keys, descending=cfg.descending, nulls_last=True, maintain_order=True)}


class FuzzyMatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = Field(description="Text field compared by similarity (case-insensitive).")
    threshold: float = Field(
        0.9, ge=0, le=1, description="Similarity (0..1) from which two values are the same."
    )


class DeduplicateConfig(TransformConfig):
    type: Literal["deduplicate"] = "deduplicate"
    fields: list[str] | None = Field(None, description="Fields that identify a record (default: all fields).")
    keep: Literal["first", "last"] = Field("first", description="Which of the duplicates stays.")
    fuzzy: FuzzyMatch | None = Field(None, description="Also treat similar text in one field as equal.")


@register
class Deduplicate(Transform):
    """Drop duplicate records, keeping the first or last one, in input order.

    With `fuzzy`, a record is a duplicate of an earlier kept record when the other `fields` are equal and
    the fuzzy field's similarity (normalized Indel ratio of the trimmed, lowercased text) reaches the
    threshold. A null fuzzy value is never similar to anything.
    """

    type = "deduplicate"
    title = "Deduplicate"
    category = "clean"
    Config = DeduplicateConfig

    @property
    def streaming(self) -> bool:
        return False

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: DeduplicateConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        schema = lf.collect_schema()
        names = cfg.fields if cfg.fields is not None else list(schema)
        keys = [field(path, schema, "fields")[0].alias(f"__k{i}") for i, path in enumerate(names)]
        if cfg.fuzzy is None:
            with_keys = lf.with_columns(keys)
            key_names = [f"__k{i}" for i in range(len(keys))]
            kept = with_keys.unique(key_names, keep=cfg.keep, maintain_order=True)
            return {OUT: kept.drop(key_names)}
        fuzzy, dtype = field(cfg.fuzzy.field, schema, "fuzzy.field")
        if not is_text(dtype):
            raise TransformError(
                f"fuzzy matching needs a text field, but '{cfg.fuzzy.field}' is {dtype}", param="fuzzy.field"
            )
        exact = [k for path, k in zip(names, keys, strict=True) if path != cfg.fuzzy.field]
        threshold, keep_last = cfg.fuzzy.threshold, cfg.keep == "last"
        columns = pl.struct([fuzzy.cast(pl.String).alias("__fuzzy"), *exact])
        duplicate = columns.map_batches(
            lambda s: fuzzy_duplicates(s.struct.unnest(), threshold, keep_last=keep_last),
            return_dtype=pl.Boolean,
        )
        return {OUT: lf.filter(~duplicate)}


class ExplodeConfig(TransformConfig):
    type: Literal["explode"] = "explode"
    field_name: str = Field(description="A list field: each element becomes its own record.")


@register
class Explode(Transform):
    """One record per element of a list field. An empty or null list keeps its record, with a null."""

    type = "explode"
    title = "Explode"
    category = "reshape"
    Config = ExplodeConfig

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: ExplodeConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        schema = lf.collect_schema()
        expr, dtype = field(cfg.field_name, schema, "field_name")
        if not isinstance(dtype, pl.List | pl.Array):
            raise TransformError(
                f"explode needs a list field, but '{cfg.field_name}' is {dtype}", param="field_name"
            )
        if cfg.field_name in schema:
            return {OUT: lf.explode(cfg.field_name, empty_as_null=True, keep_nulls=True)}
        exploded = lf.with_columns(expr.alias("__element")).explode(
            "__element", empty_as_null=True, keep_nulls=True
        )
        return {OUT: paths.assign(exploded, cfg.field_name, pl.col("__element")).drop("__element")}
