"""The receipt times a stream samples for its latency window (engine/streaming/latency.py): read
value by value when a frame gives a few, by converting the column when it gives many; the same
times either way, for any time unit, time zone and nulls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.streaming.latency import FEW_SAMPLES, received_us, sample_step
from engine.tags import TagBatch

ARRIVED = 1_700_000_000_000_000
BASE = datetime(2026, 12, 4, tzinfo=UTC)


def _converted(series: pl.Series, step: int) -> list[int]:
    """The reference: the whole column converted by Polars."""
    return series.gather_every(step).dt.epoch("us").fill_null(ARRIVED).to_list()


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.one_of(st.none(), st.integers(-(10**12), 10**12)), min_size=0, max_size=300),
    unit=st.sampled_from(["us", "ms", "ns"]),
    zone=st.sampled_from([None, "UTC", "Europe/Paris"]),
    step=st.integers(1, 12),
)
def test_sampled_receipt_times_are_the_columns_whatever_the_path(offsets, unit, zone, step):
    moments = [None if o is None else BASE + timedelta(microseconds=o) for o in offsets]
    series = pl.Series("received_at", moments, dtype=pl.Datetime("us", "UTC"))
    series = series.cast(pl.Datetime(unit, "UTC"))
    series = series.dt.convert_time_zone(zone) if zone else series.dt.replace_time_zone(None)
    frame = pl.DataFrame({"value": [1.0] * len(offsets), "received_at": series})
    assert received_us(frame, ARRIVED, step) == _converted(series, step)


def test_both_paths_are_taken():
    """The property above covers a few samples (value by value) and many (the conversion)."""
    assert len(range(0, 300, 1)) > FEW_SAMPLES >= len(range(0, 300, 12))


def test_a_frame_without_receipt_times_gives_the_hand_over_time():
    frame = pl.DataFrame({"value": [1.0, 2.0, 3.0], "received_at": ["a", "b", "c"]})
    assert received_us(frame, ARRIVED, 2) == [ARRIVED, ARRIVED]
    assert received_us(pl.DataFrame({"value": [1.0] * 5}), ARRIVED, 2) == [ARRIVED] * 3


def test_a_tag_batch_is_sampled_with_the_same_step():
    batch = TagBatch({"value": [1.0, 2.0, 3.0, 4.0, 5.0], "received_at": [10, None, 30, 40, 50]})
    assert received_us(batch, ARRIVED, 2) == [10, 30, 50]
    assert received_us(batch, ARRIVED, 1) == [10, ARRIVED, 30, 40, 50]


def test_the_step_gives_about_256_samples_a_commit():
    assert sample_step(50_000) == 195
    assert sample_step(100) == 1
    assert sample_step(0) == 1
