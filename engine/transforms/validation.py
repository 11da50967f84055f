"""`field_validation`: check one field of every record.

- A null value fails only `not_null`; every other check lets nulls pass, so "required and well formed"
  is two steps (`not_null`, then e.g. `email_format`). This keeps each reason precise.
- `regex` is a search (anchor with `^...$` to match the whole value); `range` is inclusive and takes
  `min`, `max` or both; `date_format` uses strftime codes (`%Y-%m-%d`).
- `unique`: the first occurrence of a value is valid and later ones are duplicates. It needs every
  record at once, so it makes the node blocking.
- `on_failure`: `reject` (default) sends failing records to port `rejected` with `_reject_reason`;
  `flag` keeps every record on `out` and adds a boolean column `<field>_valid` (for a nested path the
  dots become underscores: `address.zip` -> `address_zip_valid`); `fail` routes like `reject` and the
  executor fails the run when any record is rejected.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import Field, SkipValidation, model_validator

from engine.context import NodeContext
from engine.errors import TransformError
from engine.transforms.base import OUT, REJECT_REASON, REJECTED, Transform, TransformConfig
from engine.transforms.casting import coerce_literal
from engine.transforms.common import (
    Params,
    config_error,
    field,
    flat_name,
    is_numeric,
    is_text,
    validate_parameters,
)
from engine.transforms.conditions import compare
from engine.transforms.registry import register

EMAIL_PATTERN = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}$"
# What email_format matches: EMAIL_PATTERN once the value is trimmed, written as one pattern that
# allows the whitespace around it (Unicode White_Space, the set `str.strip_chars()` trims) instead of
# trimming first: no trimmed copy of every value is made (~40% of the check's time; on the 10 M-row
# benchmark ~0.2 CPU-s). tests/engine/test_transforms_validation.py holds the two to the same answer.
EMAIL_PADDED = r"^\s*" + EMAIL_PATTERN[1:-1] + r"\s*$"


class NoParameters(Params):
    """email_format, not_null and unique take no parameters."""


class RegexParameters(Params):
    regex: str = Field(description="Pattern the value must contain (anchor with ^...$ for all of it).")


class RangeParameters(Params):
    min: int | float | str | None = Field(None, description="Lowest allowed value (inclusive).")
    max: int | float | str | None = Field(None, description="Highest allowed value (inclusive).")


class InSetParameters(Params):
    values: list[Any] = Field(min_length=1, description="The allowed values.")


class DateFormatParameters(Params):
    format: str = Field(description="strftime format the text must follow, e.g. `%Y-%m-%d`.")


ValidationType = Literal["email_format", "regex", "range", "not_null", "in_set", "date_format", "unique"]
_PARAMETERS: dict[str, type[Params]] = {
    "email_format": NoParameters,
    "regex": RegexParameters,
    "range": RangeParameters,
    "not_null": NoParameters,
    "in_set": InSetParameters,
    "date_format": DateFormatParameters,
    "unique": NoParameters,
}


class FieldValidationConfig(TransformConfig):
    type: Literal["field_validation"] = "field_validation"
    field_name: str = Field(description="Field to check (nested paths allowed).")
    validation_type: ValidationType = Field(description="The check.")
    parameters: Annotated[
        NoParameters | RegexParameters | RangeParameters | InSetParameters | DateFormatParameters,
        SkipValidation,  # validated by `_parameters_for_type`, chosen by validation_type
    ] = Field(
        default_factory=NoParameters,
        description="regex: regex; range: min and/or max; in_set: values; date_format: format.",
    )
    on_failure: Literal["reject", "flag", "fail"] = Field(
        "reject",
        description="reject: to port `rejected`; flag: keep and add `<field>_valid`; fail: fail the run.",
    )

    @model_validator(mode="before")
    @classmethod
    def _parameters_for_type(cls, data: Any) -> Any:
        return validate_parameters(data, "validation_type", _PARAMETERS, cls.__name__)

    @model_validator(mode="after")
    def _check(self) -> FieldValidationConfig:
        p, name = self.parameters, type(self).__name__
        if isinstance(p, RangeParameters) and p.min is None and p.max is None:
            raise config_error(
                name, ("parameters",), "validation 'range' needs parameters.min and/or parameters.max"
            )
        if isinstance(p, RegexParameters):
            try:
                re.compile(p.regex)
            except re.error as exc:
                raise config_error(name, ("parameters", "regex"), f"invalid regex: {exc}", p.regex) from None
        return self


_VALID = "__aggregator_valid"


@register
class FieldValidation(Transform):
    """Check a field; failing records are rejected with a reason, flagged, or fail the run."""

    type = "field_validation"
    title = "Validate field"
    category = "validate"
    Config = FieldValidationConfig

    @property
    def cfg(self) -> FieldValidationConfig:
        return self.config  # type: ignore[return-value]

    def output_ports(self) -> list[str]:
        return [OUT] if self.cfg.on_failure == "flag" else [OUT, REJECTED]

    @property
    def streaming(self) -> bool:
        return self.cfg.validation_type != "unique"

    @property
    def fails_on_reject(self) -> bool:
        return self.cfg.on_failure == "fail"

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg, lf = self.cfg, inputs[0]
        schema = lf.collect_schema()
        value, dtype = field(cfg.field_name, schema, "field_name")
        valid, reason = _check(cfg, value, dtype)
        if cfg.validation_type != "not_null":
            valid = valid | value.is_null()
        valid = valid.fill_null(False)
        if cfg.on_failure == "flag":
            return {OUT: lf.with_columns(valid.alias(f"{flat_name(cfg.field_name)}_valid"))}
        # The check runs once: both ports filter the same marked frame, cached so that collect_all
        # shares it even when it lies inside another shared subplan (a second validation's: Polars
        # shares the largest common subplan only, and the first validation's rejects read and
        # checked the source again).
        marked = lf.with_columns(valid.alias(_VALID)).cache()
        rejected = (
            marked.filter(~pl.col(_VALID))
            .drop(_VALID)
            .with_columns(_reason_of(cfg.field_name, reason).alias(REJECT_REASON))
        )
        return {OUT: marked.filter(pl.col(_VALID)).drop(_VALID), REJECTED: rejected}


def _quoted(value: pl.Expr) -> pl.Expr:
    return pl.concat_str([pl.lit("'"), value.cast(pl.String), pl.lit("'")])


def _reason_of(name: str, reason: pl.Expr | str) -> pl.Expr:
    """The `_reject_reason` column: the field's name before the check's reason. A constant reason
    is one literal (a concatenation is made again for every rejected row: Polars does not fold it)."""
    if isinstance(reason, str):
        return pl.lit(f"{name}: {reason}", pl.String)
    return pl.concat_str([pl.lit(f"{name}: "), reason])


def _check(cfg: FieldValidationConfig, value: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr | str]:
    """(is valid, reason text): the reason is a str where it is the same for every failing row."""
    kind, p, path = cfg.validation_type, cfg.parameters, cfg.field_name
    if kind == "not_null":
        return value.is_not_null(), "value is missing (null)"
    if kind == "unique":
        # Only the first record of each value is valid: later duplicates are rejected.
        return value.is_first_distinct(), pl.concat_str([pl.lit("duplicate value "), _quoted(value)])
    if kind == "email_format":
        if not is_text(dtype):
            raise TransformError(
                f"email_format needs a text field, but '{path}' is {dtype}", param="field_name"
            )
        return value.cast(pl.String).str.contains(EMAIL_PADDED), "not a valid email address"
    if isinstance(p, RegexParameters):
        matched = value.cast(pl.String).str.contains(p.regex)
        return matched, pl.concat_str([_quoted(value), pl.lit(f" does not match the pattern '{p.regex}'")])
    if isinstance(p, RangeParameters):
        return _range(value, dtype, p, path)
    if isinstance(p, InSetParameters):
        return _in_set(value, dtype, p, path)
    assert isinstance(p, DateFormatParameters)
    if not is_text(dtype):
        raise TransformError(f"date_format needs a text field, but '{path}' is {dtype}", param="field_name")
    parsed = value.cast(pl.String).str.strptime(pl.Datetime("us"), p.format, strict=False)
    return parsed.is_not_null(), pl.concat_str(
        [_quoted(value), pl.lit(f" does not match the date format '{p.format}'")]
    )


def _range(value: pl.Expr, dtype: pl.DataType, p: RangeParameters, path: str) -> tuple[pl.Expr, pl.Expr]:
    if not (is_numeric(dtype) or dtype.is_temporal()):
        raise TransformError(
            f"range needs a numeric or date field, but '{path}' is {dtype}", param="field_name"
        )
    compare_type = pl.Float64 if is_numeric(dtype) else dtype
    valid, reason = pl.lit(True), pl.lit(None, dtype=pl.String)
    text = value.cast(pl.String)
    if p.max is not None:
        high = coerce_literal(p.max, compare_type, path, "parameters.max")
        valid = valid & (value <= high)
        reason = pl.when(value > high).then(pl.concat_str([text, pl.lit(f" is above the maximum {p.max}")]))
    if p.min is not None:
        low = coerce_literal(p.min, compare_type, path, "parameters.min")
        valid = valid & (value >= low)
        reason = (
            pl.when(value < low)
            .then(pl.concat_str([text, pl.lit(f" is below the minimum {p.min}")]))
            .otherwise(reason)
        )
    return valid, reason


def _in_set(value: pl.Expr, dtype: pl.DataType, p: InSetParameters, path: str) -> tuple[pl.Expr, pl.Expr]:
    # The condition operator `in` already converts the literals to the field's type.
    member = compare(value, dtype, "in", p.values, path, "parameters.values")
    listed = ", ".join(str(v) for v in p.values)
    return member, pl.concat_str([_quoted(value), pl.lit(f" is not one of: {listed}")])
