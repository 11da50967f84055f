"""LiveAPI: live tags from the ring buffer and the historian, windows, history, chart series
(ring buffer + historian buckets), throughput from stream_stats events."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from engine.api import LocalEngine
from engine.api.live import history_bucket
from engine.store.ring_buffer import forget_ring_buffers
from engine.store.tag_historian import TagHistorian
from engine.tags import conform

NOW = datetime.now(UTC).replace(microsecond=0)


def tag_batch(tag: str, source: str, seconds: list[float], values: list[float | None], quality=None):
    """TAG_SCHEMA rows of one tag at NOW + seconds (negative: in the past)."""
    return conform(
        pl.DataFrame(
            {
                "tag": [tag] * len(seconds),
                "timestamp": [NOW + timedelta(seconds=s) for s in seconds],
                "value": pl.Series(values, dtype=pl.Float64),
                "quality": quality or ["good"] * len(seconds),
                "source": [source] * len(seconds),
            }
        )
    )


@pytest.fixture
def engine(tmp_path):
    eng = LocalEngine(tmp_path / "data", workers=2)
    yield eng
    eng.close()
    forget_ring_buffers(eng.data_dir)


def store(engine, frame, live: bool = True):
    """What the `historian` destination does with a batch: the historian, then the ring buffer."""
    TagHistorian(engine.workspace.historian).append(frame)
    if live:
        engine.live.buffer().append(frame)


def test_live_tags_merges_ring_buffer_values_with_historian_sources(engine):
    store(engine, tag_batch("old.temp", "plc", [-3600], [20.5]), live=False)
    store(engine, tag_batch("t1.power", "opcua1", [-2, -1], [100.0, 101.0]))
    store(engine, tag_batch("t1.speed", "opcua1", [-1], [None], quality=["bad"]))
    rows = {r["tag"]: r for r in engine.live.tags(wait=True)}
    assert set(rows) == {"old.temp", "t1.power", "t1.speed"}
    power = rows["t1.power"]
    assert (power["source"], power["value"], power["quality"], power["live"]) == (
        "opcua1",
        101.0,
        "good",
        True,
    )
    assert power["timestamp_us"] == int((NOW - timedelta(seconds=1)).timestamp() * 1e6)
    assert (rows["t1.speed"]["value"], rows["t1.speed"]["quality"]) == (None, "bad")
    assert (rows["old.temp"]["source"], rows["old.temp"]["value"], rows["old.temp"]["live"]) == (
        "plc",
        20.5,
        False,
    )


def test_a_tag_only_in_the_ring_buffer_has_no_known_source(engine):
    engine.live.buffer().append(tag_batch("a", "src", [0], [1.0]))
    first = engine.live.tags()  # the historian read is started, not awaited
    assert [(r["tag"], r["value"]) for r in first] == [("a", 1.0)]
    assert engine.live.tags(wait=True)[0]["source"] == "(live)"  # the historian has never stored it


def test_empty_engine_has_no_live_tags_and_creates_no_historian_tables(engine):
    assert engine.live.tags(wait=True) == []
    frame = engine.live.history(["x"], None, None)
    assert frame.height == 0 and {"tag", "bucket", "avg", "bad_count"} <= set(frame.columns)
    cur = engine.workspace.historian.cursor()
    try:
        assert cur.execute("SELECT count(*) FROM information_schema.tables").fetchall()[0][0] == 0
    finally:
        cur.close()


def test_live_window_is_the_ring_buffer_from_a_time_on(engine):
    store(engine, tag_batch("a", "s", [-3, -2, -1], [1.0, 2.0, 3.0], quality=["good", "uncertain", "bad"]))
    ts, values, quality = engine.live.window("a")
    assert values.tolist() == [1.0, 2.0, 3.0] and quality.tolist() == [0, 1, 2]
    ts, values, _ = engine.live.window("a", since_us=int(ts[1]))
    assert values.tolist() == [2.0, 3.0]
    assert len(engine.live.window("nothing")[0]) == 0
    # a chart refresh reads all its tags in one call: the same windows
    both = engine.live.windows(["a", "nothing"], since_us=int(ts[0]))
    assert both["a"][1].tolist() == [2.0, 3.0] and len(both["nothing"][0]) == 0


def test_history_is_the_historian_query_off_the_callers_thread(engine):
    store(engine, tag_batch("a", "s", [-10, -9.5, -5], [1.0, 3.0, 10.0]))
    frame = engine.live.history(["a"], NOW - timedelta(seconds=20), NOW, bucket="1s")
    assert frame["avg"].to_list() == [2.0, 10.0]
    assert frame["count"].to_list() == [2, 1]


def test_chart_series_puts_historian_buckets_before_the_ring_buffer(engine):
    # The historian has the last 10 minutes; the ring buffer only the last 5 seconds.
    older = tag_batch("a", "s", [-600 + s for s in range(0, 595, 5)], [float(s) for s in range(0, 595, 5)])
    older = older.with_columns(
        pl.when(pl.col("value") == 300.0).then(pl.lit("bad")).otherwise(pl.col("quality")).alias("quality")
    )
    store(engine, older, live=False)
    store(engine, tag_batch("a", "s", [-4, -3, -2, -1], [1000.0, 1001.0, 1002.0, 1003.0]))
    now_us = int(NOW.timestamp() * 1e6)
    series = engine.live.chart_series(["a", "missing"], 600, now_us=now_us)
    ts, values, quality = series["a"]
    assert np.all(np.diff(ts) > 0)
    assert values[-4:].tolist() == [1000.0, 1001.0, 1002.0, 1003.0]
    assert len(values) == 119 + 4  # every 5-second value of the historian in its 1 s bucket
    assert quality[values.tolist().index(295.0) + 1] == 2  # the bucket holding the bad value
    assert quality[-4:].tolist() == [0, 0, 0, 0]
    assert len(series["missing"][0]) == 0


def test_throughput_from_stream_stats_events(engine):
    assert engine.live.throughput() == {}
    engine.emit({"event": "run_started", "run_id": "r1", "pipeline": "wind"})
    engine.emit({"event": "stream_stats", "run_id": "r1", "rows_committed": 1000, "uptime_s": 2.0})
    assert engine.live.throughput() == {"wind": 500.0}
    engine.emit({"event": "stream_stats", "run_id": "r1", "rows_committed": 4000, "uptime_s": 3.0})
    assert engine.live.throughput() == {"wind": 3000.0}
    engine.emit({"event": "run_started", "run_id": "r2", "pipeline": "wind"})
    engine.emit({"event": "stream_stats", "run_id": "r2", "rows_committed": 0, "uptime_s": 1.0})
    assert engine.live.throughput() == {"wind": 3000.0, "wind (r2)": 0.0}
    engine.emit({"event": "run_finished", "run_id": "r1", "status": "success"})
    engine.emit({"event": "run_finished", "run_id": "r2", "status": "success"})
    assert engine.live.throughput() == {}


@pytest.mark.parametrize(
    ("span", "bucket"), [(60, "1s"), (600, "1s"), (3600, "5s"), (86_400, "5m"), (10**7, "1h")]
)
def test_history_bucket_gives_about_a_thousand_points(span, bucket):
    assert history_bucket(span) == bucket


def test_live_tags_are_refreshed_while_a_stream_writes(engine):
    store(engine, tag_batch("a", "s", [-1], [1.0]))
    engine.live.tags(wait=True)
    store(engine, tag_batch("b", "s2", [0], [2.0]))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = {r["tag"]: r for r in engine.live.tags()}
        if rows.get("b", {}).get("source") == "s2":
            break
        time.sleep(0.1)
    assert rows["b"]["source"] == "s2" and rows["a"]["source"] == "s"
