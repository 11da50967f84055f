"""The one front door: `LocalEngine` is an `EngineAPI` made of sub-APIs, its events are typed records
whose wire shape round-trips, and the monitoring read-outs come from real runs in the metadata store."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from engine.api import EngineAPI, LocalEngine, RunFilter
from engine.api.events import (
    CATALOGUE,
    Alarm,
    EngineEvent,
    JobStarted,
    RunFinished,
    SourceState,
    StreamStats,
    UnknownEvent,
    event_from_dict,
)
from engine.examples import install_ecommerce_example


@pytest.fixture
def engine(tmp_path):
    eng = LocalEngine(tmp_path / "data")
    yield eng
    eng.close()


def test_local_engine_is_an_engine_api_of_sub_apis(engine):
    assert isinstance(engine, EngineAPI)
    for part in ("pipelines", "runs", "connectors", "live", "data", "health"):
        assert getattr(engine, part) is not engine, part
    # the mixins' flat names are gone: one way in per call
    for flat in (
        "list_pipelines",
        "run_detail",
        "dashboard_summary",
        "live_tags",
        "run_sql",
        "save_connector",
    ):
        assert not hasattr(engine, flat), flat


WIRE = [
    {"event": "job_started", "job": "run-1", "kind": "run", "running": 1},
    {"event": "run_started", "run_id": "r1", "pipeline": "p", "job": "run-1"},
    {"event": "node_progress", "run_id": "r1", "node": "a", "status": "running", "rows_in": 3,
     "rows_out": 2, "rows_rejected": 1, "duration_s": 0.5, "job": "run-1"},
    {"event": "alarm", "kind": "rows_dropped", "run_id": "r1", "node": "q", "rows": 7, "reason": "full",
     "total_dropped": 9},
    {"event": "stream_stats", "run_id": "r1", "status": "running", "uptime_s": 2.0, "micro_batches": 4,
     "rows_received": 10, "rows_committed": 9, "rows_dropped": 0, "rows_rejected": 1,
     "latency_ms": {"p50": 1.0}, "sources": {"s": {"state": "subscribed"}}, "sinks": {}, "nodes": {}},
    {"event": "source_state", "run_id": "r1", "node": "s", "state": "lost", "detail": "reset"},
    {"event": "connection_tested", "name": "n", "ok": False, "error": "refused", "detail": None, "seconds": 0.1},
    {"event": "connection_tested", "name": "n", "ok": True, "error": None, "detail": "PostgreSQL 16.4; may SELECT", "seconds": 0.1},
    {"event": "run_finished", "run_id": "r1", "status": "success"},
    {"event": "run_finished", "run_id": "r1", "status": "failed", "pipeline": "p", "duration_s": 1.5,
     "rows_in": 3, "rows_out": 0, "rows_rejected": 0, "error": "no such file"},
]  # fmt: skip


@pytest.mark.parametrize("wire", WIRE, ids=[f"{w['event']}-{i}" for i, w in enumerate(WIRE)])
def test_events_are_typed_records_whose_wire_shape_round_trips(wire):
    record = event_from_dict(wire)
    assert type(record) is CATALOGUE[wire["event"]]
    assert record.to_dict() == wire
    assert json.loads(json.dumps(record.to_dict())) == wire  # JSON-safe for the event stream


def test_an_optional_field_holding_none_is_left_off_the_wire():
    finished = event_from_dict({"event": "run_finished", "run_id": "r", "status": "success", "error": None})
    assert isinstance(finished, RunFinished) and finished.error is None
    assert finished.to_dict() == {"event": "run_finished", "run_id": "r", "status": "success"}
    assert finished.get("error") is None


def test_typed_fields_and_what_rides_along():
    alarm = event_from_dict(WIRE[3])
    assert isinstance(alarm, Alarm) and (alarm.alarm, alarm.rows, alarm.node) == ("rows_dropped", 7, "q")
    stats = event_from_dict(WIRE[4])
    assert isinstance(stats, StreamStats) and stats.rows_committed == 9
    assert stats.extra["sources"] == {"s": {"state": "subscribed"}}
    started = event_from_dict(WIRE[0])
    assert isinstance(started, JobStarted) and (started.job, started.job_kind) == ("run-1", "run")


def test_an_unknown_kind_is_kept_and_a_broken_known_one_says_what_is_missing():
    newer = event_from_dict({"event": "tag_value", "tag": "t", "value": 1.5, "job": "j"})
    assert isinstance(newer, UnknownEvent)
    assert newer.to_dict() == {"event": "tag_value", "job": "j", "tag": "t", "value": 1.5}
    with pytest.raises(ValueError, match="run_finished"):
        event_from_dict({"event": "run_finished", "run_id": "r1"})  # no status


def test_subscribers_receive_records_and_a_malformed_emit_breaks_nobody(engine):
    got: list[EngineEvent] = []
    lock = threading.Lock()

    def keep(event: EngineEvent) -> None:
        with lock:
            got.append(event)

    engine.subscribe(keep)
    engine.emit({"event": "run_finished", "run_id": "x"})  # missing status: dropped
    engine.emit({"event": "source_state", "run_id": "r9", "node": "plc", "state": "lost", "detail": "gone"})
    engine.emit(RunFinished(run_id="r9", status="failed"))
    assert [type(e) for e in got] == [SourceState, RunFinished]
    assert got[0].detail == "gone"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_runs_filter_and_monitoring_read_outs_come_from_real_runs(engine, tmp_path):
    spec = install_ecommerce_example(tmp_path / "demo")
    doc = json.loads(spec.read_text(encoding="utf-8"))
    good = engine.runs.start(doc, spec_path=spec).result(60)
    broken = {**doc, "name": "broken orders"}
    broken["nodes"] = [
        {**n, "config": {**n["config"], "path": "missing.csv"}} if n["kind"] == "source" else n
        for n in doc["nodes"]
    ]
    bad = engine.runs.start(broken, spec_path=spec).result(60)
    assert (good["status"], bad["status"]) == ("warning", "failed")

    # until is exclusive, since inclusive: both ends through the metadata store's query
    started = good["started_at"]
    assert [r["run_id"] for r in engine.runs.list(RunFilter(until=started))] == []
    assert [r["run_id"] for r in engine.runs.list(RunFilter(since=started, until=bad["started_at"]))] == [
        good["run_id"]
    ]
    assert engine.runs.pipeline_names() == sorted([doc["name"], "broken orders"])

    stats = {row["pipeline"]: row for row in engine.health.pipeline_stats()}
    assert (stats[doc["name"]]["runs"], stats[doc["name"]]["rows_out"]) == (1, good["rows_out"])
    assert (stats["broken orders"]["failures"], stats["broken orders"]["successes"]) == (1, 0)
    assert [r["pipeline"] for r in engine.health.top_pipelines(limit=1)] == [doc["name"]]
    perf = engine.health.pipeline_performance()
    assert {p["pipeline"] for p in perf} == set(stats) and all(p["avg_duration_s"] > 0 for p in perf)
    alerts = engine.health.alerts()
    assert [(a["kind"], a["run_id"]) for a in alerts] == [("run_failed", bad["run_id"])]
    assert "missing.csv" in alerts[0]["message"]
    today = _iso(datetime.now(UTC))[:10]
    trends = engine.health.pipeline_trends(days=2, now=datetime.now(UTC))
    assert {(t["day"], t["pipeline"], t["runs"]) for t in trends} >= {(today, "broken orders", 1)}
    summary = engine.health.summary()
    assert (summary["runs_today"], summary["failures_today"]) == (2, 1) and "recent_runs" not in summary
    with_recent = engine.health.summary(recent=1)
    assert [r["run_id"] for r in with_recent["recent_runs"]] == [bad["run_id"]]  # the newest
    overview = engine.runs.overview(RunFilter(status="failed"))
    assert [r["run_id"] for r in overview["runs"]] == [bad["run_id"]]
    assert overview["pipelines"] == engine.runs.pipeline_names()
    assert [n["node_id"] for n in engine.runs.nodes(good["run_id"])] == [
        n["node_id"] for n in engine.runs.detail(good["run_id"])["nodes"]
    ]
    # a future start gives nothing; the window is the records' own time text
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert engine.health.pipeline_stats(since=later) == []


def test_call_runs_a_bound_call_off_the_callers_thread(engine):
    caller = threading.get_ident()
    seen: list[int] = []

    def where(tag: str, *, suffix: str) -> str:
        seen.append(threading.get_ident())
        return tag + suffix

    assert engine.call(where, "a", suffix="b").result(10) == "ab"
    assert seen and seen[0] != caller
    deadline = time.monotonic() + 10
    while engine.running_jobs() and time.monotonic() < deadline:
        time.sleep(0.01)
