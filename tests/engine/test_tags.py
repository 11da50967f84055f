"""Tag records: the builder every protocol uses, its timestamps and the schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.tags import (
    LEAN_ROWS,
    TAG_SCHEMA,
    TagBatch,
    TagBatchBuilder,
    as_frame,
    concat_batches,
    conform,
    epoch_us,
    from_epoch_us,
    has_value,
    is_frame,
    split_value,
)

moments = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1))


@given(moments, st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_epoch_microseconds_match_polars_for_naive_utc_and_zoned_times(moment, offset_minutes):
    zoned = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    expected_naive = pl.Series([moment], dtype=pl.Datetime("us")).cast(pl.Int64)[0]
    expected_zoned = pl.Series([zoned.astimezone(UTC)], dtype=pl.Datetime("us", "UTC")).cast(pl.Int64)[0]
    assert epoch_us(moment) == expected_naive  # naive means UTC, as asyncua and opendnp3 give them
    assert epoch_us(zoned) == expected_zoned
    assert epoch_us(None) is None


def test_builder_makes_one_batch_of_the_tag_schema_and_starts_empty_again():
    b = TagBatchBuilder("plc1")
    source_time = datetime(2026, 3, 1, 12, 0, 0, 250_000)  # naive: UTC
    server_time = datetime(2026, 3, 1, 13, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    received = datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)
    b.add("a", 1.5, timestamp=source_time, server_timestamp=server_time, received_at=received)
    b.add("b", True, quality="uncertain", reason="over_range", received_at=received)
    b.add("c", "RUN", received_at=received)
    b.extend(["d", "e"], [7, None], timestamp=received, quality=["good", "bad"], reason=[None, "timeout"])
    b.gap(["f"], at=received)
    frame = b.take()
    assert frame.schema == TAG_SCHEMA and len(b) == 0 and b.take().height == 0
    rows = {r["tag"]: r for r in frame.iter_rows(named=True)}
    assert rows["a"]["timestamp"] == source_time.replace(tzinfo=UTC)
    assert rows["a"]["server_timestamp"] == datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert rows["b"]["timestamp"] == received  # no source time: when it was received
    assert (rows["b"]["value"], rows["b"]["quality"], rows["b"]["reason"]) == (1.0, "uncertain", "over_range")
    assert (rows["c"]["value"], rows["c"]["value_text"]) == (None, "RUN")
    assert (rows["e"]["quality"], rows["e"]["reason"]) == ("bad", "timeout")
    assert (rows["f"]["quality"], rows["f"]["reason"], rows["f"]["value"]) == ("bad", "comm_lost", None)
    assert set(frame["source"]) == {"plc1"}


def test_conform_orders_and_fills_the_optional_columns():
    frame = pl.DataFrame({"tag": ["x"], "value": [1], "timestamp": [datetime(2026, 1, 1, tzinfo=UTC)]})
    out = conform(frame)
    assert out.schema == TAG_SCHEMA
    assert out.row(0, named=True)["value"] == 1.0 and out["quality"].to_list() == [None]


def test_split_value_by_kind():
    assert split_value(False) == (0.0, None)
    assert split_value(3) == (3.0, None)
    assert split_value(b"\x01\xff") == (None, "01ff")
    assert split_value("text") == (None, "text")
    assert split_value(None) == (None, None)


def _batch_of(rows: list[tuple[str, float | None, int | None]], source: str = "s") -> TagBatch:
    b = TagBatchBuilder(source)
    for tag, value, us in rows:
        b.add(tag, value, timestamp=from_epoch_us(us) if us is not None else None)
    batch = b.take_batch()
    if any(us is None for _, _, us in rows):  # the builder stamps a missing time: put the None back
        columns = {c: batch.column(c) for c in batch.columns}
        columns["timestamp"] = [us for _, _, us in rows]
        batch = TagBatch(columns)
    return batch


tag_rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.none(), st.floats(allow_nan=False)),
        st.one_of(st.none(), st.integers(-(6 * 10**16), 2 * 10**17)),  # years 68 - 8307
    ),
    max_size=8,
)


@given(tag_rows, tag_rows)
def test_a_tag_batch_is_the_frame_the_builder_makes_and_concatenates_like_one(first, second):
    """TagBatch -> frame is exact (epoch µs -> UTC timestamps, numbers, nulls); concatenating
    TagBatches gives the rows Polars' concat of their frames gives; select/slice/head/tail agree."""
    a, b = _batch_of(first, "one"), _batch_of(second, "two")
    frame = a.frame()
    assert frame.schema == TAG_SCHEMA and frame.height == a.height == len(first)
    assert frame["timestamp"].dt.epoch("us").to_list() == [us for _, _, us in first]
    assert frame["value"].to_list() == [v for _, v, _ in first]
    joined = concat_batches([a, b])
    assert isinstance(joined, TagBatch)
    assert joined.frame().equals(pl.concat([a.frame(), b.frame()]))
    assert a.select(["tag", "value"]).frame().equals(frame.select("tag", "value"))
    assert a.slice(1, 2).frame().equals(frame.slice(1, 2))
    assert a.head(3).frame().equals(frame.head(3)) and a.tail(3).frame().equals(frame.tail(3))


def test_concat_of_a_tag_batch_and_a_frame_or_of_many_rows_is_a_frame():
    small = _batch_of([("a", 1.0, 5)])
    assert isinstance(concat_batches([small, small]), TagBatch)
    mixed = concat_batches([small, small.frame()])
    assert is_frame(mixed) and mixed.equals(pl.concat([small.frame(), small.frame()]))
    many = _batch_of([("a", float(i), i) for i in range(LEAN_ROWS)])
    large = concat_batches([many, small])  # more rows than LEAN_ROWS: a frame
    assert is_frame(large) and large.height == LEAN_ROWS + 1
    assert concat_batches([small]) is small and as_frame(small.frame()).equals(small.frame())


def test_a_tag_batch_refuses_unequal_columns_and_unknown_names():
    with pytest.raises(ValueError, match="unequal length"):
        TagBatch({"tag": ["a"], "value": [1.0, 2.0]})
    with pytest.raises(ValueError, match="'temperature' is not a tag column"):
        TagBatch({"tag": ["a"], "temperature": [1.0]})


def test_has_value_reads_a_tag_batch_without_polars():
    assert has_value(_batch_of([("a", 1.0, 5)]))
    bad = TagBatchBuilder("s")
    bad.gap(["a", "b"])
    assert not has_value(bad.take_batch()) and not has_value(TagBatch({"tag": [], "quality": []}))


def test_concat_of_frames_appends_alike_ones_and_aligns_unlike_ones():
    one, two = _batch_of([("a", 1.0, 5)]).frame(), _batch_of([("b", 2.0, 6), ("c", None, 7)]).frame()
    joined = concat_batches([one, two, one])  # alike frames: one source's rounds
    assert joined.equals(pl.concat([one, two, one])) and joined.schema == TAG_SCHEMA
    assert (one.height, two.height) == (1, 2)  # the inputs are left as they were
    # unlike frames (a column missing, another of a wider type): aligned, nulls where missing
    narrow = pl.DataFrame({"tag": ["x"], "value": pl.Series([3], dtype=pl.Int32)})
    aligned = concat_batches([one, narrow])
    assert aligned.height == 2 and aligned["value"].to_list() == [1.0, 3.0]
    assert aligned["quality"].to_list() == [one["quality"][0], None]
