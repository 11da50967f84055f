"""Tag records: the builder every protocol uses, its timestamps and the schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from engine.tags import TAG_SCHEMA, TagBatchBuilder, conform, epoch_us, split_value

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
