"""`field_calculation`: arithmetic over fields, or a safe expression."""

from __future__ import annotations

from functools import reduce
from typing import Literal

import polars as pl
from pydantic import Field, model_validator

from engine import paths
from engine.context import NodeContext
from engine.transforms.base import OUT, Transform, TransformConfig
from engine.transforms.common import Params, config_error, numeric_field
from engine.transforms.expression import (
    ExpressionError,
    compile_expression,
    null_if_not_finite,
    parse_expression,
)
from engine.transforms.registry import register


class CalculationParameters(Params):
    source_fields: list[str] | None = Field(
        None, description="For multiply/add/subtract/divide: two or more numeric fields, left to right."
    )
    output_field: str | None = Field(None, description="Field written (default: field_name).")
    expression: str | None = Field(
        None, description="For expression: arithmetic over fields, e.g. `price * quantity * (1 - discount)`."
    )


class FieldCalculationConfig(TransformConfig):
    type: Literal["field_calculation"] = "field_calculation"
    field_name: str | None = Field(None, description="Field written (unless parameters.output_field is set).")
    operation: Literal["multiply", "add", "subtract", "divide", "expression"] = Field(
        description="Arithmetic over parameters.source_fields, or parameters.expression."
    )
    parameters: CalculationParameters = Field(description="source_fields or expression; output_field.")

    @model_validator(mode="after")
    def _check(self) -> FieldCalculationConfig:
        name, p = type(self).__name__, self.parameters
        if self.field_name is None and p.output_field is None:
            raise config_error(name, ("field_name",), "field_name (or parameters.output_field) is required")
        if self.operation == "expression":
            if not p.expression:
                raise config_error(
                    name, ("parameters", "expression"), "operation 'expression' needs parameters.expression"
                )
            try:
                parse_expression(p.expression)
            except ExpressionError as exc:
                raise config_error(name, ("parameters", "expression"), str(exc), p.expression) from None
        elif not p.source_fields or len(p.source_fields) < 2:
            raise config_error(
                name,
                ("parameters", "source_fields"),
                f"operation '{self.operation}' needs 2 or more source_fields",
            )
        return self

    @property
    def output(self) -> str:
        return self.parameters.output_field or self.field_name or ""


@register
class FieldCalculation(Transform):
    """Compute a numeric field. Division by zero (or any non-finite result) gives null, never infinity."""

    type = "field_calculation"
    title = "Calculate"
    category = "calculate"
    Config = FieldCalculationConfig

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: FieldCalculationConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        schema = lf.collect_schema()
        if cfg.operation == "expression":
            value = compile_expression(cfg.parameters.expression or "", schema)
        else:
            operands = [
                numeric_field(f, schema, "parameters.source_fields", cfg.operation)
                for f in cfg.parameters.source_fields or []
            ]
            value = null_if_not_finite(reduce(_OPERATIONS[cfg.operation], operands), schema)
        return {OUT: paths.assign(lf, cfg.output, value, schema)}


def _divide(left: pl.Expr, right: pl.Expr) -> pl.Expr:
    return pl.when(right != 0).then(left / right)


_OPERATIONS = {
    "multiply": lambda a, b: a * b,
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "divide": _divide,
}
