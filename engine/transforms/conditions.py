"""Record conditions: `{"field", "operator", "value"}` composed with `all`, `any` and `not`.

Semantics (shared by record_filter, split, conditional and the per-record reference in the tests):
- A null field value never matches, except with `is_null`. `not` is the complement of the match, so a
  record whose field is null *does* match `{"not": {"field": f, "operator": "equals", ...}}`.
- `equals`/`not_equals` with `value: null` mean `is_null`/`is_not_null`.
- The literal is converted to the field's type: `"5"` against an integer field compares as 5, an ISO
  string against a date/datetime field compares as that instant (naive = UTC), `"true"` against a
  boolean field as True. A number against a text field compares numerically: the text is read as a
  number and text that is not a number does not match.
- `contains`, `starts_with`, `ends_with` compare text (the field is read as text); `contains` on a
  list field tests membership. `matches` is a regex search (anchor with `^...$` for a full match).
- `between` is inclusive on both ends.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.errors import TransformError
from engine.transforms.common import config_error, field, is_numeric, is_text
from engine.transforms.isotime import parse_date_literal, parse_literal

Operator = Literal[
    "equals",
    "not_equals",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "ends_with",
    "matches",
    "is_null",
    "is_not_null",
    "between",
]

_NO_VALUE = {"is_null", "is_not_null"}
_LIST_VALUE = {"in", "not_in"}
_TEXT_VALUE = {"starts_with", "ends_with", "matches"}
_ORDERED = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}


class Condition(BaseModel):
    """One test on a field, or `all` / `any` / `not` of other conditions (exactly one form)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    field: str | None = Field(None, description="Field path to test, e.g. `status` or `address.city`.")
    operator: Operator | None = Field(None, description="How the field is compared with `value`.")
    value: Any = Field(
        None,
        description="Literal to compare with: a list for `in`/`not_in`, [low, high] for `between`, "
        "a regex for `matches`, nothing for `is_null`/`is_not_null`.",
    )
    all: list[Condition] | None = Field(None, description="Matches when every condition matches.")
    any: list[Condition] | None = Field(None, description="Matches when at least one condition matches.")
    not_: Condition | None = Field(None, alias="not", description="Matches when the condition does not.")

    @model_validator(mode="after")
    def _one_form(self) -> Condition:
        forms = [name for name in ("all", "any", "not_") if getattr(self, name) is not None]
        if self.field is not None or self.operator is not None:
            forms.append("field")
        if len(forms) != 1:
            raise config_error(
                "Condition",
                (),
                "a condition is exactly one of {field, operator, value}, {all: [...]}, {any: [...]} "
                "or {not: {...}}",
            )
        if forms == ["field"]:
            self._check_test()
        return self

    def _check_test(self) -> None:
        if self.field is None:
            raise config_error("Condition", ("field",), "field is required with operator")
        if self.operator is None:
            raise config_error("Condition", ("operator",), "operator is required with field")
        op, value = self.operator, self.value
        if op in _NO_VALUE and value is not None:
            raise config_error("Condition", ("value",), f"operator '{op}' takes no value", value)
        if op in _LIST_VALUE and not isinstance(value, list):
            raise config_error("Condition", ("value",), f"operator '{op}' needs a list value", value)
        if op == "between" and not (isinstance(value, list) and len(value) == 2 and None not in value):
            raise config_error("Condition", ("value",), "operator 'between' needs [low, high]", value)
        if op in _TEXT_VALUE and not isinstance(value, str):
            raise config_error("Condition", ("value",), f"operator '{op}' needs a text value", value)
        if op in (*_ORDERED, "contains") and (value is None or isinstance(value, list | dict)):
            raise config_error("Condition", ("value",), f"operator '{op}' needs a single value", value)
        if op in ("equals", "not_equals") and isinstance(value, list | dict):
            raise config_error(
                "Condition", ("value",), f"operator '{op}' needs a single value (use 'in' for a list)", value
            )
        if op == "matches":
            try:
                re.compile(value)
            except re.error as exc:
                raise config_error("Condition", ("value",), f"invalid regex: {exc}", value) from None

    def field_paths(self) -> list[str]:
        """Every field path the condition reads."""
        if self.field is not None:
            return [self.field]
        children = self.all or self.any or ([self.not_] if self.not_ else [])
        return [p for child in children for p in child.field_paths()]


