"""Streaming execution of real_time pipelines: micro-batching, back-pressure, commits, lifecycle.

The source is a real StreamingSource (a thread emitting tag records at a controlled pace); the
destinations are the real DuckDB and file sinks, plus a deliberately slow sink for back-pressure.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.connectors import registry
from engine.connectors.base import Connector, ConnectorConfig, Sink, StreamingSource
from engine.errors import SpecError
from engine.runner import _context
from engine.spec.validate import validate
from engine.streaming import StreamRunner, StreamSettings, check_streaming, run_streaming
from engine.streaming.buffer import BatchQueue
from engine.streaming.sinks import FileAppender
from engine.tags import TAG_SCHEMA
from engine.workspace import Workspace
from tests.conftest import RUN_RECORD_KEYS
from tests.engine.streaming_sources import TicksConnector

# ---- a slow sink, for back-pressure ------------------------------------------------------------
SLOW_WRITES: dict[str, list[pl.DataFrame]] = {}


class SlowConfig(ConnectorConfig):
    key: str
    delay_s: float = 0.05


class SlowSink(Sink):
    config: SlowConfig

    def open(self) -> None:
        self.pending: list[pl.DataFrame] = []

    def write(self, batch: pl.DataFrame) -> None:
        time.sleep(self.config.delay_s)
        self.pending.append(batch)

    def close(self) -> None:
        SLOW_WRITES.setdefault(self.config.key, []).extend(self.pending)

    def abort(self) -> None:
        self.pending = []


class SlowConnector(Connector):
    connector_type = "test_slow_sink"
    SinkConfig = SlowConfig

    @classmethod
    def make_sink(cls, config, ctx, name: str) -> Sink:
        return SlowSink(config, ctx, name)


class SessionSink(SlowSink):
    """A sink made for streaming (like the tag historian): opened once, commit() per micro-batch."""

    def open(self) -> None:
        self.pending = []
        SLOW_WRITES.setdefault(self.config.key + ".calls", []).append("open")

    def commit(self) -> None:
        SLOW_WRITES.setdefault(self.config.key, []).extend(self.pending)
        self.pending = []
        SLOW_WRITES[self.config.key + ".calls"].append("commit")

    def close(self) -> None:
        SLOW_WRITES[self.config.key + ".calls"].append("close")


class SessionConnector(SlowConnector):
    connector_type = "test_session_sink"

    @classmethod
    def make_sink(cls, config, ctx, name: str) -> Sink:
        return SessionSink(config, ctx, name)


@pytest.fixture(autouse=True)
def _connectors():
    registry.register(TicksConnector)
    registry.register(SlowConnector)
    registry.register(SessionConnector)


@pytest.fixture
def ws(tmp_path):
    with Workspace(tmp_path / "data") as workspace:
        yield workspace


def doc(ticks: dict, *, dest: dict | None = None, steps: list | None = None, **schedule) -> dict:
    nodes = [{"id": "ticks", "kind": "source", "connector_type": "test_ticks", "config": ticks}]
    last = "ticks"
    for i, step in enumerate(steps or []):
        nodes.append({"id": f"step{i}", "kind": "transform", "inputs": [last], "transform": step})
        last = f"step{i}"
    dest = dest or {"connector_type": "duckdb", "config": {"table": "live"}}
    nodes.append({"id": "out", "kind": "destination", "inputs": [last], **dest})
    return {
        "name": "live",
        "nodes": nodes,
        "schedule": {"type": "real_time", **schedule},
    }


class Recorder:
    def __init__(self):
        self.events: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: str) -> list[dict]:
        with self.lock:
            return [e for e in self.events if e["event"] == kind]


def make_runner(ws, tmp_path, document, *, settings=None, logs=None):
    compiled = validate(document)
    ctx = _context(compiled, ws, "run1", datetime.now(UTC), tmp_path, threading.Event(), dry_run=False)
    if logs is not None:
        ctx.log = lambda level, msg, node=None: logs.append((level, msg, node))
    events = Recorder()
    return StreamRunner(compiled, ctx, settings=settings, on_event=events), events


def wait_for(check, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def table(ws, name="live") -> pl.DataFrame:
    return pl.from_arrow(ws.historian.cursor().sql(f"SELECT * FROM {name} ORDER BY value").to_arrow_table())


# ---- micro-batching ----------------------------------------------------------------------------
def test_micro_batches_are_cut_by_size(ws, tmp_path):
    runner, events = make_runner(
        ws, tmp_path, doc({"rows_per_batch": 10, "batches": 50}, batch_size=100, max_latency_ms=60_000)
    )
    runner.start()
    # the micro_batch event follows the commit: wait for the events themselves, not the counter
    wait_for(lambda: sum(e["rows"] for e in events.of("micro_batch")) == 500)
    sizes = [e["rows"] for e in events.of("micro_batch")]
    runner.stop()
    assert sizes == [100] * 5  # the latency bound (60 s) never fired
    assert runner.status == "success"
    assert table(ws)["value"].to_list() == [float(v) for v in range(500)]


def test_micro_batches_are_cut_by_latency(ws, tmp_path):
    runner, events = make_runner(
        ws,
        tmp_path,
        doc({"rows_per_batch": 5, "batches": 10, "interval_s": 0.02}, batch_size=100_000, max_latency_ms=100),
    )
    runner.start()
    # batch_size is never reached: every row gets out through the latency bound, before stop()
    # the counters asserted below are all updated before a micro-batch's event is emitted
    wait_for(lambda: sum(e["rows"] for e in events.of("micro_batch")) == 50)
    stats = runner.stats()
    runner.stop()
    assert stats["micro_batches"] >= 2
    assert all(e["rows"] < 100_000 for e in events.of("micro_batch"))
    assert 50 <= stats["latency_ms"]["p50"] < 5_000  # waited for the bound, then committed
    assert table(ws).height == 50


def test_graceful_stop_flushes_the_last_micro_batch(ws, tmp_path):
    runner, _ = make_runner(
        ws, tmp_path, doc({"rows_per_batch": 30, "batches": 10}, batch_size=10_000, max_latency_ms=60_000)
    )
    runner.start()
    wait_for(lambda: runner.stats()["rows_received"] == 300)
    assert runner.stats()["micro_batches"] == 0  # neither bound reached: all still queued
    runner.stop()
    assert runner.status == "success"
    assert table(ws).height == 300
    snap = runner.stats()
    assert snap["sources"]["ticks"]["queued_rows"] == 0 and snap["sources"]["ticks"]["state"] == "stopped"


# ---- transforms and rejects on micro-batches ----------------------------------------------------
def test_filter_and_calculation_run_on_every_micro_batch(ws, tmp_path):
    steps = [
        {"type": "record_filter", "condition": {"field": "value", "operator": "gte", "value": 100}},
        {
            "type": "field_calculation",
            "operation": "expression",
            "parameters": {"expression": "value * 2", "output_field": "doubled"},
        },
    ]
    runner, _ = make_runner(
        ws,
        tmp_path,
        doc({"rows_per_batch": 20, "batches": 20}, steps=steps, batch_size=50, max_latency_ms=50),
    )
    runner.start()
    wait_for(lambda: runner.stats()["rows_received"] == 400)
    runner.stop()
    out = table(ws)
    assert out["value"].to_list() == [float(v) for v in range(100, 400)]
    assert (out["doubled"] == out["value"] * 2).all()
    nodes = runner.stats()["nodes"]
    assert nodes["step0"]["rows_in"] == 400 and nodes["step0"]["rows_out"] == 300
    assert nodes["out"]["rows_out"] == 300
    assert runner.stats()["micro_batches"] >= 2


def test_rejects_go_to_the_reject_store_per_micro_batch(ws, tmp_path):
    steps = [
        {
            "type": "field_validation",
            "field_name": "value",
            "validation_type": "range",
            "parameters": {"min": 0, "max": 89},
        }
    ]
    runner, _ = make_runner(
        ws,
        tmp_path,
        doc(
            {"rows_per_batch": 10, "batches": 10, "interval_s": 0.01},
            steps=steps,
            batch_size=30,
            max_latency_ms=50,
        ),
    )
    runner.start()
    # the rejects of the first micro-batches are committed while the stream still runs
    wait_for(lambda: runner.stats()["rows_received"] == 100)
    runner.stop()
    assert runner.status == "warning"
    rejects = ws.historian.rejects("run1")
    assert rejects.height == 10 and set(rejects["node_id"]) == {"step0"}
    assert table(ws).height == 90
    assert runner.stats()["rows_rejected"] == 10


# ---- back-pressure -------------------------------------------------------------------------------
def test_slow_sink_bounds_memory_and_counts_every_drop(ws, tmp_path):
    logs: list = []
    settings = StreamSettings(batch_size=100, max_latency_ms=50, queue_max_rows=500, block_timeout_s=0.01)
    dest = {"connector_type": "test_slow_sink", "config": {"key": "bp", "delay_s": 0.05}}
    runner, events = make_runner(
        ws, tmp_path, doc({"rows_per_batch": 50, "batches": 200}, dest=dest), settings=settings, logs=logs
    )
    runner.start()
    source = runner.sources["ticks"]
    wait_for(lambda: source.finished.is_set())
    runner.stop()
    snap = runner.stats()
    produced = source.counters["emitted"]
    delivered = sum(f.height for f in SLOW_WRITES["bp"])
    dropped = snap["sources"]["ticks"]["dropped"]
    assert produced == 10_000 == snap["rows_received"]
    assert dropped > 0 and produced == delivered + dropped  # exact: nothing lost silently
    assert snap["sources"]["ticks"]["peak_queued_rows"] <= 500  # the bound held
    assert snap["nodes"]["ticks"]["rows_dropped"] == dropped == snap["rows_dropped"]
    alarms = events.of("alarm")
    assert sum(a["rows"] for a in alarms) == dropped and {a["node"] for a in alarms} == {"ticks"}
    assert any(level == "warning" and "dropped" in msg and node == "ticks" for level, msg, node in logs)
    # the newest rows survive, the oldest were dropped: the last emitted row was delivered
    assert pl.concat(SLOW_WRITES["bp"])["value"].max() == float(produced - 1)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(st.one_of(st.integers(1, 300), st.integers(-300, -1)), max_size=40),
    max_rows=st.integers(1, 400),
)
def test_queue_never_exceeds_its_bound_and_accounts_for_every_row(ops, max_rows):
    q = BatchQueue("src", max_rows=max_rows, max_bytes=1 << 30, block_timeout_s=0.0)
    taken = 0
    for op in ops:
        if op > 0:
            q.put(pl.DataFrame({"v": range(op)}))
        else:
            taken += sum(i.frame.height for i in q.take(-op))
        assert q.rows <= max_rows
        assert q.received == taken + q.dropped + q.rows


def test_queue_bound_in_bytes():
    frame = pl.DataFrame({"v": range(1000)})  # 8 kB
    q = BatchQueue("src", max_rows=10**9, max_bytes=20_000, block_timeout_s=0.0)
    for _ in range(10):
        q.put(frame)
    assert q.bytes <= 20_000 and q.peak_bytes <= 20_000
    assert q.received == q.rows + q.dropped == 10_000


def test_blocked_emit_waits_for_room_before_dropping():
    q = BatchQueue("src", max_rows=100, max_bytes=1 << 30, block_timeout_s=5.0)
    q.put(pl.DataFrame({"v": range(100)}))
    threading.Timer(0.2, lambda: q.take(100)).start()
    t0 = time.monotonic()
    q.put(pl.DataFrame({"v": range(100, 150)}))  # waits until the runner takes rows
    assert 0.1 < time.monotonic() - t0 < 4.0
    assert q.dropped == 0 and q.rows == 50


# ---- destinations: commits and failures ----------------------------------------------------------
def test_file_destination_appends_each_micro_batch(ws, tmp_path):
    dest = {"connector_type": "file", "config": {"path": "live.csv", "mode": "append"}}
    (tmp_path / "live.csv").write_text("")
    runner, _ = make_runner(
        ws, tmp_path, doc({"rows_per_batch": 25, "batches": 8}, dest=dest, batch_size=50, max_latency_ms=50)
    )
    runner.start()
    wait_for(lambda: runner.stats()["rows_committed"] == 200)
    # visible while the stream runs: every commit is whole rows (fsynced append)
    assert pl.read_csv(tmp_path / "live.csv").height == 200
    runner.stop()
    out = pl.read_csv(tmp_path / "live.csv")
    assert out.columns == list(TAG_SCHEMA.names()) and out["value"].to_list() == [
        float(v) for v in range(200)
    ]


def test_a_torn_last_line_is_cut_before_appending(tmp_path):
    from engine.connectors.file import FileSinkConfig
    from engine.context import RunContext

    path = tmp_path / "live.ndjson"
    path.write_text('{"a":1}\n{"a":2}\n{"a":')  # a crash in the middle of an append
    appender = FileAppender(
        FileSinkConfig(path=str(path), mode="append"), RunContext(base_dir=tmp_path), "out"
    )
    appender.commit(pl.DataFrame({"a": [3]}))
    assert [json.loads(line)["a"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_failing_sink_is_retried_while_sources_buffer(ws, tmp_path):
    blocker = tmp_path / "live.ndjson"
    blocker.mkdir()  # the target is a folder: every append fails until it is removed
    dest = {"connector_type": "file", "config": {"path": "live.ndjson", "mode": "append"}}
    policy = {"retry_policy": {"max_retries": 20, "initial_delay_seconds": 0.05, "backoff_multiplier": 1.0}}
    logs: list = []
    compiled_doc = doc(
        {"rows_per_batch": 10, "batches": 20, "interval_s": 0.01}, dest=dest, batch_size=50, max_latency_ms=50
    )
    compiled_doc["error_handling"] = policy
    runner, events = make_runner(ws, tmp_path, compiled_doc, logs=logs)
    runner.start()
    wait_for(lambda: len(events.of("sink_retry")) >= 3)
    assert runner.stats()["rows_committed"] == 0
    blocker.rmdir()
    wait_for(lambda: runner.stats()["rows_committed"] == 200)
    runner.stop()
    assert runner.status == "success"
    assert len(blocker.read_text().splitlines()) == 200
    assert runner.stats()["sinks"]["out"]["retries"] >= 3
    assert any(level == "warning" and "retry" in msg for level, msg, _ in logs)


def test_sink_failing_beyond_its_retries_fails_the_run(ws, tmp_path):
    (tmp_path / "live.ndjson").mkdir()
    dest = {"connector_type": "file", "config": {"path": "live.ndjson", "mode": "append"}}
    document = doc(
        {"rows_per_batch": 10, "batches": None, "interval_s": 0.01},
        dest=dest,
        batch_size=20,
        max_latency_ms=20,
    )
    document["error_handling"] = {"retry_policy": {"max_retries": 1, "initial_delay_seconds": 0.01}}
    record = run_streaming(validate(document), ws, seconds=5, settings=None, base_dir=tmp_path)
    assert record["status"] == "failed" and "live.ndjson" in record["error"]
    assert record["duration_s"] < 5  # it did not wait for the end
    assert ws.metadata.run(record["run_id"])["status"] == "failed"
    stream = record["stream"]
    assert stream["sinks"]["out"]["dropped"] > 0  # the failed micro-batch is counted, not hidden
    assert stream["rows_received"] == stream["rows_committed"] + stream["rows_dropped"]


# ---- the run record, cancellation, what a real-time pipeline may hold ---------------------------
def test_run_streaming_keeps_a_run_record(ws, tmp_path):
    events = Recorder()
    document = doc(
        {"rows_per_batch": 10, "batches": None, "interval_s": 0.02}, batch_size=1000, max_latency_ms=100
    )
    record = run_streaming(validate(document), ws, seconds=1.0, on_event=events, base_dir=tmp_path)
    assert set(record) >= RUN_RECORD_KEYS
    assert record["status"] == "success" and record["rows_in"] > 0
    assert record["rows_out"] == record["rows_in"] == table(ws).height  # the last micro-batch too
    stored = ws.metadata.run(record["run_id"])
    assert stored["status"] == "success" and stored["rows_out"] == record["rows_out"]
    states = [e["state"] for e in events.of("source_state")]
    assert "connected" in states and states[-1] == "stopped"
    assert events.of("stream_stats") and events.of("node_progress")
    assert events.events[0]["event"] == "run_started"
    finished = events.events[-1]
    assert {k: finished[k] for k in ("event", "run_id", "status")} == {
        "event": "run_finished",
        "run_id": record["run_id"],
        "status": "success",
    }
    assert finished["duration_s"] == record["duration_s"] and finished["error"] == record["error"]


def test_cancel_ends_the_run_cancelled_and_commits_what_was_received(ws, tmp_path):
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    document = doc(
        {"rows_per_batch": 10, "batches": None, "interval_s": 0.02}, batch_size=1000, max_latency_ms=60_000
    )
    record = run_streaming(validate(document), ws, seconds=None, cancel=cancel, base_dir=tmp_path)
    assert record["status"] == "cancelled"
    assert record["rows_in"] > 0 and table(ws).height == record["rows_in"] == record["rows_out"]
    assert ws.metadata.run(record["run_id"])["status"] == "cancelled"


def test_polled_sources_and_unappendable_destinations_are_refused(ws, tmp_path):
    (tmp_path / "in.csv").write_text("a\n1\n")
    document = {
        "name": "not live",
        "nodes": [
            {"id": "file_in", "kind": "source", "connector_type": "file", "config": {"path": "in.csv"}},
            {
                "id": "pq",
                "kind": "destination",
                "inputs": ["file_in"],
                "connector_type": "file",
                "config": {"path": "out.parquet"},
            },
            {
                "id": "db",
                "kind": "destination",
                "inputs": ["file_in"],
                "connector_type": "duckdb",
                "config": {"table": "t", "mode": "replace"},
            },
        ],
        "schedule": {"type": "real_time"},
    }
    expected = {"nodes[0].connector_type", "nodes[1].config.format", "nodes[2].config.mode"}
    with pytest.raises(SpecError) as refused:  # validation refuses them (aggregator validate)
        validate(document, check_schemas=False)
    assert {i.path for i in refused.value.issues} == expected
    # ... and so does the runner, for a pipeline that reached it by another way
    compiled = validate({**document, "schedule": {"type": "manual"}}, check_schemas=False)
    assert {i.path for i in check_streaming(compiled)} == expected
    record = run_streaming(compiled, ws, seconds=1, base_dir=tmp_path)
    assert record["status"] == "failed" and "polled source" in record["error"]
    with pytest.raises(SpecError):
        make_runner(ws, tmp_path, {**document, "schedule": {"type": "manual"}})[0].start()


def test_stop_while_a_source_is_blocked_in_emit_drops_nothing(ws, tmp_path):
    settings = StreamSettings(batch_size=100, max_latency_ms=20, queue_max_rows=200, block_timeout_s=60)
    dest = {"connector_type": "test_slow_sink", "config": {"key": "stop", "delay_s": 0.02}}
    runner, _ = make_runner(
        ws, tmp_path, doc({"rows_per_batch": 100, "batches": None}, dest=dest), settings=settings
    )
    runner.start()
    wait_for(lambda: runner.stats()["sources"]["ticks"]["queued_rows"] == 200)  # full: emit waits
    runner.stop()
    snap = runner.stats()
    delivered = sum(f.height for f in SLOW_WRITES["stop"])
    assert snap["rows_dropped"] == 0 and delivered == runner.sources["ticks"].counters["emitted"]
    assert snap["sources"]["ticks"]["peak_queued_rows"] <= 200


def test_a_sink_made_for_streaming_is_opened_once_and_committed_per_group_of_micro_batches(ws, tmp_path):
    dest = {"connector_type": "test_session_sink", "config": {"key": "session", "delay_s": 0}}
    runner, _ = make_runner(
        ws,
        tmp_path,
        doc({"rows_per_batch": 50, "batches": 6}, dest=dest, batch_size=100, max_latency_ms=60_000),
    )
    runner.start()
    wait_for(lambda: runner.stats()["rows_committed"] == 300)
    runner.stop()
    calls = SLOW_WRITES["session.calls"]
    # three micro-batches of 100: micro-batches waiting together share a commit (issue 12)
    assert calls[0] == "open" and calls[-1] == "close" and set(calls[1:-1]) == {"commit"}
    assert 1 <= len(calls) - 2 <= 3
    assert sum(f.height for f in SLOW_WRITES["session"]) == 300


def test_a_failing_transformation_fails_the_run_and_counts_its_micro_batch(ws, tmp_path):
    steps = [
        {
            "type": "field_validation",
            "field_name": "value",
            "validation_type": "range",
            "parameters": {"min": 0, "max": 89},
            "on_failure": "fail",
        }
    ]
    document = doc(
        {"rows_per_batch": 10, "batches": None, "interval_s": 0.01},
        steps=steps,
        batch_size=30,
        max_latency_ms=50,
    )
    record = run_streaming(validate(document), ws, seconds=5, base_dir=tmp_path)
    assert record["status"] == "failed" and "step0" in record["error"]
    stream = record["stream"]
    assert stream["rows_dropped"] > 0 and table(ws).height == stream["rows_committed"] <= 90
    assert stream["rows_received"] == stream["rows_committed"] + stream["rows_dropped"]


# ---- a source in a worker process (Arrow IPC over a pipe) ---------------------------------------
def test_a_source_in_a_worker_process_hands_over_arrow_batches(ws, tmp_path):
    registry.register(TicksConnector)  # the child imports it from tests.engine.streaming_sources
    document = doc({"rows_per_batch": 50, "batches": 20}, batch_size=100, max_latency_ms=50)
    document["nodes"][0]["worker_process"] = True
    runner, events = make_runner(ws, tmp_path, document)
    assert type(runner.flow._make_source("ticks")).__name__ == "ProcessSource"
    runner.start()
    wait_for(lambda: runner.stats()["rows_committed"] == 1000, timeout=30)
    runner.stop()
    out = table(ws)
    assert out["value"].to_list() == [float(v) for v in range(1000)]
    assert out.columns == list(TAG_SCHEMA.names()) and out["source"].unique().to_list() == ["ticks"]
    assert runner.sources["ticks"].counters["emitted"] == 1000  # the child's counters came back
    states = [e["state"] for e in events.of("source_state")]
    assert "connected" in states and states[-1] == "stopped"  # the child's session states too


def test_only_a_source_runs_in_a_worker_process():
    document = doc({"rows_per_batch": 1, "batches": 1})
    document["nodes"][-1]["worker_process"] = True
    with pytest.raises(SpecError) as refused:
        validate(document)
    assert [i.path for i in refused.value.issues] == [f"nodes[{len(document['nodes']) - 1}].worker_process"]


def test_settings_come_from_the_schedule_and_explicit_overrides_win():
    from engine.spec.models import RealTimeSchedule
    from engine.streaming.settings import StreamSettings

    schedule = RealTimeSchedule(type="real_time", batch_size=50, max_latency_ms=20, block_timeout_s=2.0)
    settings = StreamSettings.from_schedule(schedule, block_timeout_s=0.1, queue_max_rows=None)
    assert (settings.batch_size, settings.max_latency_ms, settings.block_timeout_s) == (50, 20, 0.1)
    assert settings.queue_max_bytes == schedule.queue_max_bytes


class _Unreachable(StreamingSource):
    """A peer that never answers: the session stays `connecting` with the refusal as detail."""

    def start(self, emit) -> None:
        self.set_state("connecting", "127.0.0.1:1: connection refused")

    def stop(self) -> None:
        self.set_state("stopped")


class UnreachableConnector(TicksConnector):
    connector_type = "test_unreachable"

    @classmethod
    def make_source(cls, config, ctx, name: str) -> StreamingSource:
        return _Unreachable(config, ctx, name)


def test_a_run_whose_only_source_never_connects_fails_and_says_why(ws, tmp_path):
    registry.register(UnreachableConnector)
    document = doc({"rows_per_batch": 1, "batches": 1}, batch_size=10, max_latency_ms=50)
    document["nodes"][0]["connector_type"] = "test_unreachable"
    record = run_streaming(validate(document), ws, seconds=0.5, base_dir=tmp_path)
    assert record["status"] == "failed" and record["rows_in"] == 0
    assert record["error"] == "no values were received from 'ticks': 127.0.0.1:1: connection refused"
    logged = [line["message"] for line in ws.metadata.logs(record["run_id"])]
    assert "source 'ticks' never connected (connecting: 127.0.0.1:1: connection refused)" in logged


def test_a_source_that_never_connects_beside_a_working_one_ends_the_run_with_a_warning(ws, tmp_path):
    registry.register(UnreachableConnector)
    document = doc({"rows_per_batch": 5, "batches": 2}, batch_size=10, max_latency_ms=50)
    dead = {**document["nodes"][0], "id": "dead", "connector_type": "test_unreachable"}
    document["nodes"].insert(1, dead)
    document["nodes"][-1]["inputs"] = ["ticks", "dead"]
    document["nodes"].insert(
        2, {"id": "both", "kind": "transform", "inputs": ["ticks", "dead"], "transform": {"type": "union"}}
    )
    document["nodes"][-1]["inputs"] = ["both"]
    record = run_streaming(validate(document), ws, seconds=0.5, base_dir=tmp_path)
    assert record["status"] == "warning" and record["rows_in"] == 10
    assert record["error"] == "source 'dead' never connected (connecting: 127.0.0.1:1: connection refused)"


def test_dead_letters_of_a_micro_batch_that_never_commits_are_not_written(ws, tmp_path):
    """Rejected records go through the reject sink with their micro-batch's commit: a micro-batch
    whose destination fails through every retry leaves no dead letter (it is counted as dropped),
    and a committed one leaves each rejected record once."""
    (tmp_path / "live.ndjson").mkdir()  # every append fails
    document = doc(
        {"rows_per_batch": 10, "batches": None, "interval_s": 0.01},
        dest={"connector_type": "file", "config": {"path": "live.ndjson", "mode": "append"}},
        steps=[
            {
                "type": "field_validation",
                "field_name": "value",
                "validation_type": "range",
                "parameters": {"min": 0, "max": 4},
            }
        ],
        batch_size=10,
        max_latency_ms=20,
    )
    document["error_handling"] = {
        "retry_policy": {"max_retries": 2, "initial_delay_seconds": 0.01},
        "dead_letter_queue": {"storage": "dead.ndjson"},
    }
    record = run_streaming(validate(document), ws, seconds=10, base_dir=tmp_path)
    assert record["status"] == "failed" and record["stream"]["sinks"]["out"]["dropped"] > 0
    dead = tmp_path / "dead.ndjson"
    assert not dead.exists() or dead.read_text() == ""  # written before the commit, before the fix

    (tmp_path / "live.ndjson").rmdir()
    document["nodes"][0]["config"]["batches"] = 1
    cancel = threading.Event()

    def stop_after_first(event: dict) -> None:
        if event.get("event") == "micro_batch":
            cancel.set()

    record = run_streaming(
        validate(document), ws, seconds=20, cancel=cancel, on_event=stop_after_first, base_dir=tmp_path
    )
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert sorted(r["value"] for r in lines) == [5, 6, 7, 8, 9]
    assert {r["_run_id"] for r in lines} == {record["run_id"]} and {r["_node_id"] for r in lines} == {"step0"}


def test_historian_destinations_opened_together_on_a_fresh_historian_all_open(tmp_path):
    """Two real-time pipelines into a new data directory start together (a service's streams, or
    an execute beside the stream the service keeps): their historian destinations create the tag
    tables at the same moment. DuckDB failed all but one with a catalog write-write conflict, not
    retried, and those runs ended by themselves. (Their later commits may still conflict on the
    rollup's state row: that is a ConnectorError, retried like any failing commit.)"""
    from engine.context import RunContext
    from engine.store.historian import Historian

    cls = registry.get("historian")
    openers = 4
    for round_ in range(3):  # a fresh historian each round: the race is on the first CREATE
        historian = Historian(tmp_path / f"h{round_}" / "historian.duckdb")
        ctx = RunContext(data_dir=tmp_path / f"h{round_}", historian=historian)
        sinks = [cls.make_sink(cls.SinkConfig(), ctx, f"historian{i}") for i in range(openers)]
        together = threading.Barrier(openers)
        failures: list[str] = []

        def open_at_once(sink, together=together, failures=failures) -> None:
            together.wait()
            try:
                sink.open()
            except Exception as exc:
                failures.append(f"{sink.name}: {exc}")

        threads = [threading.Thread(target=open_at_once, args=(s,)) for s in sinks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        try:
            assert failures == []
            for i, sink in enumerate(sinks):  # each one's transaction works
                sink.write(
                    pl.DataFrame({"timestamp": [datetime.now(UTC)], "tag": [f"t{i}"], "value": [float(i)]})
                )
                sink.close()
            tags = historian.cursor().execute("SELECT tag FROM tags ORDER BY tag").fetchall()
            assert [t for (t,) in tags] == [f"t{i}" for i in range(openers)]
        finally:
            historian.close()


def test_two_streams_into_one_historian_both_commit_every_row(ws, tmp_path):
    """Two real-time pipelines into the same historian at once: their micro-batches update the
    tag tables' shared rows (the rollup's state, tag_last), and a transaction of one open while the
    other committed ended in DuckDB's "Conflict on update", failing a stream by itself. Each
    micro-batch is now its own short transaction, one stream at a time."""
    historian = {"connector_type": "historian"}
    ticks = {"rows_per_batch": 5, "batches": 40, "interval_s": 0.01}
    records: list[dict] = []
    committed = {0: 0, 1: 0}
    cancels = [threading.Event(), threading.Event()]

    def stream(i: int) -> None:
        def on_event(event: dict) -> None:
            if event["event"] == "stream_stats":
                committed[i] = event.get("rows_committed", 0)

        document = {**doc(ticks, dest=historian, batch_size=10, max_latency_ms=20), "name": f"stream {i}"}
        records.append(
            run_streaming(
                validate(document), ws, seconds=None, on_event=on_event, cancel=cancels[i], base_dir=tmp_path
            )
        )

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        # every row committed, or a stream ended by itself (then the statuses below say why)
        wait_for(lambda: committed == {0: 200, 1: 200} or len(records) > 0, timeout=60)
    finally:
        for c in cancels:
            c.set()
        for t in threads:
            t.join(60)
    assert [(r["status"], r["error"]) for r in records] == [("cancelled", "run cancelled")] * 2
    assert [r["rows_out"] for r in records] == [200, 200]
    (stored,) = ws.historian.cursor().execute("SELECT count(*) FROM tags").fetchone()
    assert stored == 400


@pytest.mark.parametrize("kinds", [(True, True), (True, False)], ids=["two_lean", "lean_and_frame"])
def test_tag_batches_from_two_sources_reach_the_historian_and_a_transform(ws, tmp_path, kinds):
    """Sources of a few tags hand over TagBatches (no Polars: issue 12 item 4). Two of them into one
    historian, or one beside a source of frames, in the same micro-batches: every row is stored
    once, with its value; the same rows through a transform (which needs a frame) reach DuckDB."""
    ticks = [{"rows_per_batch": 3, "batches": 20, "tags": 3, "lean": lean} for lean in kinds]
    document = {
        "name": "live",
        "nodes": [
            {"id": "a", "kind": "source", "connector_type": "test_ticks", "config": ticks[0]},
            {"id": "b", "kind": "source", "connector_type": "test_ticks", "config": ticks[1]},
            {"id": "hist", "kind": "destination", "inputs": ["a", "b"], "connector_type": "historian"},
            {
                "id": "big",
                "kind": "transform",
                "inputs": ["a"],
                "transform": {
                    "type": "record_filter",
                    "condition": {"field": "value", "operator": "gte", "value": 30},
                },
            },
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["big"],
                "connector_type": "duckdb",
                "config": {"table": "live"},
            },
        ],
        "schedule": {"type": "real_time", "max_latency_ms": 50},
    }
    runner, _ = make_runner(ws, tmp_path, document)
    runner.start()
    try:  # every row committed to each destination (what the asserts below read back)
        wait_for(lambda: [runner.sink_stats[d]["rows"] for d in ("hist", "out")] == [120, 30], 30)
    finally:
        runner.stop()
    stored = ws.historian.cursor().execute("SELECT source, value, quality FROM tags ORDER BY ALL").fetchall()
    assert stored == sorted([(s, float(v), "good") for s in ("a", "b") for v in range(60)])
    assert sorted(table(ws)["value"].to_list()) == [float(v) for v in range(30, 60)]
