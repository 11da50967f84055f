"""Time-series nodes in streaming runs: per-tag state carried across micro-batches.

The property: a tag stream cut into micro-batches at random points gives, concatenated (and
flushed when the stream stops), exactly the batch node's output on the whole stream. Then late
records, the bound on the state, and one run through the real StreamRunner with a streaming
source defined here, resample feeding a DuckDB table and an NDJSON file.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.connectors import registry
from engine.connectors.base import Connector, ConnectorConfig, StreamingSource
from engine.context import NodeContext, RunContext
from engine.runner import _context
from engine.spec.validate import validate
from engine.streaming import StreamRunner, StreamSettings
from engine.tags import TAG_SCHEMA
from engine.transforms.base import REJECT_REASON
from engine.transforms.catalog import build
from engine.workspace import Workspace

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CTX = NodeContext(RunContext(), "n")
ALL_STATS = ["avg", "min", "max", "first", "last", "count", "sum"]

CONFIGS = {
    "resample": [
        {"type": "resample", "interval": "1m", "statistics": ALL_STATS},
        {"type": "resample", "interval": "1m", "statistics": ["avg", "count"], "fill": "null"},
        {"type": "resample", "interval": "90s", "statistics": ["last", "sum", "count"], "fill": "previous"},
        {"type": "resample", "interval": "1m"},
    ],
    "rolling": [
        {"type": "rolling", "window": "2m", "statistic": "avg"},
        {"type": "rolling", "window": "90s", "statistic": "sum"},
        {"type": "rolling", "window": "1m", "statistic": "count"},
        {"type": "rolling", "window": "3m", "statistic": "max"},
        {"type": "rolling", "window": 3, "statistic": "median"},
        {"type": "rolling", "window": 4, "statistic": "std"},
    ],
    "rate_of_change": [{"type": "rate_of_change"}, {"type": "rate_of_change", "per": "minute"}],
    "deadband": [
        {"type": "deadband", "deadband": 0.5},
        {"type": "deadband", "percent": 20},
        {"type": "deadband", "percent": 10, "span": 20},
    ],
    "quality_check": [
        {"type": "quality_check", "max_gap": "1m"},
        {"type": "quality_check", "flatline_after": "2m", "rate_limit": 0.05},
        {"type": "quality_check", "flatline_after": 3, "max_gap": "40s", "downgrade": "bad"},
        {"type": "quality_check", "stale_after": "1m", "flatline_after": 2, "now": "2024-01-02T00:00:00Z"},
    ],
}


def tag_table(rows: list[tuple[str, int, float | None, str]]) -> pl.DataFrame:
    """(tag, seconds, value, quality) -> a tag table."""
    return pl.DataFrame(
        {
            "timestamp": [T0 + timedelta(seconds=r[1]) for r in rows],
            "tag": [r[0] for r in rows],
            "value": [r[2] for r in rows],
            "quality": [r[3] for r in rows],
        },
        schema={
            "timestamp": pl.Datetime("us", "UTC"),
            "tag": pl.String,
            "value": pl.Float64,
            "quality": pl.String,
        },
    )


def batch_output(step: dict, frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    outputs = build(step, "n").apply([frame.lazy()], CTX)
    return {port: lf.collect() for port, lf in outputs.items()}


def stream_output(step: dict, chunks: list[pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame, object]:
    """Every chunk through apply_stream, then the flush: (out, rejected, the state at the end)."""
    node = build(step, "n")
    state = node.stream_state()
    assert state is not None
    outs, rejected = [], []
    for chunk in chunks:
        ports = node.apply_stream(chunk, state, CTX)
        outs.append(ports["out"])
        rejected.append(ports["rejected"])
    outs.append(node.flush_stream(state, CTX).get("out"))
    frames = [f for f in outs if f is not None and f.width]
    return pl.concat(frames, how="diagonal_relaxed"), pl.concat(rejected, how="diagonal_relaxed"), state


def same_rows(streamed: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Row for row, in (tag, time) order; floats to 1e-9 (a window summed from another start)."""
    keys = ["tag", "timestamp"]
    got = streamed.select(expected.columns).sort(keys, maintain_order=True)
    assert_frame_equal(
        got, expected.sort(keys, maintain_order=True), check_exact=False, rel_tol=1e-9, abs_tol=1e-9
    )


