"""`aggregation`: group records and compute sums, averages, counts and the like."""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.context import NodeContext
from engine.errors import TransformError
from engine.transforms.base import OUT, Transform, TransformConfig
from engine.transforms.common import config_error, field, is_numeric
from engine.transforms.registry import register

AggregateOperation = Literal[
    "sum", "average", "count", "count_distinct", "min", "max", "first", "last", "median", "std"
]
_NUMERIC_ONLY = {"sum", "average", "median", "std"}


class AggregatedField(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_field: str | None = Field(
        None, description="Field aggregated (optional for count: counts records)."
    )
    output_field: str | None = Field(
        None, description="Result column (default: `<input_field>_<operation>`)."
    )
    operation: AggregateOperation = Field(description="count counts non-null values; std is the sample std.")

    @model_validator(mode="after")
    def _needs_input(self) -> AggregatedField:
        if self.input_field is None and self.operation != "count":
            raise config_error(
                "AggregatedField", ("input_field",), f"operation '{self.operation}' needs input_field"
            )
        if self.input_field is None and self.output_field is None:
            raise config_error(
                "AggregatedField", ("output_field",), "count without input_field needs output_field"
            )
        return self

    @property
    def output(self) -> str:
        return self.output_field or f"{self.input_field}_{self.operation}"


class AggregationConfig(TransformConfig):
    type: Literal["aggregation"] = "aggregation"
    group_by_fields: list[str] = Field(
        default_factory=list, description="Fields that form the groups (none: one row for all records)."
    )
    aggregated_fields: list[AggregatedField] = Field(min_length=1, description="What to compute per group.")
    include_details: bool = Field(
        False, description="Keep every record and add the group's results as columns (in input order)."
    )


@register
class Aggregation(Transform):
    """Group by fields and aggregate. Output rows are sorted by the group fields (nulls last).

    Group fields given as nested paths (`site.area`) appear as columns named by the path.
    """

    type = "aggregation"
    title = "Aggregate"
    category = "calculate"
    Config = AggregationConfig

    @property
    def streaming(self) -> bool:
        return False

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: AggregationConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        schema = lf.collect_schema()
        keys = [field(path, schema, "group_by_fields")[0].alias(path) for path in cfg.group_by_fields]
        aggs = [_aggregate(spec, schema, i) for i, spec in enumerate(cfg.aggregated_fields)]
        if cfg.include_details:
            windowed = [a.over(keys) if keys else a for a in aggs]
            return {OUT: lf.with_columns(windowed)}
        if not keys:
            return {OUT: lf.select(aggs)}
        names = list(cfg.group_by_fields)
        grouped = lf.group_by(keys, maintain_order=True).agg(aggs)
        return {OUT: grouped.sort(names, nulls_last=True, maintain_order=True)}


def _aggregate(spec: AggregatedField, schema: pl.Schema, index: int) -> pl.Expr:
    param = f"aggregated_fields[{index}].input_field"
    if spec.input_field is None:
        return pl.len().alias(spec.output)
    expr, dtype = field(spec.input_field, schema, param)
    if spec.operation in _NUMERIC_ONLY and not is_numeric(dtype):
        raise TransformError(
            f"{spec.operation} needs a numeric field, but '{spec.input_field}' is {dtype}", param=param
        )
    op = spec.operation
    result = {
        "sum": lambda: expr.sum(),
        "average": lambda: expr.mean(),
        "count": lambda: expr.count(),
        "count_distinct": lambda: expr.drop_nulls().n_unique(),
        "min": lambda: expr.min(),
        "max": lambda: expr.max(),
        "first": lambda: expr.first(),
        "last": lambda: expr.last(),
        "median": lambda: expr.median(),
        "std": lambda: expr.std(),
    }[op]()
    return result.alias(spec.output)
