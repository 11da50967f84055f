"""The historian's bucket cache (engine/store/tag_bucket_cache.py): a query that takes buckets from
it answers exactly what the same query over raw rows answers, whatever was written in between
(late values, back-fills, writes not yet committed when the cache was filled, retention)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.store import tag_bucket_cache
from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian
from engine.tags import conform

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TAGS = ["a", "b", "c"]
STATS = ["avg", "min", "max", "first", "last", "sum", "count"]


def batch(seconds: list[float], tags: list[str], values: list[float], bad: bool = False) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": [T0 + timedelta(seconds=s) for s in seconds],
            "tag": tags,
            "value": values,
            "quality": ["bad" if bad else "good"] * len(seconds),
        }
    )


def same(
    th: TagHistorian, start: float, end: float, bucket: str = "10s", tags=("a", "b"), **kw
) -> pl.DataFrame:
    a, b = T0 + timedelta(seconds=start), T0 + timedelta(seconds=end)
    cached = th.query(list(tags), a, b, bucket, STATS, **kw)
    raw = th.query(list(tags), a, b, bucket, STATS, use_cache=False, **kw)
    assert cached.equals(raw), (cached, raw)
    return cached


@pytest.fixture
def th(tmp_path):
    tag_bucket_cache.clear()
    h = Historian(tmp_path / "historian.duckdb")
    yield TagHistorian(h)
    h.close()


def test_sliding_window_reads_the_cache_and_sees_late_values(th):
    th.append(
        batch(
            [s * 0.5 for s in range(400)], [TAGS[s % 3] for s in range(400)], [float(s) for s in range(400)]
        )
    )
    first = same(th, 0.3, 150.7)
    assert first.height > 0
    state = tag_bucket_cache._historians[str(th.historian.path)]
    assert len(state.entries) == 1  # the closed buckets were kept
    same(th, 0.9, 151.2)  # the window slid: buckets from the cache, the edges raw
    th.append(batch([12.0, 95.5], ["a", "b"], [1000.0, -5.0]))  # late values inside cached buckets
    after = same(th, 1.1, 151.3)
    assert after.filter(pl.col("tag") == "a")["max"].max() == 1000.0
    th.append(batch([151.0, 170.0], ["a", "a"], [7.0, 8.0]))  # new values at the end
    same(th, 2.0, 175.0)
    same(th, 2.0, 175.0, bucket="7s")  # another width: an entry of its own


def test_a_write_not_yet_committed_when_the_cache_fills_is_read_once_committed(th):
    th.append(batch([float(s) for s in range(100)], ["a"] * 100, [1.0] * 100))
    writer = th.cursor()
    writer.execute("BEGIN TRANSACTION")
    th.insert(writer, conform(batch([5.0, 55.0], ["a", "a"], [99.0, 98.0])))  # noted, not committed
    before = same(th, 0.0, 100.0)  # fills the cache from a snapshot without them
    assert before["max"].max() == 1.0
    writer.execute("COMMIT")
    writer.close()
    after = same(th, 0.0, 100.0)
    assert after["max"].max() == 99.0


def test_a_rolled_back_write_changes_nothing(th):
    th.append(batch([float(s) for s in range(60)], ["a"] * 60, [1.0] * 60))
    writer = th.cursor()
    writer.execute("BEGIN TRANSACTION")
    th.insert(writer, conform(batch([5.0], ["a"], [99.0])))
    writer.execute("ROLLBACK")
    writer.close()
    assert same(th, 0.0, 60.0)["max"].max() == 1.0
    assert same(th, 0.0, 60.0)["max"].max() == 1.0


def test_retention_empties_the_cache(th):
    now = datetime.now(UTC)
    rows = pl.DataFrame(
        {
            "timestamp": [now - timedelta(minutes=m) for m in range(30, 0, -1)],
            "tag": ["a"] * 30,
            "value": [1.0] * 30,
        }
    )
    th.append(rows)
    a, b = now - timedelta(minutes=40), now
    full = th.query(["a"], a, b, "10s", STATS)
    assert full.height == 30
    th.retention = []
    th.default_retention = timedelta(minutes=10)
    assert th.apply_retention(now) > 0
    cut = th.query(["a"], a, b, "10s", STATS)
    assert cut.equals(th.query(["a"], a, b, "10s", STATS, use_cache=False))
    assert cut.height < full.height


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.just("write"),
                st.lists(
                    st.tuples(st.floats(0, 300), st.sampled_from(TAGS), st.floats(-1e6, 1e6)),
                    min_size=1,
                    max_size=20,
                ),
                st.booleans(),
            ),
            st.tuples(
                st.just("query"),
                st.floats(0, 300),
                st.floats(0.001, 300),
                st.sampled_from(["1s", "10s", "7s", "90s"]),
            ),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_any_writes_and_queries_answer_as_raw_rows(tmp_path_factory, steps):
    tag_bucket_cache.clear()
    h = Historian(tmp_path_factory.mktemp("h") / "historian.duckdb")
    th = TagHistorian(h)
    try:
        for step in steps:
            if step[0] == "write":
                rows, bad = step[1], step[2]
                th.append(batch([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], bad))
            else:
                _, start, span, bucket = step
                same(th, start, start + span, bucket=bucket, tags=("a", "c"))
    finally:
        h.close()
