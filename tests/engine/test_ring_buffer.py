"""The live ring buffer: wraparound, windows, last values, bounds and counters, threads."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.store.ring_buffer import TagRingBuffer, forget_ring_buffers, ring_buffers
from engine.tags import TAG_SCHEMA, conform

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T0_US = int(T0.timestamp() * 1_000_000)


def batch(tags: list[str], seconds: list[int], values: list[float | None], quality: list[str] | None = None):
    frame = pl.DataFrame(
        {
            "tag": tags,
            "timestamp": [T0 + timedelta(seconds=s) for s in seconds],
            "value": pl.Series(values, dtype=pl.Float64),
            "quality": quality or ["good"] * len(tags),
        }
    )
    return conform(frame)


def us(seconds: int) -> int:
    return T0_US + seconds * 1_000_000


def test_window_is_oldest_first_and_wraps_around():
    ring = TagRingBuffer(capacity=5)
    for start in range(0, 12, 3):  # 12 points in batches of 3 through a ring of 5
        ring.append(batch(["a"] * 3, [start, start + 1, start + 2], [float(start + i) for i in range(3)]))
    ts, values, quality = ring.window("a")
    assert values.tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert ts.tolist() == [us(s) for s in range(7, 12)]
    assert quality.tolist() == [0] * 5
    assert ring.counters["overwritten"] == 7
    assert ring.counters["points"] == 12


def test_window_since_and_last():
    ring = TagRingBuffer(capacity=100)
    ring.append(
        batch(["a", "b", "a", "a"], [1, 1, 2, 3], [1.0, None, 2.0, 3.0], ["good", "bad", "uncertain", "bad"])
    )
    ts, values, quality = ring.window("a", since_us=us(2))
    assert ts.tolist() == [us(2), us(3)]
    assert values.tolist() == [2.0, 3.0]
    assert quality.tolist() == [1, 2]
    last = ring.last("b")
    assert last is not None and last[0] == us(1) and np.isnan(last[1]) and last[2] == 2
    assert ring.last("missing") is None
    assert [len(x) for x in ring.window("missing")] == [0, 0, 0]


def test_a_batch_larger_than_the_capacity_keeps_its_newest_points():
    ring = TagRingBuffer(capacity=4)
    ring.append(batch(["a"] * 10, list(range(10)), [float(i) for i in range(10)]))
    assert ring.window("a")[1].tolist() == [6.0, 7.0, 8.0, 9.0]
    assert ring.counters["overwritten"] == 6


def test_tags_beyond_the_limit_are_counted_not_kept():
    ring = TagRingBuffer(capacity=10, max_tags=2)
    ring.append(batch(["a", "b", "c", "c", "a"], [1, 1, 1, 2, 2], [1.0] * 5))
    assert ring.tags() == ["a", "b"]
    assert ring.counters["dropped"] == 2
    assert ring.memory_bytes() <= 2 * 10 * 17


def test_the_returned_arrays_are_copies():
    ring = TagRingBuffer(capacity=3)
    ring.append(batch(["a"] * 3, [1, 2, 3], [1.0, 2.0, 3.0]))
    _, values, _ = ring.window("a")
    ring.append(batch(["a"] * 3, [4, 5, 6], [4.0, 5.0, 6.0]))
    assert values.tolist() == [1.0, 2.0, 3.0]


def test_registry_gives_one_buffer_per_data_dir(tmp_path):
    first = ring_buffers(tmp_path)
    assert ring_buffers(str(tmp_path)) is first
    assert ring_buffers(tmp_path / "other") is not first
    forget_ring_buffers(tmp_path)
    assert ring_buffers(tmp_path) is not first
    forget_ring_buffers()


def test_writers_and_readers_on_threads():
    ring = TagRingBuffer(capacity=500)
    errors: list[BaseException] = []

    def write(tag: str) -> None:
        for i in range(50):
            ring.append(batch([tag] * 20, list(range(i * 20, i * 20 + 20)), [float(i)] * 20))

    def read() -> None:
        try:
            for _ in range(200):
                ts, values, quality = ring.window("t0")
                assert len(ts) == len(values) == len(quality)
                assert (np.diff(ts) > 0).all()
        except BaseException as exc:  # reported below: the test fails, not the thread silently
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"t{k}",)) for k in range(3)] + [
        threading.Thread(target=read)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ring.counters["points"] == 3 * 1000
    assert ring.counters["overwritten"] == 3 * 500
    assert ring.window("t2")[0].tolist() == [us(s) for s in range(500, 1000)]


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from("abc"), st.floats(-1e9, 1e9)), min_size=0, max_size=30),
        max_size=8,
    ),
    capacity=st.integers(1, 70),
)
def test_each_tag_holds_its_newest_points_in_order(batches, capacity):
    ring = TagRingBuffer(capacity=capacity)
    seen: dict[str, list[float]] = {}
    clock = 0
    for rows in batches:
        seconds = list(range(clock, clock + len(rows)))
        clock += len(rows)
        frame = (
            batch([t for t, _ in rows], seconds, [v for _, v in rows])
            if rows
            else pl.DataFrame(schema=TAG_SCHEMA)
        )
        ring.append(frame)
        for tag, value in rows:
            seen.setdefault(tag, []).append(value)
    for tag, values in seen.items():
        assert ring.window(tag)[1].tolist() == values[-capacity:]
    assert ring.counters["overwritten"] == sum(max(0, len(v) - capacity) for v in seen.values())
