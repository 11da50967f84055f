"""`field_mapping` (alias `field_operation`): change one field in place."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import Field, SkipValidation, model_validator

from engine import paths
from engine.context import NodeContext
from engine.errors import TransformError
from engine.limits import MAX_ROUND_DIGITS
from engine.transforms.base import OUT, Transform, TransformConfig
from engine.transforms.casting import cast_expr, coerce_literal
from engine.transforms.common import (
    Params,
    config_error,
    field,
    is_numeric,
    is_text,
    validate_parameters,
)
from engine.transforms.registry import register


class NoParameters(Params):
    """title_case, lowercase, uppercase and trim take no parameters."""


class FormatParameters(Params):
    regex: str = Field(description="Regex whose groups feed the pattern, e.g. `(\\d{3})(\\d{4})`.")
    pattern: str = Field(description="Replacement for each match, with `$1`, `$2` for the groups.")


class ReplaceParameters(Params):
    old: str = Field(description="Text to find (a regex when `regex` is true).")
    new: str = Field("", description="Replacement text (`$1` groups allowed when `regex` is true).")
    regex: bool = Field(False, description="Read `old` as a regular expression.")


class CastParameters(Params):
    to: Literal["int", "float", "string", "bool", "date", "datetime"] = Field(
        description="Target type. Values that cannot be converted become null."
    )


class RoundParameters(Params):
    digits: int = Field(
        description="Digits after the decimal point (half away from zero).", ge=0, le=MAX_ROUND_DIGITS
    )


class DefaultParameters(Params):
    value: Any = Field(description="Value written where the field is null.")


Operation = Literal[
    "title_case", "lowercase", "uppercase", "trim", "format", "replace", "cast", "round", "default"
]
_PARAMETERS: dict[str, type[Params]] = {
    "title_case": NoParameters,
    "lowercase": NoParameters,
    "uppercase": NoParameters,
    "trim": NoParameters,
    "format": FormatParameters,
    "replace": ReplaceParameters,
    "cast": CastParameters,
    "round": RoundParameters,
    "default": DefaultParameters,
}
_TEXT_OPERATIONS = {"title_case", "lowercase", "uppercase", "trim", "format", "replace"}


class FieldMappingConfig(TransformConfig):
    type: Literal["field_mapping", "field_operation"] = "field_mapping"
    field_name: str = Field(description="Field to change in place (nested paths like `address.city`).")
    operation: Operation = Field(description="What to do with the field.")
    parameters: Annotated[
        NoParameters
        | FormatParameters
        | ReplaceParameters
        | CastParameters
        | RoundParameters
        | DefaultParameters,
        SkipValidation,  # validated by `_parameters_for_operation`, chosen by the operation
    ] = Field(
        default_factory=NoParameters,
        description="format: regex + pattern; replace: old, new, regex; cast: to; round: digits; "
        "default: value; the other operations take none.",
    )

    @model_validator(mode="before")
    @classmethod
    def _parameters_for_operation(cls, data: Any) -> Any:
        return validate_parameters(data, "operation", _PARAMETERS, cls.__name__)

    @model_validator(mode="after")
    def _regex_compiles(self) -> FieldMappingConfig:
        p = self.parameters
        checks = {"regex": p.regex} if isinstance(p, FormatParameters) else {}
        if isinstance(p, ReplaceParameters) and p.regex:
            checks = {"old": p.old}
        for key, pattern in checks.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise config_error(
                    type(self).__name__, ("parameters", key), f"invalid regex: {exc}", pattern
                ) from None
        return self


def _groups(template: str) -> str:
    # `$1abc` would name group "1abc" in Polars' regex engine; `${1}abc` is unambiguous.
    return re.sub(r"\$(\d+)", r"${\1}", template)


@register
class FieldMapping(Transform):
    """Change a field in place: case, trim, regex format/replace, cast, round or a default for nulls."""

    type = "field_mapping"
    aliases = ("field_operation",)
    title = "Field operation"
    category = "clean"
    Config = FieldMappingConfig

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        cfg: FieldMappingConfig = self.config  # type: ignore[assignment]
        lf = inputs[0]
        schema = lf.collect_schema()
        expr, dtype = field(cfg.field_name, schema, "field_name")
        op, p = cfg.operation, cfg.parameters
        if op in _TEXT_OPERATIONS and not is_text(dtype):
            raise TransformError(
                f"{op} needs a text field, but '{cfg.field_name}' is {dtype}", param="field_name"
            )
        if op == "round" and not is_numeric(dtype):
            raise TransformError(
                f"round needs a numeric field, but '{cfg.field_name}' is {dtype}", param="field_name"
            )
        text = expr.cast(pl.String)
        if op == "title_case":
            result = text.str.to_titlecase()
        elif op == "lowercase":
            result = text.str.to_lowercase()
        elif op == "uppercase":
            result = text.str.to_uppercase()
        elif op == "trim":
            result = text.str.strip_chars()
        elif isinstance(p, FormatParameters):
            result = text.str.replace_all(p.regex, _groups(p.pattern))
        elif isinstance(p, ReplaceParameters):
            new = _groups(p.new) if p.regex else p.new
            result = text.str.replace_all(p.old, new, literal=not p.regex)
        elif isinstance(p, CastParameters):
            result = cast_expr(expr, dtype, p.to, cfg.field_name)
        elif isinstance(p, RoundParameters):
            result = expr.round(p.digits, mode="half_away_from_zero") if dtype.is_float() else expr
        else:
            assert isinstance(p, DefaultParameters)
            result = expr.fill_null(coerce_literal(p.value, dtype, cfg.field_name, "parameters.value"))
        return {OUT: paths.assign(lf, cfg.field_name, result, schema)}
