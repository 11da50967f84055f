"""Helpers shared by the transformation modules: schema checks that raise `TransformError`.

The spec validator calls `apply` on empty frames with a known schema, so every type check here looks at
the schema only, never at the data.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from engine import paths
from engine.errors import TransformError
from engine.lazy import lazy_module

pl = lazy_module("polars")


class Params(BaseModel):
    """Base of the nested `parameters` objects: unknown keys are errors, as everywhere in the spec."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


def schema_of(lf: pl.LazyFrame) -> pl.Schema:
    return lf.collect_schema()


def field(path: str, schema: pl.Schema, param: str) -> tuple[pl.Expr, pl.DataType]:
    """The expression reading `path` and its dtype, or a `TransformError` naming the config key."""
    try:
        return paths.resolve(path, schema), paths.dtype_of(path, schema)
    except KeyError:
        raise TransformError(paths.missing_field_message(path, schema), param=param) from None


def is_numeric(dtype: pl.DataType) -> bool:
    # A Null column (every value missing, so no type was inferred) fits any operation.
    return dtype.is_numeric() or dtype == pl.Null


def is_text(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum | pl.Categorical)


def is_temporal(dtype: pl.DataType) -> bool:
    return dtype.is_temporal() or dtype == pl.Null


def numeric_field(path: str, schema: pl.Schema, param: str, what: str) -> pl.Expr:
    expr, dtype = field(path, schema, param)
    if not is_numeric(dtype):
        raise TransformError(f"{what} needs a numeric field, but '{path}' is {dtype}", param=param)
    return expr


def text_field(path: str, schema: pl.Schema, param: str, what: str) -> pl.Expr:
    expr, dtype = field(path, schema, param)
    if not is_text(dtype):
        raise TransformError(f"{what} needs a text field, but '{path}' is {dtype}", param=param)
    return expr.cast(pl.String)


def flat_name(path: str) -> str:
    """A top-level column name for a derived value of `path` (`address.city` -> `address_city`)."""
    return path.replace(".", "_")


def type_name(value: Any) -> str:
    return type(value).__name__


def config_error(model: str, loc: tuple, message: str, value: Any = None) -> ValidationError:
    """A pydantic ValidationError pointing at `loc` inside the model being validated.

    Raised from a validator, pydantic prefixes the outer location, so the spec validator gets a full
    JSON path such as `transformations[2].parameters.digits` instead of the model's root.
    """
    error = PydanticCustomError("invalid_config", message)
    return ValidationError.from_exception_data(model, [{"type": error, "loc": loc, "input": value}])


def validate_parameters(
    data: Any, key: str, models: dict[str, type[Params]], model_name: str, field_name: str = "parameters"
) -> Any:
    """`model_validator(mode="before")` helper: validate `data[field_name]` with the model for `data[key]`.

    The parameters a step takes depend on its operation, so the model is chosen by the operation and
    errors keep their location (`parameters.digits`), naming the operation that needs them.
    """
    if not isinstance(data, dict) or not isinstance(data.get(key), str) or data[key] not in models:
        return data  # the Literal on `key` reports the bad operation itself
    operation = data[key]
    raw = data.get(field_name)
    raw = {} if raw is None else raw
    try:
        parsed = models[operation].model_validate(raw)
    except ValidationError as exc:
        errors = []
        for error in exc.errors():
            loc = (field_name, *error["loc"])
            if error["type"] == "missing":
                where = ".".join(str(p) for p in loc)
                message = f"{key} '{operation}' needs {where}"
            elif error["type"] == "extra_forbidden":
                allowed = ", ".join(models[operation].model_fields) or "none"
                message = f"{key} '{operation}' does not take this parameter (allowed: {allowed})"
            else:
                message = error["msg"]
            errors.append(
                {"type": PydanticCustomError("invalid_config", message), "loc": loc, "input": error["input"]}
            )
        raise ValidationError.from_exception_data(model_name, errors) from None
    return {**data, field_name: parsed}


def nested_errors(exc: ValidationError, prefix: tuple) -> list[dict]:
    """`exc`'s errors moved under `prefix`, ready for `ValidationError.from_exception_data`."""
    return [
        {
            "type": PydanticCustomError(error["type"], error["msg"]),
            "loc": (*prefix, *error["loc"]),
            "input": error.get("input"),
        }
        for error in exc.errors()
    ]
