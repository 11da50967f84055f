"""The transformation node contract (architecture rule 4).

A transformation is a small class: a stable `type`, a pydantic `Config`, declared input and output
ports and one hook, `apply`, which maps input LazyFrames to output LazyFrames. Nothing here runs
data: the executor decides when to collect, per batch for row-local nodes or once for blocking ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from engine.context import NodeContext
from engine.lazy import lazy_module

pl = lazy_module("polars")

REJECT_REASON = "_reject_reason"
OUT = "out"
REJECTED = "rejected"


class TransformConfig(BaseModel):
    """Base of every transformation's config. Unknown keys are errors (the spec forbids them)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)
    type: str


class Transform(ABC):
    type: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    title: ClassVar[str] = ""
    # clean | calculate | validate | combine | reshape | code | timeseries
    category: ClassVar[str] = "transform"
    description: ClassVar[str] = ""
    Config: ClassVar[type[TransformConfig]]
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1

    def __init__(self, config: TransformConfig, node_id: str = "node"):
        self.config = config
        self.node_id = node_id

    # ---- shape -------------------------------------------------------------------------------
    def output_ports(self) -> list[str]:
        return [OUT]

    @property
    def streaming(self) -> bool:
        """True when the node is row-local and may run batch by batch (one input only)."""
        return True

    @property
    def fails_on_reject(self) -> bool:
        """True when any rejected record must fail the run (validation `on_failure: fail`)."""
        return False

    @classmethod
    def side_sources(cls, config: TransformConfig) -> list[str]:
        """Linear form only: names of the other sources this step reads (join_source, ...)."""
        return []

    # ---- the hook ----------------------------------------------------------------------------
    @abstractmethod
    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        """Map input frames (in port order) to a frame per output port."""

    # ---- registry description (GUI palette, property forms) -----------------------------------
    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "type": cls.type,
            "aliases": list(cls.aliases),
            "title": cls.title or cls.type.replace("_", " ").title(),
            "category": cls.category,
            "description": cls.description or (cls.__doc__ or "").strip().splitlines()[0],
            "min_inputs": cls.min_inputs,
            "max_inputs": cls.max_inputs,
            "config_schema": cls.Config.model_json_schema(),
        }


def with_reason(lf: pl.LazyFrame, reason: pl.Expr | str) -> pl.LazyFrame:
    expr = pl.lit(reason) if isinstance(reason, str) else reason
    return lf.with_columns(expr.cast(pl.String).alias(REJECT_REASON))
