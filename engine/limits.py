"""The limits on a pipeline document, in one place (documented in docs/pipeline-spec.md, "Limits").

A spec may come from someone else. These bounds keep reading and validating one fast and small,
whatever it holds: anything beyond them is a one-line spec error naming where, never a hang, a
crash or a 100 KB message. Each is far above what a real pipeline needs.
"""

from __future__ import annotations

from typing import Any

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
"""A pipeline file is at most 10 MiB (JSON or YAML)."""

MAX_NESTING = 64
"""Objects and lists nest at most 64 levels deep (the document itself is level 1)."""

MAX_VALUES = 1_000_000
"""At most a million values (objects, lists, scalars) in a document, counted after YAML aliases are
expanded: a "billion laughs" of nested aliases is refused before it is built."""

MAX_INTEGER_DIGITS = 100
"""A whole number has at most 100 digits (Python refuses to read more than 4,300)."""

MAX_ROUND_DIGITS = 38
"""Rounding keeps at most 38 digits after the point (the precision of a 128-bit decimal)."""

MAX_EXPRESSION_CHARS = 10_000
"""An expression (field_calculation's `parameters.expression`) is at most 10,000 characters."""

MAX_EXPRESSION_DEPTH = 200
"""An expression nests at most 200 levels: parentheses, calls and operators (each `+` of a chain
like `a + b + c` is one level)."""

MAX_ECHO_CHARS = 80
"""A value quoted in an error message is cut at 80 characters, ending in "…"."""

MAX_MESSAGE_CHARS = 400
"""No error message is longer than this, whatever it quotes."""

MAX_REPORTED_ISSUES = 100
"""The document checks report at most this many problems (then say how many more there are)."""


def shorten(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """`value` as text on one line, cut at `limit` characters with "…", lone surrogates made visible."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    if "\n" in text or "\r" in text:
        text = text.replace("\r", "\\r").replace("\n", "\\n")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
