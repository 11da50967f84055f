"""All or nothing across destinations: every destination finishes writing first, then one short
phase commits them; a failure in that phase takes back what it can (renames), and what it cannot
(a committed transaction) is recorded as a partial commit. Retried attempts keep rejected records
once. The faults are real: a target replaced by a folder, a table altered by another connection
between staging and commit (DuckDB then refuses the COMMIT)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from engine.runner import run_pipeline
from engine.spec.validate import validate
from engine.workspace import Workspace

ROWS = [{"id": i, "value": i * 1.5} for i in range(1, 6)]


def doc(*destinations: dict, **extra) -> dict:
    return {
        "name": "two outputs",
        "sources": [{"name": "readings", "connector_type": "file", "config": {"path": "readings.json"}}],
        "destinations": list(destinations),
        **extra,
    }


def file_dest(name: str, path: str) -> dict:
    return {"name": name, "connector_type": "file", "config": {"path": path}}


def table_dest(name: str, table: str) -> dict:
    return {"name": name, "connector_type": "duckdb", "config": {"table": table}}


def on(event_name: str, action):
    """An event handler that runs `action` once, when the run emits `event_name`."""
    done = []

    def handler(event: dict) -> None:
        if event.get("event") == event_name and not done:
            done.append(event)
            action(event)

    handler.done = done  # type: ignore[attr-defined]
    return handler


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def table_rows(ws: Workspace, table: str) -> int:
    cur = ws.historian.cursor()
    try:
        return cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        cur.close()


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "readings.json").write_text(json.dumps(ROWS))
    (tmp_path / "a.csv").write_text("old,content\n1,2\n")  # the first destination's current content
    return tmp_path


@pytest.mark.parametrize("when", ["before the run", "between staging and commit"])
def test_second_file_failing_at_commit_leaves_the_first_as_it_was(setup, when):
    """The second destination's target is a folder: found when it finishes staging (before any
    commit), or, made a folder between staging and commit, its rename fails and the first
    destination's rename (already done) is taken back."""
    tmp = setup

    def sabotage(_event):
        (tmp / "b.csv").mkdir()
        (tmp / "b.csv" / "keep.txt").write_text("someone's folder")

    if when == "before the run":
        sabotage(None)
    handler = on("committing", sabotage if when != "before the run" else lambda _e: None)
    with Workspace(tmp / "data") as ws:
        record = run_pipeline(
            validate(doc(file_dest("first", "a.csv"), file_dest("second", "b.csv"))),
            ws,
            base_dir=tmp,
            on_event=handler,
        )
        stats = {s["node_id"]: s for s in ws.metadata.node_stats(record["run_id"])}
    if when != "before the run":
        assert handler.done, "the run never reached its commit phase"
    assert record["status"] == "failed"
    assert record["error"].startswith(f"{tmp / 'b.csv'}: ") and "Traceback" not in record["error"]
    assert (tmp / "a.csv").read_text() == "old,content\n1,2\n"  # not written
    assert (tmp / "b.csv" / "keep.txt").read_text() == "someone's folder"
    assert hidden(tmp) == [], "a temporary or kept-aside file was left behind"
    assert record["rows_out"] == 0 and not record["_targets"]
    assert stats["first"]["committed"] is None and stats["second"]["committed"] is None


def test_a_file_and_a_table_whose_commit_is_refused(setup):
    """A file destination, then a DuckDB table that another connection alters between staging and
    commit (a real transaction conflict at COMMIT): the file is put back, nothing is written."""
    tmp = setup
    with Workspace(tmp / "data") as ws:
        cur = ws.historian.cursor()
        cur.execute("CREATE TABLE readings (id BIGINT, value DOUBLE)")
        cur.close()

        def alter(_event):
            c = ws.historian.cursor()
            c.execute("ALTER TABLE readings ADD COLUMN note VARCHAR")
            c.close()

        handler = on("committing", alter)
        record = run_pipeline(
            validate(doc(file_dest("copy", "a.csv"), table_dest("table", "readings"))),
            ws,
            base_dir=tmp,
            on_event=handler,
        )
        assert handler.done
        assert record["status"] == "failed"
        assert "historian.duckdb:readings" in record["error"] and "conflict" in record["error"]
        assert not record["error"].startswith("partial commit")
        assert table_rows(ws, "readings") == 0
    assert (tmp / "a.csv").read_text() == "old,content\n1,2\n"
    assert hidden(tmp) == []


def test_a_partial_commit_is_recorded_and_not_retried(setup):
    """Two transactions cannot commit as one: when the second is refused after the first has
    committed, the run fails with `partial commit`, says which committed, records `committed`
    per node, takes the file back, and is not retried (that would write the first one twice)."""
    tmp = setup
    with Workspace(tmp / "data") as ws:
        cur = ws.historian.cursor()
        cur.execute("CREATE TABLE t1 (id BIGINT, value DOUBLE)")
        cur.execute("CREATE TABLE t2 (id BIGINT, value DOUBLE)")
        cur.close()

        def alter(_event):
            c = ws.historian.cursor()
            c.execute("ALTER TABLE t2 ADD COLUMN note VARCHAR")
            c.close()

        handler = on("committing", alter)
        retry = {"retry_policy": {"max_retries": 2, "initial_delay_seconds": 0.01}}
        record = run_pipeline(
            validate(
                doc(
                    file_dest("copy", "a.csv"),
                    table_dest("first", "t1"),
                    table_dest("second", "t2"),
                    error_handling=retry,
                )
            ),
            ws,
            base_dir=tmp,
            on_event=handler,
        )
        stored = ws.metadata.run(record["run_id"])
        stats = {s["node_id"]: s for s in ws.metadata.node_stats(record["run_id"])}
        assert record["status"] == "failed" and stored["attempt"] == 1
        assert record["error"].startswith("partial commit: first committed, second did not (")
        assert stored["error"] == record["error"]
        assert (stats["first"]["committed"], stats["second"]["committed"], stats["copy"]["committed"]) == (
            1,
            0,
            0,
        )
        assert table_rows(ws, "t1") == len(ROWS) and table_rows(ws, "t2") == 0
        assert record["rows_out"] == len(ROWS) and list(record["_targets"]) == ["first"]
    assert (tmp / "a.csv").read_text() == "old,content\n1,2\n"
    assert hidden(tmp) == []


