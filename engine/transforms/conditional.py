"""`conditional`: apply one list of steps to the records that match a condition, another to the rest.

Each step is a nested transformation config of a single-input type (no join, union, split or lookup
from a second input). Records rejected by nested validations go to the conditional's `rejected` port.
The matching records come first in the output, then the others; within each part the order is kept.
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl
from pydantic import Field, ValidationError, field_validator

from engine.context import NodeContext
from engine.errors import TransformError
from engine.transforms import registry
from engine.transforms.base import OUT, REJECT_REASON, REJECTED, Transform, TransformConfig
from engine.transforms.common import config_error, nested_errors
from engine.transforms.conditions import Condition, compile_condition


def validate_step(step: Any) -> tuple[type[Transform], TransformConfig]:
    """Validate one nested step dict; errors carry locations relative to the step."""
    from engine.transforms import catalog  # noqa: F401  (every built-in type must be registered)

    if not isinstance(step, dict):
        raise config_error("Step", (), "a step is an object with a `type`", step)
    type_name = step.get("type")
    if not isinstance(type_name, str) or registry.canonical(type_name) is None:
        allowed = ", ".join(n for n in registry.names() if _nestable_type(registry.get(n)))
        raise config_error("Step", ("type",), f"unknown or missing step type (allowed: {allowed})", type_name)
    cls = registry.get(type_name)
    config = cls.Config.model_validate(step)
    single_input = not (cls.side_sources(config) or getattr(config, "uses_input", False))
    if not _nestable_type(cls) or not single_input or not set(cls(config).output_ports()) <= {OUT, REJECTED}:
        raise config_error(
            "Step",
            ("type",),
            f"'{type_name}' cannot be nested: it needs a second input or has several outputs",
        )
    return cls, config


def _nestable_type(cls: type[Transform]) -> bool:
    return cls.min_inputs <= 1 and cls.type != "split"


class ConditionalConfig(TransformConfig):
    type: Literal["conditional"] = "conditional"
    condition: Condition = Field(description="Records that match get the `then` steps, the others `else`.")
    then: list[dict[str, Any]] = Field(
        default_factory=list, description="Transformations (each a config with `type`) for matching records."
    )
    else_: list[dict[str, Any]] = Field(
        default_factory=list, alias="else", description="Transformations for the other records."
    )

    @field_validator("then", "else_")
    @classmethod
    def _valid_steps(cls, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        errors = []
        for index, step in enumerate(steps):
            try:
                validate_step(step)
            except ValidationError as exc:
                errors += nested_errors(exc, (index,))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return steps


@registry.register
class Conditional(Transform):
    """Apply `then` steps to the records matching a condition and `else` steps to the others."""

    type = "conditional"
    title = "Conditional"
    category = "clean"
    Config = ConditionalConfig

    def __init__(self, config: TransformConfig, node_id: str = "node"):
        super().__init__(config, node_id)
        cfg: ConditionalConfig = config  # type: ignore[assignment]
        self.branches = {
            "then": [self._build(step, f"then[{i}]") for i, step in enumerate(cfg.then)],
            "else": [self._build(step, f"else[{i}]") for i, step in enumerate(cfg.else_)],
        }

    def _build(self, step: dict[str, Any], where: str) -> Transform:
        cls, config = validate_step(step)
        return cls(config, f"{self.node_id}.{where}")

    @property
    def steps(self) -> list[Transform]:
        return [*self.branches["then"], *self.branches["else"]]

    def output_ports(self) -> list[str]:
        can_reject = any(REJECTED in step.output_ports() for step in self.steps)
        return [OUT, REJECTED] if can_reject else [OUT]

    @property
    def streaming(self) -> bool:
        return all(step.streaming for step in self.steps)

    @property
    def fails_on_reject(self) -> bool:
        return any(step.fails_on_reject for step in self.steps)

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: ConditionalConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        matches = compile_condition(cfg.condition, lf.collect_schema())
        outputs, rejects = [], []
        for name, frame in (("then", lf.filter(matches)), ("else", lf.filter(~matches))):
            out, rejected = _run_steps(self.branches[name], frame, ctx, name)
            outputs.append(out)
            rejects.extend(rejected)
        result = {OUT: _concat(outputs)}
        if REJECTED in self.output_ports():
            empty = lf.clear().with_columns(pl.lit(None, dtype=pl.String).alias(REJECT_REASON))
            result[REJECTED] = _concat(rejects) if rejects else empty
        return result


def _run_steps(
    steps: list[Transform], lf: pl.LazyFrame, ctx: NodeContext, branch: str
) -> tuple[pl.LazyFrame, list[pl.LazyFrame]]:
    rejects = []
    for index, step in enumerate(steps):
        try:
            outputs = step.apply([lf], ctx)
        except TransformError as exc:
            where = f"{branch}[{index}]"
            param = f"{where}.{exc.param}" if exc.param else where
            message = str(exc).removeprefix(f"node '{exc.node}': ") if exc.node else str(exc)
            raise TransformError(f"{where}: {message}", param=param) from exc
        lf = outputs[OUT]
        if REJECTED in outputs:
            rejects.append(outputs[REJECTED])
    return lf, rejects


def _concat(frames: list[pl.LazyFrame]) -> pl.LazyFrame:
    try:
        combined = pl.concat(frames, how="diagonal_relaxed")
        combined.collect_schema()
    except pl.exceptions.PolarsError as exc:  # e.g. then makes a field a number, else leaves it text
        raise TransformError(
            f"then and else results cannot be combined: {str(exc).splitlines()[0]}"
        ) from None
    return combined
