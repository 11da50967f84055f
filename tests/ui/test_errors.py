"""How the GUI words an error: one line, whatever the error carries below its first line."""

from __future__ import annotations

from engine.errors import SpecError, SpecIssue
from ui.errors import MAX_CHARS, one_line


def test_a_spec_error_is_its_first_issue_with_the_count_of_the_rest():
    error = SpecError(
        [SpecIssue("nodes[2].config.path", "field required"), SpecIssue("", "no destination")],
        source="p.json",
    )
    assert one_line(error) == "nodes[2].config.path: field required (+1 more)"
    assert one_line(SpecError([SpecIssue("", "invalid JSON at line 1")])) == "invalid JSON at line 1"


def test_other_errors_give_their_first_non_empty_line_or_their_type():
    assert (
        one_line(RuntimeError("\n  Binder Error: no column x\nLINE 1: SELECT x\n"))
        == "Binder Error: no column x"
    )
    assert one_line(ValueError()) == "ValueError"
    assert one_line("plain text\nmore") == "plain text"
    long = one_line(OSError("x" * 500))
    assert len(long) == MAX_CHARS and long.endswith("…")
