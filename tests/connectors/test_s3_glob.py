"""aws_s3 key globs match what the `file` connector's globs match on a disk: Python's `glob`
(recursive) on a folder tree with the same names is the oracle."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.connectors.s3 import _glob_regex

KEYS = [
    "a.csv",
    "b.csv",
    "x",
    "a/a.csv",
    "a/b.csv",
    "a/x",
    "a/b/a.csv",
    "a/b/x",
    "b/a/b/c.csv",
    "ab/c.csv",
]
SEGMENTS = ["a", "b", "ab", "x", "*", "?", "*.csv", "a.*", "[ab]", "[ab]*", "[!a]*", "c.csv", "a.csv"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("s3-glob")
    for key in KEYS:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text("")
    return root


def on_disk(root: Path, pattern: str) -> set[str]:
    found = glob.glob(str(root / pattern), recursive=True)
    return {os.path.relpath(p, root) for p in found if os.path.isfile(p)}


def ours(pattern: str) -> set[str]:
    regex = _glob_regex(pattern)
    return {k for k in KEYS if regex.match(k)}


patterns = st.lists(st.sampled_from([*SEGMENTS, "**"]), min_size=1, max_size=4).map("/".join)


@settings(max_examples=300, deadline=None)
@given(patterns)
def test_key_globs_match_like_glob_on_disk(root, pattern):
    assert ours(pattern) == on_disk(root, pattern), pattern


def test_examples():
    assert ours("*.csv") == {"a.csv", "b.csv"}
    assert ours("**/*.csv") == {k for k in KEYS if k.endswith(".csv")}
    assert ours("a/**") == {k for k in KEYS if k.startswith("a/")}
    assert ours("?/[ab].csv") == {"a/a.csv", "a/b.csv"}