def compile_condition(cond: Condition, schema: pl.Schema, param: str = "condition") -> pl.Expr:
    """A boolean expression, never null (null field values are `False`, see the module docstring)."""
    if cond.all is not None:
        parts = [compile_condition(c, schema, f"{param}.all[{i}]") for i, c in enumerate(cond.all)]
        return pl.all_horizontal(parts) if parts else pl.lit(True)
    if cond.any is not None:
        parts = [compile_condition(c, schema, f"{param}.any[{i}]") for i, c in enumerate(cond.any)]
        return pl.any_horizontal(parts) if parts else pl.lit(False)
    if cond.not_ is not None:
        return ~compile_condition(cond.not_, schema, f"{param}.not")
    return _compile_test(cond, schema, param).fill_null(False)


def _compile_test(cond: Condition, schema: pl.Schema, param: str) -> pl.Expr:
    assert cond.field is not None and cond.operator is not None
    col, dtype = field(cond.field, schema, f"{param}.field")
    return compare(col, dtype, cond.operator, cond.value, cond.field, f"{param}.value")


def compare(col: pl.Expr, dtype: pl.DataType, op: str, value: Any, path: str, param: str) -> pl.Expr:
    """`col <op> value` for an expression of type `dtype` (may be null where the value is null)."""
    if op == "is_null" or (op == "equals" and value is None):
        return col.is_null()
    if op == "is_not_null" or (op == "not_equals" and value is None):
        return col.is_not_null()
    if op in ("contains", "starts_with", "ends_with", "matches"):
        return _text_test(col, dtype, op, value)
    values = value if isinstance(value, list) else [value]
    col, literals, common = _comparable(col, dtype, values, path, param)
    if op in ("in", "not_in"):
        member = col.is_in(pl.lit(pl.Series(literals, dtype=common)).implode())
        return member if op == "in" else ~member
    if op == "between":
        low, high = (pl.lit(v) for v in literals)
        return (col >= low) & (col <= high)
    literal = pl.lit(literals[0])
    if op == "equals":
        return col == literal
    if op == "not_equals":
        return col != literal
    return getattr(col, _ORDERED[op])(literal)


def _text_test(col: pl.Expr, dtype: pl.DataType, op: str, value: Any) -> pl.Expr:
    if op == "contains" and isinstance(dtype, pl.List):
        return col.list.contains(pl.lit(value))
    text = col.cast(pl.String)
    if op == "contains":
        return text.str.contains(str(value), literal=True)
    if op == "starts_with":
        return text.str.starts_with(value)
    if op == "ends_with":
        return text.str.ends_with(value)
    return text.str.contains(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _comparable(
    col: pl.Expr, dtype: pl.DataType, values: list, path: str, param: str
) -> tuple[pl.Expr, list, pl.DataType | None]:
    """The field, the literals and their common type (see the module docstring)."""
    if is_numeric(dtype) and dtype != pl.Null:
        numbers = [_as_number(v, dtype, path, param) for v in values]
        if dtype.is_integer() and any(isinstance(n, float) for n in numbers):
            return col.cast(pl.Float64), numbers, pl.Float64
        return col, numbers, dtype
    if is_text(dtype) and dtype != pl.Null:
        if all(_is_number(v) for v in values):
            return col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False), values, pl.Float64
        return col.cast(pl.String), [v if isinstance(v, str) else _text_of(v) for v in values], pl.String
    if dtype == pl.Boolean:
        return col, [_as_bool(v, path, param) for v in values], pl.Boolean
    if dtype == pl.Date:
        return col, [_as_temporal(v, path, param, date_only=True) for v in values], pl.Date
    if isinstance(dtype, pl.Datetime):
        instants = [_as_temporal(v, path, param, date_only=False) for v in values]
        if dtype.time_zone is None:  # naive column: compare in UTC wall time
            naive = [t.replace(tzinfo=None) for t in instants]
            return col, naive, pl.Datetime(dtype.time_unit)
        return col.dt.convert_time_zone("UTC"), instants, pl.Datetime(dtype.time_unit, "UTC")
    return col, values, None


def _text_of(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _as_number(value: Any, dtype: pl.DataType, path: str, param: str) -> int | float:
    if _is_number(value):
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
        else:
            return int(number) if number.is_integer() and dtype.is_integer() else number
    raise TransformError(f"value {value!r} is not a number, but field '{path}' is {dtype}", param=param)


def _as_bool(value: Any, path: str, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise TransformError(f"value {value!r} is not true/false, but field '{path}' is Boolean", param=param)


def _as_temporal(value: Any, path: str, param: str, *, date_only: bool):
    if isinstance(value, str):
        try:
            return parse_date_literal(value) if date_only else parse_literal(value)
        except ValueError:
            pass
    kind = "date (YYYY-MM-DD)" if date_only else "ISO 8601 timestamp"
    raise TransformError(f"value {value!r} is not a {kind}, as field '{path}' needs", param=param)
