"""The registry's ring buffers keep points only while someone looks (issue 12): a subscriber, or a
reader within its lease; otherwise a write costs nothing and the matrices are freed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from engine.store.ring_buffer import (
    DEFAULT_LEASE_S,
    POINT_BYTES,
    TagRingBuffer,
    forget_ring_buffers,
    ring_buffers,
    set_start_lease,
)
from engine.tags import conform

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class Clock:
    """A monotonic clock the test moves by hand: leases lapse exactly when it says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def batch(tags: int, second: int) -> pl.DataFrame:
    return conform(
        pl.DataFrame(
            {
                "tag": [f"t{i}" for i in range(tags)],
                "timestamp": [T0 + timedelta(seconds=second)] * tags,
                "value": [float(second)] * tags,
                "quality": ["good"] * tags,
            }
        )
    )


def test_nothing_is_kept_without_a_subscriber_or_a_lease():
    clock = Clock()
    ring = TagRingBuffer(capacity=10, on_demand=True, lease_s=30, clock=clock)
    clock.now += 30  # the first lease (from its creation) lapses
    ring.append(batch(100, 0))
    assert ring.memory_bytes() == 0 and ring.counters["not_kept"] == 100
    assert ring.counters["points"] == 0


def test_a_subscriber_keeps_points_until_it_unsubscribes_then_memory_is_freed():
    clock = Clock()
    ring = TagRingBuffer(capacity=10, on_demand=True, lease_s=30, clock=clock)
    clock.now += 30
    ring.subscribe("gui")
    ring.subscribe("gui")
    ring.append(batch(100, 0))
    ring.unsubscribe("gui")  # one of two: still subscribed
    ring.append(batch(100, 1))
    assert ring.memory_bytes() >= 100 * 2 * POINT_BYTES
    ring.unsubscribe("gui")
    clock.now += 31  # the reads' leases lapse too (ring.memory_bytes is no read)
    ring.append(batch(100, 2))
    assert ring.memory_bytes() == 0
    assert (ring.counters["released"], ring.counters["not_kept"]) == (1, 100)
    assert ring.tags() == []  # freed: nothing of the old points is shown as live


def test_reading_leases_the_buffer_for_lease_s():
    clock = Clock()
    ring = TagRingBuffer(capacity=10, on_demand=True, lease_s=30, clock=clock)
    clock.now += 30
    ring.append(batch(3, 0))
    assert ring.window("t0")[1].tolist() == []  # not kept: nobody was looking
    clock.now += 29  # within the lease the read just took
    ring.append(batch(3, 1))
    assert ring.window("t0")[1].tolist() == [1.0]
    clock.now += 29  # the read renewed it
    ring.append(batch(3, 2))
    assert ring.last("t2")[1] == 2.0
    clock.now += 30
    ring.append(batch(3, 3))
    assert ring.memory_bytes() == 0


def test_a_buffer_made_directly_always_keeps():
    clock = Clock()
    ring = TagRingBuffer(capacity=10, clock=clock)
    clock.now += 3600
    ring.append(batch(5, 0))
    assert ring.window("t4")[1].tolist() == [0.0]


def test_the_registrys_buffers_are_on_demand(tmp_path):
    ring = ring_buffers(tmp_path)
    try:
        assert ring.on_demand and ring.keeping  # within the lease of its creation
    finally:
        forget_ring_buffers(tmp_path)


def test_a_process_without_viewers_makes_its_buffers_without_the_start_lease(tmp_path):
    set_start_lease(0)
    try:
        ring = ring_buffers(tmp_path)
        assert not ring.keeping  # nothing is kept until something reads
        ring.append(batch(5, 0))
        assert ring.memory_bytes() == 0 and ring.counters["not_kept"] == 5
        ring.window("t0")  # a read leases it as always
        ring.append(batch(5, 1))
        assert ring.window("t4")[1].tolist() == [1.0]
    finally:
        set_start_lease(DEFAULT_LEASE_S)
        forget_ring_buffers(tmp_path)


def test_one_write_of_many_tags_goes_in_whole_and_wraps():
    ring = TagRingBuffer(capacity=4, budget_bytes=0)
    for second in range(6):
        ring.append(batch(2_000, second))
    assert ring.room == 4 and len(ring.tags()) == 2_000
    assert ring.window("t1999")[1].tolist() == [2.0, 3.0, 4.0, 5.0]
    assert ring.counters["overwritten"] == 2 * 2_000