def test_every_destination_commits_and_nothing_is_kept_aside(setup):
    tmp = setup
    with Workspace(tmp / "data") as ws:
        record = run_pipeline(
            validate(doc(file_dest("first", "a.csv"), file_dest("second", "b.csv"), table_dest("t", "t"))),
            ws,
            base_dir=tmp,
        )
        stats = {s["node_id"]: s["committed"] for s in ws.metadata.node_stats(record["run_id"])}
        assert table_rows(ws, "t") == len(ROWS)
        assert ws.metadata.leftovers(finished_only=False) == []
    assert record["status"] == "success"
    assert stats == {"readings": None, "first": 1, "second": 1, "t": 1}
    assert (tmp / "a.csv").read_text().startswith("id,value\n1,1.5")
    assert hidden(tmp) == []


# ---- retries keep each rejected record once ---------------------------------------------------------
ORDERS = [
    {"order_id": 1, "customer_email": "john@example.com"},
    {"order_id": 2, "customer_email": "mary@example"},
    {"order_id": 3, "customer_email": "ann@example.com"},
    {"order_id": 4, "customer_email": "bo@"},
]


@pytest.mark.parametrize("storage", ["reject_store", "rejects/dead_letters.ndjson"])
def test_retries_store_each_rejected_record_once(tmp_path, storage):
    """Two attempts fail (the destination is a folder until the second back-off, when it goes
    away), the third succeeds: the rejected records are stored once, in the `_rejects` table or
    in the dead-letter NDJSON file."""
    (tmp_path / "orders.json").write_text(json.dumps(ORDERS))
    (tmp_path / "out.json").mkdir()
    spec = {
        "name": "orders",
        "sources": [{"name": "orders", "connector_type": "file", "config": {"path": "orders.json"}}],
        "transformations": [
            {"type": "field_validation", "field_name": "customer_email", "validation_type": "email_format"}
        ],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
        "error_handling": {
            "retry_policy": {"max_retries": 2, "initial_delay_seconds": 0.01},
            "dead_letter_queue": {"storage": storage},
        },
    }

    def heal(event: dict) -> None:
        if event.get("event") == "retrying" and event["attempt"] == 3:
            shutil.rmtree(tmp_path / "out.json")

    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(spec), ws, base_dir=tmp_path, on_event=heal)
        stored = ws.metadata.run(record["run_id"])
        rejects = ws.historian.rejects()
    assert record["status"] == "warning" and stored["attempt"] == 3, record["error"]
    assert [r["order_id"] for r in json.loads((tmp_path / "out.json").read_text())] == [1, 3]
    if storage == "reject_store":
        assert sorted(json.loads(r)["order_id"] for r in rejects["record"]) == [2, 4]
        assert set(rejects["run_id"]) == {record["run_id"]}
    else:
        assert rejects.height == 0
        lines = [json.loads(line) for line in (tmp_path / storage).read_text().splitlines()]
        assert sorted(r["order_id"] for r in lines) == [2, 4]
        assert {r["_run_id"] for r in lines} == {record["run_id"]}
        assert all(r["_reject_reason"] for r in lines)
        assert hidden(tmp_path / "rejects") == []


def test_a_real_time_run_still_appends_its_dead_letters_per_micro_batch(tmp_path):
    """A real-time pass commits per micro-batch: its rejected records go to the dead-letter file as
    they come (not to the `_rejects` table)."""
    from engine.connectors import registry
    from engine.streaming.run import run_streaming
    from tests.engine.streaming_sources import TicksConnector

    registry.register(TicksConnector)
    spec = {
        "name": "ticks",
        "nodes": [
            {
                "id": "ticks",
                "kind": "source",
                "connector_type": "test_ticks",
                "config": {"rows_per_batch": 10, "batches": 5, "interval_s": 0.01},
            },
            {
                "id": "check",
                "kind": "transform",
                "inputs": ["ticks"],
                "transform": {
                    "type": "field_validation",
                    "field_name": "value",
                    "validation_type": "range",
                    "parameters": {"min": 0, "max": 44},
                },
            },
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["check"],
                "connector_type": "duckdb",
                "config": {"table": "t"},
            },
        ],
        "schedule": {"type": "real_time", "batch_size": 10, "max_latency_ms": 50},
        "error_handling": {"dead_letter_queue": {"storage": "dead.ndjson"}},
    }
    cancel, seen = threading.Event(), []

    def stop_when_all_passed(event: dict) -> None:  # micro_batch: emitted once a pass is committed
        if event.get("event") == "micro_batch":
            seen.append(event["rows"])
            if sum(seen) == 50:
                cancel.set()

    with Workspace(tmp_path / "data") as ws:
        record = run_streaming(
            validate(spec), ws, seconds=30, cancel=cancel, on_event=stop_when_all_passed, base_dir=tmp_path
        )
        assert ws.historian.rejects().height == 0
    assert record["status"] == "cancelled" and record["rows_rejected"] == 5, record
    lines = [json.loads(line) for line in (tmp_path / "dead.ndjson").read_text().splitlines()]
    assert sorted(r["value"] for r in lines) == [45, 46, 47, 48, 49]
    assert {r["_run_id"] for r in lines} == {record["run_id"]}
