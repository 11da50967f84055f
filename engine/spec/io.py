"""Reading and writing pipeline documents (JSON or YAML), with located syntax errors."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from engine.errors import SpecError, SpecIssue
from engine.limits import MAX_DOCUMENT_BYTES, shorten
from engine.spec import guard
from engine.spec.models import GraphPipeline, dump
from engine.spec.validate import Compiled, validate


def read_document(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    where = str(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_DOCUMENT_BYTES + 1)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise SpecError([SpecIssue("", "file not found")], source=where) from None
    except IsADirectoryError:
        raise SpecError([SpecIssue("", "cannot read: it is a directory")], source=where) from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError(
            [SpecIssue("", f"cannot read: not UTF-8 text (byte {exc.start + 1}, line {line})")], source=where
        ) from None
    except OSError as exc:
        raise SpecError([SpecIssue("", f"cannot read: {exc.strerror or exc}")], source=where) from None
    return parse_document(text, where, yaml_syntax=path.suffix.lower() in (".yaml", ".yml"))


def parse_document(text: str, where: str = "<text>", *, yaml_syntax: bool = False) -> dict[str, Any]:
    """Parse JSON or YAML text within the limits of `engine.limits`; any problem is a SpecError."""
    if len(text) > MAX_DOCUMENT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise SpecError(
            [SpecIssue("", f"a pipeline document is at most {MAX_DOCUMENT_BYTES // (1 << 20)} MiB")],
            source=where,
        )
    if yaml_syntax:
        import yaml  # only YAML documents pay for it

        try:
            doc, problems = guard.load_yaml(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            at = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
            problem = exc.problem or exc.context or "syntax error"
            raise SpecError([SpecIssue("", f"invalid YAML at {at}: {problem}")], source=where) from None
        except yaml.YAMLError as exc:  # e.g. a control character (yaml.reader.ReaderError)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            position = getattr(exc, "position", None)
            at = f" at line {text.count(chr(10), 0, position) + 1}" if isinstance(position, int) else ""
            raise SpecError(
                [SpecIssue("", f"invalid YAML{at}: {shorten(first, 200)}")], source=where
            ) from None
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # a scalar SafeLoader cannot convert, e.g. the date 2024-02-30
            raise SpecError(
                [SpecIssue("", f"invalid YAML: {shorten(str(exc), 200)}")], source=where
            ) from None
    else:
        try:
            doc, problems = guard.load_json(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                [SpecIssue("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")],
                source=where,
            ) from None
    if problems:
        raise SpecError(problems, source=where)
    if not isinstance(doc, dict):
        raise SpecError(
            [SpecIssue("", "a pipeline document is an object (mapping) at the top level")], source=where
        )
    return doc


def spec_base_dir(spec_path: str | Path | None) -> Path:
    """Where a spec's relative file paths resolve: the spec file's folder (the working folder for a
    document that has no file). Validation and runs both use this one rule."""
    return Path(spec_path).resolve().parent if spec_path else Path.cwd()


def load_pipeline(path: str | Path, *, check_schemas: bool = True, ctx: Any = None) -> Compiled:
    """Read and validate a spec file. Without `ctx`, the schema checks read the sources relative to
    the spec's folder (`spec_base_dir`), as a run of it does."""
    doc = read_document(path)
    if ctx is None and check_schemas:
        from engine.context import RunContext

        ctx = RunContext(base_dir=spec_base_dir(path))
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
