"""Routing records by condition: `record_filter` and `split`."""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.context import NodeContext
from engine.transforms.base import OUT, REJECTED, Transform, TransformConfig
from engine.transforms.conditions import Condition, compile_condition
from engine.transforms.registry import register

DEFAULT_BRANCH = "default"


class RecordFilterConfig(TransformConfig):
    type: Literal["record_filter"] = "record_filter"
    condition: Condition = Field(description="Records that match are kept; the others are dropped.")


@register
class RecordFilter(Transform):
    """Keep the records that match a condition (a null field never matches, except `is_null`)."""

    type = "record_filter"
    title = "Filter"
    category = "clean"
    Config = RecordFilterConfig

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: RecordFilterConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        return {OUT: lf.filter(compile_condition(cfg.condition, lf.collect_schema()))}


class Branch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="Output port name for the records of this branch.")
    condition: Condition = Field(description="Records matching this (and no earlier branch) go here.")


class SplitConfig(TransformConfig):
    type: Literal["split"] = "split"
    branches: list[Branch] = Field(
        min_length=1, description="Checked in order: a record goes to the first branch it matches."
    )

    @field_validator("branches")
    @classmethod
    def _unique_names(cls, branches: list[Branch]) -> list[Branch]:
        names = [b.name for b in branches]
        reserved = {DEFAULT_BRANCH, REJECTED}
        for name in names:
            if name in reserved:
                raise ValueError(
                    f"branch name '{name}' is reserved (reserved: {', '.join(sorted(reserved))})"
                )
            if names.count(name) > 1:
                raise ValueError(f"branch name '{name}' is used twice; branch names must be unique")
        return branches


@register
class Split(Transform):
    """Route each record to the first branch whose condition it matches, else to port `default`."""

    type = "split"
    title = "Split"
    category = "reshape"
    Config = SplitConfig

    def output_ports(self) -> list[str]:
        cfg: SplitConfig = self.config  # type: ignore[assignment]
        return [b.name for b in cfg.branches] + [DEFAULT_BRANCH]

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: SplitConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        schema = lf.collect_schema()
        outputs: dict[str, pl.LazyFrame] = {}
        taken = pl.lit(False)
        for i, branch in enumerate(cfg.branches):
            matches = compile_condition(branch.condition, schema, f"branches[{i}].condition")
            outputs[branch.name] = lf.filter(matches & ~taken)
            taken = taken | matches
        outputs[DEFAULT_BRANCH] = lf.filter(~taken)
        return outputs
