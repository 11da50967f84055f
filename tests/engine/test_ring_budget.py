"""The live ring buffers' memory budget (issue 10): all tags share one budget, each keeps at least a
floor, the newest points are always the ones kept, and a chart of a longer window still gets the
whole window (the historian answers for what the rings no longer hold)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.api import LocalEngine
from engine.errors import UsageError
from engine.store.ring_buffer import (
    BUDGET_ENV,
    POINT_BYTES,
    TagRingBuffer,
    default_budget_bytes,
    forget_ring_buffers,
    ring_buffers,
)
from engine.store.tag_historian import TagHistorian
from engine.tags import conform

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T0_US = int(T0.timestamp() * 1_000_000)


def rounds(tags: int, first: int, count: int, step_s: float = 0.1) -> pl.DataFrame:
    """`count` rounds of every one of `tags` tags (value = the round's number), round r at
    T0 + r * step_s; rows in time order, as a stream's batch is."""
    r = np.repeat(np.arange(first, first + count), tags)
    return conform(
        pl.DataFrame(
            {
                "tag": [f"t{i:05d}" for i in range(tags)] * count,
                "timestamp": [T0 + timedelta(seconds=float(x) * step_s) for x in r],
                "value": r.astype(np.float64),
                "quality": ["good"] * len(r),
            }
        )
    )


def test_many_tags_stay_within_the_budget_and_keep_their_newest_points():
    budget = 1_000 * 200 * POINT_BYTES  # 200 points a tag for 1,000 tags
    ring = TagRingBuffer(capacity=3_600, budget_bytes=budget, floor=50)
    ring.append(rounds(10, 0, 1_000))  # 10 tags alone: the capacity is theirs (up to 3,600)
    assert ring.tag_capacity == 3_600
    assert len(ring.window("t00000")[0]) == 1_000
    for first in range(0, 600, 50):  # then 1,000 tags, 50 rounds a batch
        ring.append(rounds(1_000, 1_000 + first, 50))
        assert ring.memory_bytes() <= budget
    assert ring.tag_capacity == 200
    assert len(ring.tags()) == 1_000
    for tag in ("t00000", "t00009", "t00500", "t00999"):
        ts, values, _ = ring.window(tag)
        assert values.tolist() == [float(x) for x in range(1_400, 1_600)]  # the newest 200, in order
        assert np.all(np.diff(ts) > 0)
        assert ring.last(tag)[1] == 1_599.0
    assert ring.counters["dropped"] == 0


def test_the_floor_holds_when_the_budget_is_too_small():
    ring = TagRingBuffer(capacity=3_600, budget_bytes=1_000 * POINT_BYTES, floor=20)
    ring.append(rounds(2_000, 0, 30))
    assert ring.tag_capacity == 20
    assert ring.memory_bytes() <= 2_000 * 20 * POINT_BYTES
    assert ring.window("t01999")[1].tolist() == [float(x) for x in range(10, 30)]


def test_no_budget_keeps_the_capacity():
    ring = TagRingBuffer(capacity=100, budget_bytes=0)
    ring.append(rounds(500, 0, 150))
    assert ring.tag_capacity == 100 and len(ring.window("t00499")[0]) == 100


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert default_budget_bytes() == 16 * 2**20
    monkeypatch.setenv(BUDGET_ENV, "2.5")
    assert TagRingBuffer().budget_bytes == int(2.5 * 2**20)
    for bad in ("lots", "0", "-1", "inf"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(UsageError, match=f"^{BUDGET_ENV}: '{bad}' is not a number of MiB above 0"):
            default_budget_bytes()


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.integers(0, 60), min_size=1, max_size=80),  # the tag of each row of a batch
        min_size=1,
        max_size=6,
    ),
    share=st.integers(1, 40),
    floor=st.integers(1, 10),
)
def test_any_batches_keep_the_newest_points_within_the_budget(batches, share, floor):
    budget = 20 * share * POINT_BYTES
    ring = TagRingBuffer(capacity=50, budget_bytes=budget, floor=floor)
    sent: dict[str, list[float]] = {}
    n = 0
    for tags in batches:
        values = [float(n + i) for i in range(len(tags))]
        n += len(tags)
        names = [f"t{t}" for t in tags]
        ring.append(
            conform(
                pl.DataFrame(
                    {
                        "tag": names,
                        "timestamp": [T0 + timedelta(seconds=v) for v in values],
                        "value": values,
                        "quality": ["good"] * len(tags),
                    }
                )
            )
        )
        for name, v in zip(names, values, strict=True):
            sent.setdefault(name, []).append(v)
        kept_each = ring.tag_capacity
        assert ring.memory_bytes() <= max(budget, len(sent) * floor * POINT_BYTES)
        assert ring.room <= kept_each
        for name, values_sent in sent.items():
            held = ring.window(name)[1].tolist()
            assert held == values_sent[-min(len(values_sent), kept_each) :]  # the newest, in order


@pytest.fixture
def engine(tmp_path):
    eng = LocalEngine(tmp_path / "data", workers=2)
    yield eng
    eng.close()
    forget_ring_buffers(eng.data_dir)


def test_a_chart_gets_its_whole_window_when_the_budget_keeps_less(engine):
    # 20 tags, 10 minutes at 1 Hz in the historian; the rings' budget keeps 60 points a tag.
    ring = ring_buffers(engine.data_dir, budget_bytes=20 * 60 * POINT_BYTES, floor=10)
    now = datetime.now(UTC).replace(microsecond=0)
    seconds = 600
    frame = conform(
        pl.DataFrame(
            {
                "tag": [f"t{i:02d}" for i in range(20)] * seconds,
                "timestamp": [
                    now - timedelta(seconds=seconds - s) for s in range(seconds) for _ in range(20)
                ],
                "value": [float(s) for s in range(seconds) for _ in range(20)],
                "quality": ["good"] * (20 * seconds),
                "source": ["s"] * (20 * seconds),
            }
        )
    )
    TagHistorian(engine.workspace.historian).append(frame)  # what the historian destination does
    engine.live.buffer().append(frame)
    assert engine.live.buffer() is ring and ring.tag_capacity == 60
    assert len(ring.window("t07")[0]) == 60
    series = engine.live.chart_series(["t07", "t19"], seconds, now_us=int(now.timestamp() * 1e6))
    for tag in ("t07", "t19"):
        ts, values, _ = series[tag]
        assert np.all(np.diff(ts) > 0)
        assert values.tolist() == [float(s) for s in range(seconds)]  # 1 s buckets: every point
