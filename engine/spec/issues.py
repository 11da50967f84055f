"""Turn pydantic errors into SpecIssues with JSON paths and the allowed values."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from engine.errors import SpecIssue
from engine.limits import shorten


def join_path(prefix: str, loc: tuple | list) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            part = shorten(str(part), 40)  # a key may be anything a document holds
            path += f".{part}" if path else part
    return path


def from_pydantic(exc: ValidationError, prefix: str, model: type[BaseModel] | None = None) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    for err in exc.errors(include_url=False):
        loc = _strip_tags(model, tuple(err["loc"])) if model else tuple(err["loc"])
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            keys = _allowed_keys(model, loc[:-1]) if model else None
            issues.append(
                SpecIssue(
                    join_path(prefix, loc[:-1]), f"unknown key '{loc[-1]}'", ", ".join(keys) if keys else None
                )
            )
        elif kind == "missing":
            issues.append(SpecIssue(join_path(prefix, loc), "missing required field"))
        elif kind in ("literal_error", "enum"):
            issues.append(
                SpecIssue(
                    join_path(prefix, loc),
                    f"'{err.get('input')}' is not allowed",
                    str(ctx.get("expected", "")).replace("'", "") or None,
                )
            )
        elif kind == "union_tag_invalid":
            issues.append(
                SpecIssue(
                    join_path(prefix, loc),
                    f"unknown type '{ctx.get('tag')}'",
                    str(ctx.get("expected_tags", "")).replace("'", ""),
                )
            )
        elif kind == "union_tag_not_found":
            issues.append(
                SpecIssue(
                    join_path(prefix, loc),
                    f"missing '{ctx.get('discriminator', 'type')}'".replace("'''", "'"),
                )
            )
        else:
            msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            issues.append(SpecIssue(join_path(prefix, loc), msg))
    return issues


def _members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out = []
        for arg in typing.get_args(annotation):
            out += _members(arg)
        return out
    return [annotation]


def _tag_of(model: Any) -> str | None:
    if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields:
        ann = model.model_fields["type"].annotation
        if typing.get_origin(ann) is Literal:
            return typing.get_args(ann)[0]
    return None


def _step(annotation: Any, part: Any) -> tuple[Any, bool]:
    """Follow one location part; returns (next annotation, whether `part` was a union tag)."""
    for member in _members(annotation):
        is_model = isinstance(member, type) and issubclass(member, BaseModel)
        if is_model and isinstance(part, str) and part in member.model_fields:
            return member.model_fields[part].annotation, False
        origin = typing.get_origin(member)
        if origin in (list, tuple) and isinstance(part, int):
            args = typing.get_args(member)
            return (args[0] if args else Any), False
        if origin is dict and isinstance(part, str):
            args = typing.get_args(member)
            return (args[1] if len(args) > 1 else Any), False
    for member in _members(annotation):
        if _tag_of(member) == part:
            return member, True
    return Any, False


def _strip_tags(model: type[BaseModel], loc: tuple) -> tuple:
    """Pydantic puts discriminated-union tags in locations (`schedule.cron.expression`); drop them."""
    annotation: Any = model
    out = []
    for part in loc:
        annotation, was_tag = _step(annotation, part)
        if not was_tag:
            out.append(part)
    return tuple(out)


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    annotation: Any = model
    for part in loc:
        annotation, _ = _step(annotation, part)
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return list(member.model_fields)
    return None
