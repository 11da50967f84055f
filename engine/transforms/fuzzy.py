"""Fuzzy duplicate detection for `deduplicate` (rapidfuzz, C++ string similarity).

The decision is sequential by nature (a record is a duplicate of an earlier *kept* record), so it walks
the records of each exact-key group in order, but every similarity test is one rapidfuzz call over all
values kept so far. NumPy is not a dependency, so `extractOne` is used rather than `cdist`.
"""

from __future__ import annotations

import polars as pl
from rapidfuzz import process
from rapidfuzz.distance import Indel

FUZZY_COLUMN = "__fuzzy"


def fuzzy_duplicates(frame: pl.DataFrame, threshold: float, *, keep_last: bool = False) -> pl.Series:
    """True for each row that duplicates an earlier kept row (a later one with `keep_last`).

    `frame` holds the fuzzy text in `__fuzzy` and the exact-match keys in its other columns.
    """
    height = frame.height
    order = list(range(height - 1, -1, -1)) if keep_last else list(range(height))
    normalized = frame.get_column(FUZZY_COLUMN).str.strip_chars().str.to_lowercase().to_list()
    exact = [c for c in frame.columns if c != FUZZY_COLUMN]
    group_ids = (
        frame.select(pl.struct(exact).rank("dense").cast(pl.Int64)).to_series().to_list()
        if exact
        else [0] * height
    )
    duplicate = [False] * height
    kept: dict[int, list[str]] = {}
    for row in order:
        value = normalized[row]
        if value is None:
            continue
        seen = kept.setdefault(group_ids[row], [])
        similar = value in seen or (
            process.extractOne(value, seen, scorer=Indel.normalized_similarity, score_cutoff=threshold)
            is not None
        )
        if similar:
            duplicate[row] = True
        else:
            seen.append(value)
    return pl.Series("duplicate", duplicate, dtype=pl.Boolean)
