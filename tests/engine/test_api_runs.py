"""EngineAPI runs calls against a real data dir: previews, runs, streams, the history, re-runs."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.api import LocalEngine, RunFilter
from engine.api.events import EngineEvent, JobStarted, NodeProgress, RunFinished, RunStarted
from engine.connectors import registry
from engine.errors import DataError, RunCancelled, SpecError
from tests.engine.streaming_sources import TicksConnector
from tests.pipelines import ecommerce_folder


@pytest.fixture
def folder(tmp_path) -> Path:
    return ecommerce_folder(tmp_path)


@pytest.fixture
def doc(folder) -> dict:
    return json.loads((folder / "ecommerce_orders.json").read_text())


@pytest.fixture
def engine(tmp_path):
    eng = LocalEngine(tmp_path / "data")
    events: list[dict] = []
    records: list[EngineEvent] = []
    lock = threading.Lock()

    def record(event: EngineEvent) -> None:
        with lock:
            records.append(event)
            events.append(event.to_dict())

    eng.subscribe(record)
    eng.events = events  # their wire shape
    eng.records = records  # as subscribers receive them
    yield eng
    eng.close()


def ticks_doc(**ticks) -> dict:
    return {
        "name": "ticks live",
        "nodes": [
            {"id": "ticks", "kind": "source", "connector_type": "test_ticks", "config": ticks},
            {"id": "out", "kind": "destination", "inputs": ["ticks"], "connector_type": "duckdb",
             "config": {"table": "ticks"}},
        ],
        "schedule": {"type": "real_time"},
    }  # fmt: skip


def test_preview_shows_a_nodes_rows_types_and_rejects_and_writes_nothing(engine, doc, folder):
    result = engine.runs.preview(doc, "check_email", limit=5, base_dir=folder).result(30)

    out = result.output("check_email")
    assert out.rows_total == 12 and out.rows.height == 5
    assert ("order_date", "Datetime(time_unit='us', time_zone='UTC')") in out.columns
    assert ("total", "Float64") in out.columns
    rejected = result.rejected("check_email")
    assert sorted(rejected.rows["order_id"]) == ["5003", "5006", "W-1004"]
    assert all("not a valid email" in r for r in rejected.rows["_reject_reason"])
    assert result.edge_counts()[("union", "out")] == 15
    # a dry run through that node: no destination ran, nothing written, no run recorded
    assert not any(node in result.stats for node in ("unified_json", "historian", "rejected"))
    assert not (folder / "unified_orders.json").exists()
    assert engine.runs.list() == []


def test_preview_reads_only_what_feeds_the_node(engine, doc, folder):
    result = engine.runs.preview(doc, "map_woocommerce", limit=3, base_dir=folder).result(30)
    assert set(result.stats) == {"woocommerce", "map_woocommerce"}
    assert result.output("map_woocommerce").rows["order_id"].to_list() == ["W-1001", "W-1002", "W-1003"]


def test_preview_of_a_missing_node_names_it(engine, doc, folder):
    with pytest.raises(SpecError, match="no node 'nope'"):
        engine.runs.preview(doc, "nope", base_dir=folder).result(30)


def test_preview_of_a_streaming_source_is_a_short_live_sample(engine):
    registry.register(TicksConnector)
    doc = ticks_doc(rows_per_batch=2, batches=None, interval_s=0.01)
    result = engine.runs.preview(doc, "ticks", limit=6).result(30)
    assert result.live_sampled == ["ticks"]
    assert result.output("ticks").rows["value"].to_list() == [0, 1, 2, 3, 4, 5]


def test_cancel_stops_a_preview(engine):
    registry.register(TicksConnector)
    doc = ticks_doc(rows_per_batch=1, batches=None, interval_s=0.2)  # 100 rows would take 20 s
    job = engine.runs.preview(doc, "out", limit=100)
    time.sleep(0.3)
    t0 = time.monotonic()
    job.cancel()
    with pytest.raises(RunCancelled):
        job.result(30)
    assert time.monotonic() - t0 < 5


def test_run_records_the_run_and_forwards_node_progress_tagged_with_the_job(engine, doc, folder):
    job = engine.runs.start(doc, spec_path=folder / "ecommerce_orders.json")
    record = job.result(30)

    assert (record["status"], record["rows_in"], record["rows_out"], record["rows_rejected"]) == (
        "warning", 15, 12, 3,
    )  # fmt: skip
    assert len(json.loads((folder / "unified_orders.json").read_text())) == 12
    typed = [e for e in list(engine.records) if e.job == job.id]
    assert {type(e) for e in typed} >= {JobStarted, RunStarted, NodeProgress, RunFinished}
    finished = next(e for e in typed if isinstance(e, RunFinished))
    assert (finished.run_id, finished.status) == (record["run_id"], "warning")
    mine = [e for e in engine.events if e.get("job") == job.id]
    kinds = [e["event"] for e in mine if not e["event"].startswith("job_")]
    assert kinds[0] == "run_started" and "run_finished" in kinds
    final = {e["node"]: e for e in mine if e["event"] == "node_progress"}
    assert final["check_email"]["rows_rejected"] == 3 and final["check_email"]["status"] == "success"
    assert final["historian"]["rows_in"] == 12 and final["historian"]["status"] == "success"


def test_history_filters_detail_and_rerun(engine, doc, folder):
    spec = folder / "ecommerce_orders.json"
    good = engine.runs.start(doc, spec_path=spec).result(30)
    broken = json.loads(json.dumps(doc))
    broken["name"] = "broken orders"
    broken["nodes"][0]["config"]["path"] = "missing.json"
    bad = engine.runs.start(broken, spec_path=spec).result(30)
    assert bad["status"] == "failed" and "missing.json" in bad["error"]

    assert [r["run_id"] for r in engine.runs.list()] == [bad["run_id"], good["run_id"]]
    assert [r["run_id"] for r in engine.runs.list(RunFilter(status="failed"))] == [bad["run_id"]]
    assert [r["run_id"] for r in engine.runs.list(RunFilter(pipeline="E-commerce order unification"))] == [
        good["run_id"]
    ]
    assert engine.runs.list(RunFilter(since=datetime.now(UTC) + timedelta(minutes=1))) == []
    assert len(engine.runs.list(RunFilter(since=datetime.now(UTC) - timedelta(minutes=5)))) == 2
    assert engine.runs.pipeline_names() == ["E-commerce order unification", "broken orders"]

    detail = engine.runs.detail(good["run_id"])
    assert detail["record"]["rows_out"] == 12
    nodes = {n["node_id"]: n for n in detail["nodes"]}
    assert nodes["union"]["rows_out"] == 15 and nodes["check_email"]["rows_rejected"] == 3
    assert detail["logs"][0]["message"] == "run started (manual)"
    assert detail["logs"][-1]["message"] == "run warning"
    assert sorted(detail["rejects"]["node_id"]) == ["check_email"] * 3
    assert all("not a valid email" in r for r in detail["rejects"]["reason"])

    again = engine.runs.rerun(good["run_id"]).result(30)
    assert again["run_id"] != good["run_id"] and again["status"] == "warning"
    stored = engine.runs.detail(again["run_id"])["record"]
    assert (stored["trigger"], stored["version"]) == (
        "rerun",
        engine.runs.detail(good["run_id"])["record"]["version"],
    )
    with pytest.raises(DataError, match="run 'nope' not found"):
        engine.runs.detail("nope")
    with pytest.raises(DataError, match="run 'nope' not found"):
        engine.runs.rerun("nope").result(30)


def test_cancel_stops_a_run_and_writes_nothing(engine, doc, folder):
    job = engine.runs.start(doc, spec_path=folder / "ecommerce_orders.json")
    job.cancel()  # before its first batch (validating the spec alone takes longer than this)
    record = job.result(30)
    assert record["status"] == "cancelled" and record["rows_out"] == 0
    assert not (folder / "unified_orders.json").exists()


def test_a_stream_starts_reports_stats_and_stops(engine):
    registry.register(TicksConnector)
    job = engine.runs.start(ticks_doc(rows_per_batch=5, batches=None, interval_s=0.02))  # real_time: streams
    assert job.kind == "stream"
    deadline = time.monotonic() + 15
    while not any(e["event"] == "stream_stats" and e.get("job") == job.id for e in engine.events):
        assert time.monotonic() < deadline, "no stream_stats event"
        time.sleep(0.05)
    assert engine.runs.stop(job.id)
    record = job.result(30)
    assert record["status"] == "cancelled" and record["rows_out"] > 0
    assert engine.runs.list(RunFilter(status="cancelled"))[0]["run_id"] == record["run_id"]
    assert not engine.runs.stop(job.id)


def test_engine_threads_run_below_the_callers_priority(engine):
    """A batch run keeps every core busy; the GUI thread (the engine's creator) must win a core.
    The worker, and the threads it starts (an executor's readers and sinks), run at ENGINE_NICE."""
    import os

    from engine.api.core import ENGINE_NICE

    if not hasattr(os, "getpriority") or not os.path.isdir("/proc/self/task"):
        pytest.skip("per-thread priorities are a Linux feature")
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def priorities() -> tuple[int, int]:
        seen = {}
        child = threading.Thread(target=lambda: seen.update(nice=os.getpriority(os.PRIO_PROCESS, 0)))
        child.start()
        child.join()
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), seen["nice"]

    worker, started_by_worker = engine.submit("probe", lambda _cancel: priorities()).result(10)
    assert worker == started_by_worker == max(caller, ENGINE_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller  # ours untouched


def test_the_clis_engine_keeps_the_callers_priority(tmp_path):
    """The CLI has no window to keep answering: its engine (nice=0, as engine_for and the CLI's
    commands make it) runs its work at the caller's priority, so a run from a shell competes with
    the other processes on equal terms."""
    import os

    from engine.api import LocalEngine

    if not hasattr(os, "getpriority") or not os.path.isdir("/proc/self/task"):
        pytest.skip("per-thread priorities are a Linux feature")
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with LocalEngine(tmp_path / "data", nice=0) as cli_engine:
        worker = cli_engine.submit("probe", lambda _cancel: os.getpriority(os.PRIO_PROCESS, 0)).result(10)
    assert worker == caller
