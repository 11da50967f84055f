"""The newest value per tag (issue 12): kept in the writer's memory and written to `tag_last` now and
then (engine/store/tag_newest.py); the answer is the same rule whether tags repeat in a batch or
not, and whether the rows are in the table yet or only kept:
the latest timestamp wins, a missing one is the oldest, a tie goes to the later arrival."""

from __future__ import annotations

import math
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian
from engine.tags import TagBatchBuilder

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def batch(rows: list[tuple[str, float, int | None]]) -> pl.DataFrame:
    builder = TagBatchBuilder("test")
    for tag, value, _ in rows:
        builder.add(tag, value, timestamp=T0)
    stamps = [None if s is None else T0 + timedelta(seconds=s) for _, _, s in rows]
    frame = builder.take()
    return frame.with_columns(pl.Series("timestamp", stamps, dtype=frame.schema["timestamp"]))


def expected_newest(batches: list[list[tuple[str, float, int | None]]]) -> dict[str, float]:
    """The rule, written out: per tag the row with the latest timestamp (None oldest), the later
    arrival on a tie."""
    best: dict[str, tuple[int, float]] = {}
    for rows in batches:
        for tag, value, seconds in rows:
            key = -1 if seconds is None else seconds
            if tag not in best or key >= best[tag][0]:
                best[tag] = (key, value)
    return {tag: value for tag, (_, value) in best.items()}


rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.floats(-1e6, 1e6, allow_nan=False),
        st.one_of(st.none(), st.integers(0, 5)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=12, deadline=None)
@given(batches=st.lists(rows_strategy, min_size=1, max_size=6), last_every=st.sampled_from([math.inf, 0.0]))
def test_last_values_follow_the_rule_whether_tags_repeat_or_not(batches, last_every):
    with tempfile.TemporaryDirectory() as tmp:
        historian = Historian(Path(tmp) / "h.duckdb")
        try:
            store = TagHistorian(historian)
            store.last_every = last_every
            for rows in batches:
                store.append(batch(rows))
            got = dict(store.last_values().select("tag", "value").rows())
            assert got == expected_newest(batches)
        finally:
            historian.close()
