"""Typed errors. Each one knows *where* the problem is, so the CLI can print one clear line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.limits import MAX_ECHO_CHARS, MAX_MESSAGE_CHARS, shorten

_quoted_long = re.compile(r"'([^']{" + str(MAX_ECHO_CHARS + 1) + ",})'")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class AggregatorError(Exception):
    """Base of every error the engine raises on purpose (anything else is a bug)."""

    exit_code = 1

    def one_line(self) -> str:
        return str(self)


def error_line(exc: BaseException) -> str:
    """An engine error's own line; anything else (a bug) as `Type: message`."""
    return exc.one_line() if isinstance(exc, AggregatorError) else f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a pipeline document: JSON path, what is wrong, and what is allowed."""

    path: str
    message: str
    allowed: str | None = None
    # The id of the node the issue is about, when it is about one (not part of equality).
    node: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # A quoted value may be anything a spec holds (100 KB of text, lone surrogates): cut it short.
        message = _quoted_long.sub(lambda m: f"'{shorten(m.group(1))}'", self.message)
        object.__setattr__(self, "message", shorten(message, MAX_MESSAGE_CHARS))
        object.__setattr__(self, "path", shorten(self.path, MAX_MESSAGE_CHARS))

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.allowed:
            text += f" (allowed: {self.allowed})"
        return text

    def to_dict(self) -> dict:
        out = {"path": self.path, "message": self.message, "allowed": self.allowed}
        if self.node is not None:
            out["node"] = self.node
        return out


class SpecError(AggregatorError):
    """A pipeline document is invalid. Carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, issues: list[SpecIssue], source: str | None = None):
        self.issues = list(issues)
        self.source = source
        where = f"{source}: " if source else ""
        first = str(self.issues[0]) if self.issues else "invalid pipeline"
        more = f" (+{len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        super().__init__(f"{where}{first}{more}")


class DataError(AggregatorError):
    """Input data is unreadable or does not fit: names the file, line/record and field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        record: int | None = None,
        field: str | None = None,
    ):
        self.file, self.line, self.record, self.field = file, line, record, field
        parts = []
        if file:
            parts.append(str(file))
        if line is not None:
            parts.append(f"line {line}")
        if record is not None:
            parts.append(f"record {record}")
        if field:
            parts.append(f"field '{field}'")
        where = ", ".join(parts)
        super().__init__(f"{where}: {message}" if where else message)


class ConnectorError(AggregatorError):
    """A connector could not read or write (missing file, refused connection, ...)."""


class TransformError(AggregatorError):
    """A transformation failed on data (e.g. `on_failure: fail` validation, a bad cast)."""

    def __init__(self, message: str, *, node: str | None = None, param: str | None = None):
        self.node = node
        self.param = param  # the config key at fault (e.g. "field_name"), for the spec's JSON path
        super().__init__(f"node '{node}': {message}" if node else message)


class SecretError(AggregatorError):
    """A secret named by a spec is not set: a configuration problem, never retried."""


class RunCancelled(AggregatorError):
    """The run was cancelled by the user; not a failure."""


class UsageError(AggregatorError):
    exit_code = 2
