"""Errors as the GUI shows them: one line in a toast, a badge or a status line, never a traceback."""

from __future__ import annotations

MAX_CHARS = 200


def one_line(error: BaseException | str) -> str:
    """A spec error's first issue (its JSON path, if any, and "+N more"), else the first non-empty line of the message
    (engine errors can carry a trace or a query below it), else the error's type; at most
    MAX_CHARS characters."""
    issues = getattr(error, "issues", None)
    if issues:
        first = issues[0]
        more = f" (+{len(issues) - 1} more)" if len(issues) > 1 else ""
        text = f"{first.path}: {first.message}{more}" if first.path else f"{first.message}{more}"
    else:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        text = lines[0] if lines else type(error).__name__
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"
