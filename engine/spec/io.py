"""Reading and writing pipeline documents (JSON or YAML), with located syntax errors."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from engine.errors import SpecError, SpecIssue
from engine.spec.models import GraphPipeline, dump
from engine.spec.validate import Compiled, validate


def read_document(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([SpecIssue("", "file not found")], source=where) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([SpecIssue("", f"cannot read: {exc}")], source=where) from None
    return parse_document(text, where, yaml_syntax=path.suffix.lower() in (".yaml", ".yml"))


def parse_document(text: str, where: str = "<text>", *, yaml_syntax: bool = False) -> dict[str, Any]:
    if yaml_syntax:
        import yaml  # only YAML documents pay for it

        try:
            doc = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            at = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
            raise SpecError([SpecIssue("", f"invalid YAML at {at}: {exc.problem}")], source=where) from None
        except yaml.YAMLError as exc:
            raise SpecError([SpecIssue("", f"invalid YAML: {exc}")], source=where) from None
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                [SpecIssue("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")],
                source=where,
            ) from None
    if not isinstance(doc, dict):
        raise SpecError(
            [SpecIssue("", "a pipeline document is an object (mapping) at the top level")], source=where
        )
    return doc


def load_pipeline(path: str | Path, *, check_schemas: bool = True, ctx: Any = None) -> Compiled:
    doc = read_document(path)
    try:
        return validate(doc, check_schemas=check_schemas, ctx=ctx)
    except SpecError as exc:
        raise SpecError(exc.issues, source=str(path)) from None


def save_pipeline(pipeline: GraphPipeline, path: str | Path) -> None:
    """Saving always writes the graph form, atomically."""
    path = Path(path)
    doc = dump(pipeline)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    else:
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
