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
from engine.tags import TagBatch, TagBatchBuilder, epoch_us

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def batch(
    rows: list[tuple[str, float | str | None, int | None]], lean: bool = False
) -> pl.DataFrame | TagBatch:
    """The rows as a frame, or (`lean`) as the TagBatch a stream's few rows travel as."""
    builder = TagBatchBuilder("test")
    for tag, value, _ in rows:
        builder.add(tag, value, timestamp=T0)
    taken = builder.take_batch()
    columns = {c: taken.column(c) for c in taken.columns}
    columns["timestamp"] = [None if s is None else epoch_us(T0 + timedelta(seconds=s)) for _, _, s in rows]
    return TagBatch(columns) if lean else TagBatch(columns).frame()


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


@settings(max_examples=20, deadline=None)
@given(
    batches=st.lists(rows_strategy, min_size=1, max_size=6),
    last_every=st.sampled_from([math.inf, 0.0]),
    lean=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_last_values_follow_the_rule_whether_tags_repeat_or_not(batches, last_every, lean):
    """... and whether the batches are frames, TagBatches (kept and compacted in Python) or both."""
    with tempfile.TemporaryDirectory() as tmp:
        historian = Historian(Path(tmp) / "h.duckdb")
        try:
            store = TagHistorian(historian)
            store.last_every = last_every
            for rows, small in zip(batches, lean, strict=False):
                store.append(batch(rows, small))
            got = dict(store.last_values().select("tag", "value").rows())
            assert got == expected_newest(batches)
        finally:
            historian.close()


# values of every kind a source stores: numbers, text (any Unicode but surrogates), none
mixed_rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.one_of(
            st.none(),
            st.floats(-1e6, 1e6, allow_nan=False),
            st.text(st.characters(exclude_categories=["Cs"])),
        ),
        st.one_of(st.none(), st.integers(0, 5)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=15, deadline=None)
@given(batches=st.lists(mixed_rows, min_size=1, max_size=5))
def test_a_tag_batch_is_stored_exactly_as_the_same_rows_in_a_frame(batches):
    """The historian writes a TagBatch with statement parameters straight into its columns and a
    frame through Arrow: the raw rows (numbers, text, nulls), the minute rollup and `tag_last` come
    out the same, to the microsecond."""
    stored = []
    for lean in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            historian = Historian(Path(tmp) / "h.duckdb")
            try:
                store = TagHistorian(historian)
                store.last_every = 0.0
                for rows in batches:
                    store.append(batch(rows, lean))
                store.fold_last()
                cur = historian.cursor()
                stored.append(
                    [
                        cur.execute(f"SELECT * EXCLUDE (received_at) FROM {table} ORDER BY ALL").fetchall()
                        for table in ("tags", "tag_last")
                    ]
                    + [cur.execute("SELECT * FROM tag_minutes ORDER BY ALL").fetchall()]
                )
                cur.close()
            finally:
                historian.close()
    assert stored[0] == stored[1]
    assert len(stored[0][0]) == sum(len(rows) for rows in batches)