# ---- the property ----------------------------------------------------------------------------------
@st.composite
def cut_streams(draw, ties: bool = True) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Rows in time order (equal times allowed), tags mixed, cut at random micro-batch bounds."""
    n = draw(st.integers(0, 40))
    gaps = [0, 1, 5, 10, 20, 30, 45, 70, 150] if ties else [1, 5, 10, 20, 30, 45, 70, 150]
    steps = draw(st.lists(st.sampled_from(gaps), min_size=n, max_size=n))
    rows, t = [], 0
    for step in steps:
        t += step
        tag = draw(st.sampled_from(["a", "b", "c"]))
        value = draw(st.sampled_from([None, 0.0, 1.0, 1.0, 1.2, 2.0, 5.0, -3.0]))
        quality = draw(st.sampled_from(["good", "good", "good", "bad"]))
        rows.append((tag, t, value, quality))
    frame = tag_table(rows)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    bounds = [0, *cuts, n]
    return frame, [frame.slice(lo, hi - lo) for lo, hi in pairwise(bounds)]


@pytest.mark.parametrize("kind", list(CONFIGS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_micro_batches_give_exactly_the_batch_result(kind, data):
    step = data.draw(st.sampled_from(CONFIGS[kind]))
    # a time window (t - w, t] holds the rows at t that come after this one: with equal times split
    # by a micro-batch boundary those arrive later (documented), so that case has distinct times
    time_window = kind == "rolling" and isinstance(step["window"], str)
    frame, chunks = data.draw(cut_streams(ties=not time_window))
    expected = batch_output(step, frame)["out"]
    streamed, rejected, _ = stream_output(step, chunks)
    assert rejected.height == 0  # in time order, nothing is late
    if not expected.height:
        assert streamed.height == 0
        return
    same_rows(streamed, expected)


def test_resample_emits_each_bucket_once_when_a_later_record_closes_it():
    node = build({"type": "resample", "interval": "1m", "statistics": ["avg", "count"]}, "n")
    state = node.stream_state()
    first = node.apply_stream(tag_table([("a", 0, 1.0, "good"), ("a", 30, 3.0, "good")]), state, CTX)
    assert first["out"].height == 0  # the minute is still open
    second = node.apply_stream(tag_table([("a", 59, 5.0, "good"), ("a", 60, 7.0, "good")]), state, CTX)
    assert second["out"].select("value_avg", "value_count").rows() == [(3.0, 3)]
    assert node.apply_stream(tag_table([("a", 61, 9.0, "good")]), state, CTX)["out"].height == 0
    flushed = node.flush_stream(state, CTX)["out"]
    assert flushed.select("timestamp", "value_avg", "value_count").rows() == [
        (T0 + timedelta(minutes=1), 8.0, 2)
    ]
    assert node.flush_stream(state, CTX) == {}  # flushed once


# ---- late records ----------------------------------------------------------------------------------
def test_resample_rejects_a_record_for_a_bucket_already_emitted():
    node = build({"type": "resample", "interval": "1m"}, "n")
    state = node.stream_state()
    node.apply_stream(
        tag_table([("a", 0, 1.0, "good"), ("a", 70, 2.0, "good"), ("b", 10, 4.0, "good")]), state, CTX
    )
    # a 00:30 belongs to the emitted minute 00:00; a 01:10 to the open one; b is still in minute 0
    ports = node.apply_stream(
        tag_table([("a", 30, 9.0, "good"), ("a", 65, 4.0, "good"), ("b", 20, 6.0, "good")]), state, CTX
    )
    rejected = ports["rejected"]
    assert rejected.select("tag", "value").rows() == [("a", 9.0)]
    assert rejected[REJECT_REASON][0].startswith("late:")
    flushed = node.flush_stream(state, CTX)["out"]
    assert flushed.select("tag", "value").rows() == [("a", 3.0), ("b", 5.0)]


def test_resample_first_and_last_follow_time_within_the_open_bucket():
    node = build({"type": "resample", "interval": "1m", "statistics": ["first", "last"]}, "n")
    state = node.stream_state()
    node.apply_stream(tag_table([("a", 20, 2.0, "good")]), state, CTX)
    node.apply_stream(
        tag_table([("a", 10, 1.0, "good"), ("a", 50, 5.0, "good")]), state, CTX
    )  # 10 s is early
    flushed = node.flush_stream(state, CTX)["out"]
    assert flushed.select("value_first", "value_last").rows() == [(1.0, 5.0)]


def test_late_rows_of_sequential_nodes_are_processed_without_history():
    node = build({"type": "rate_of_change"}, "n")
    state = node.stream_state()
    node.apply_stream(tag_table([("a", 0, 0.0, "good"), ("a", 10, 10.0, "good")]), state, CTX)
    late = node.apply_stream(tag_table([("a", 5, 50.0, "good"), ("a", 6, 60.0, "good")]), state, CTX)["out"]
    assert late["value_rate"].to_list() == [None, 10.0]  # its own series: no rate for its first row
    after = node.apply_stream(tag_table([("a", 20, 20.0, "good")]), state, CTX)["out"]
    assert after["value_rate"].to_list() == [1.0]  # continues from 00:10, the state did not move back


def test_quality_check_holds_a_tags_newest_row_for_the_stale_check():
    node = build({"type": "quality_check", "stale_after": "1m"}, "n")
    state = node.stream_state()
    out = node.apply_stream(tag_table([("a", 0, 1.0, "good"), ("a", 30, 1.0, "good")]), state, CTX)["out"]
    assert out.select("qc_stale").rows() == [(False,)]  # 00:30 waits for its successor
    out = node.apply_stream(tag_table([("a", 200, 1.0, "good")]), state, CTX)["out"]
    assert out.select("qc_stale").rows() == [(True,)]  # 00:30 -> 03:20 is stale
    flushed = node.flush_stream(state, CTX)["out"]  # judged against the stop: 2024 is long ago
    assert flushed.select("qc_stale").rows() == [(True,)]


def test_range_only_quality_check_keeps_no_state():
    assert build({"type": "quality_check", "min": 0, "max": 1}, "n").stream_state() is None
    assert build({"type": "power_curve", "curve": [[3, 0], [12, 2500]]}, "n").stream_state() is None


# ---- bounded state ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("step", "per_tag"),
    [
        ({"type": "resample", "interval": "1m", "fill": "previous"}, 1),
        ({"type": "rolling", "window": 5}, 5),
        ({"type": "rolling", "window": "30s"}, 4),  # rows 10 s apart: (t - 30 s, t] holds 3, + 1
        ({"type": "rate_of_change"}, 1),
        ({"type": "deadband", "deadband": 0.5}, 2),
        ({"type": "quality_check", "stale_after": "1m", "flatline_after": 4, "max_gap": "1m"}, 4),
    ],
)
def test_state_stays_bounded_per_tag(step, per_tag):
    node = build(step, "n")
    state = node.stream_state()
    for batch in range(30):
        rows = [
            (f"t{i}", batch * 100 + k * 10, float((batch * 7 + k) % 5), "good")
            for i in range(4)
            for k in range(10)
        ]
        node.apply_stream(tag_table(rows), state, CTX)
    held = state.open if hasattr(state, "open") else state.history
    assert held.height <= 4 * per_tag


# ---- through the real StreamRunner -----------------------------------------------------------------
FEEDS: dict[str, list[pl.DataFrame]] = {}


class FeedConfig(ConnectorConfig):
    key: str


class FeedSource(StreamingSource):
    """Emits the frames of FEEDS[key] one by one from a thread, then idles until stopped."""

    config: FeedConfig

    def start(self, emit) -> None:
        self.done = threading.Event()
        self.set_state("connected")
        self._thread = threading.Thread(target=self._run, args=(emit,), daemon=True)
        self._thread.start()

    def _run(self, emit) -> None:
        for frame in FEEDS[self.config.key]:
            emit(frame)
            self.counters["emitted"] += frame.height
        self.done.set()

    def stop(self) -> None:
        self._thread.join()
        self.set_state("stopped")


class FeedConnector(Connector):
    connector_type = "test_ts_feed"
    SourceConfig = FeedConfig

    @classmethod
    def make_source(cls, config, ctx, name: str) -> StreamingSource:
        return FeedSource(config, ctx, name)


def feed_frames(minutes: int, tags: int) -> pl.DataFrame:
    """A reading every 7 s per tag, TAG_SCHEMA, in time order."""
    times = [T0 + timedelta(seconds=s) for s in range(0, minutes * 60, 7)]
    rows = [(t, f"WTG{i:02}.power", float(n % 13 + i)) for n, t in enumerate(times) for i in range(tags)]
    return (
        pl.DataFrame(
            {"timestamp": [r[0] for r in rows], "tag": [r[1] for r in rows], "value": [r[2] for r in rows]},
            schema={"timestamp": TAG_SCHEMA["timestamp"], "tag": pl.String, "value": pl.Float64},
        )
        .with_columns(pl.lit("good").alias("quality"), pl.lit("feed").alias("source"))
        .select(
            [
                pl.col(c)
                if c in ("timestamp", "tag", "value", "quality", "source")
                else pl.lit(None, dtype=d).alias(c)
                for c, d in TAG_SCHEMA.items()
            ]
        )
    )


def run_live(tmp_path, steps: list[dict], frame: pl.DataFrame, *, until_committed: int):
    """`frame` cut into emits of 11 rows -> steps -> DuckDB table `live` and `live.ndjson`; waits
    until `until_committed` rows are committed, then stops. (runner, stored table, file rows)."""
    registry.register(FeedConnector)
    key = str(tmp_path)
    FEEDS[key] = [frame.slice(i, 11) for i in range(0, frame.height, 11)]  # cut across buckets
    nodes = [{"id": "feed", "kind": "source", "connector_type": "test_ts_feed", "config": {"key": key}}]
    for i, step in enumerate(steps):
        nodes.append({"id": f"step{i}", "kind": "transform", "inputs": [nodes[-1]["id"]], "transform": step})
    last = nodes[-1]["id"]
    nodes += [
        {
            "id": "db",
            "kind": "destination",
            "inputs": [last],
            "connector_type": "duckdb",
            "config": {"table": "live"},
        },
        {
            "id": "file",
            "kind": "destination",
            "inputs": [last],
            "connector_type": "file",
            "config": {"path": "live.ndjson", "mode": "append"},
        },
    ]
    document = {"name": "live", "nodes": nodes, "schedule": {"type": "real_time"}}
    with Workspace(tmp_path / "data") as ws:
        compiled = validate(document)
        ctx = _context(compiled, ws, "run1", datetime.now(UTC), tmp_path, threading.Event(), dry_run=False)
        runner = StreamRunner(compiled, ctx, settings=StreamSettings(batch_size=25, max_latency_ms=20))
        runner.start()
        deadline = time.monotonic() + 20
        while runner.stats()["rows_committed"] < until_committed:
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)
        time.sleep(0.1)  # anything more would show up now (it must not)
        assert runner.stats()["rows_committed"] == until_committed
        runner.stop()
        assert runner.status == "success", runner.error
        stored = pl.from_arrow(ws.historian.cursor().sql("SELECT * FROM live").to_arrow_table())
    stored = stored.with_columns(pl.col("timestamp").dt.convert_time_zone("UTC"))
    return runner, stored, pl.read_ndjson(tmp_path / "live.ndjson")


def test_resample_in_a_real_time_pipeline_stores_each_bucket_once(tmp_path):
    frame = feed_frames(minutes=12, tags=3)
    step = {"type": "resample", "interval": "1m", "statistics": ["avg", "count", "last"]}
    expected = batch_output(step, frame)["out"]
    assert expected.height == 12 * 3
    # before the stop, every minute but the last of each tag (still open) is committed
    runner, stored, in_file = run_live(tmp_path, [step], frame, until_committed=expected.height - 3)
    assert runner.stats()["micro_batches"] >= 5
    assert stored.height == expected.height  # the stop flushed the open minutes
    assert stored.group_by("tag", "timestamp").len()["len"].max() == 1  # every bucket once
    same_rows(stored, expected)
    assert in_file.height == expected.height == in_file.unique(["tag", "timestamp"]).height


def test_chained_stateful_nodes_flush_in_order_on_stop(tmp_path):
    frame = feed_frames(minutes=5, tags=2)
    steps = [
        {"type": "quality_check", "stale_after": "10s", "max_gap": "8s"},  # holds each tag's newest row
        {"type": "rolling", "window": "30s", "statistic": "avg"},
        {"type": "resample", "interval": "1m", "statistics": ["avg", "count"]},
    ]
    expected = frame
    for step in steps:
        expected = batch_output(step, expected)["out"]
    _, stored, _ = run_live(tmp_path, steps, frame, until_committed=expected.height - 2)
    # the stop flushed quality_check (rows held for the stale check), then rolling, then resample
    assert stored.group_by("tag", "timestamp").len()["len"].max() == 1
    same_rows(stored, expected)
