"""A run's record is written in two transactions (engine/runs/record.py, engine/store/metadata.py):
its start (the pipeline's version, the `running` row, the first log line) and its finish (the final
row, the node statistics, the last log line); each all or nothing. Plain sqlite3 statements keep
sqlite-utils' upsert meaning: columns not given stay as they were."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from engine.runner import run_pipeline
from engine.spec.validate import validate
from engine.store.metadata import MetadataStore
from engine.workspace import Workspace


@pytest.fixture
def store(tmp_path):
    s = MetadataStore(tmp_path / "metadata.db")
    yield s
    s.close()


def transactions(store: MetadataStore) -> list[str]:
    seen: list[str] = []
    store.db.conn.set_trace_callback(
        lambda sql: (
            seen.append(sql.split()[0].upper()) if sql.split()[0].upper() in ("BEGIN", "COMMIT") else None
        )
    )
    return seen


def row(store: MetadataStore, run_id: str) -> dict:
    return dict(store.run(run_id) or {})


def test_a_start_and_a_finish_are_one_transaction_each(store):
    seen = transactions(store)
    text = '{"name":"p"}'
    digest = hashlib.sha256(text.encode()).hexdigest()
    run = {"run_id": "r1", "pipeline": "p", "started_at": "2026-01-01T00:00:00Z", "trigger": "interval"}
    version = store.start_run_record(
        {**run, "status": "running", "attempt": 1}, text, digest, "info", "run started"
    )
    assert seen == ["BEGIN", "COMMIT"] and version == 1
    assert row(store, "r1")["version"] == 1 and row(store, "r1")["status"] == "running"
    seen.clear()
    stats = {
        "src": {"kind": "source", "status": "success", "rows_in": 0, "rows_out": 3, "committed": None},
        "out": {"kind": "destination", "status": "success", "rows_in": 3, "rows_out": 3, "committed": True},
    }
    store.finish_run_record(
        {**run, "status": "success", "rows_out": 3, "error": None}, stats, "info", "run success"
    )
    assert seen == ["BEGIN", "COMMIT"]
    final = row(store, "r1")
    assert final["status"] == "success" and final["rows_out"] == 3
    assert final["version"] == 1 and final["trigger"] == "interval"  # not given again: kept
    assert [(s["node_id"], s["rows_out"], s["committed"]) for s in store.node_stats("r1")] == [
        ("src", 3, None),
        ("out", 3, 1),
    ]
    assert [line["message"] for line in store.logs("r1")] == ["run started", "run success"]


def test_versions_are_shared_with_save_pipeline_version(store):
    doc = {"name": "p", "n": 1}
    assert store.save_pipeline_version("p", doc) == 1

    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()
    run = {"run_id": "r1", "pipeline": "p", "status": "running"}
    assert store.start_run_record(run, text, digest, "info", "x") == 1  # the same text: same version
    changed = json.dumps({"name": "p", "n": 2}, sort_keys=True, separators=(",", ":"))
    digest2 = hashlib.sha256(changed.encode()).hexdigest()
    assert store.start_run_record({**run, "run_id": "r2"}, changed, digest2, "info", "x") == 2
    assert store.save_pipeline_version("p", doc) == 3  # back to the first text: a new version
    assert [v["version"] for v in store.pipeline_versions("p")] == [1, 2, 3]


def test_a_finish_that_fails_writes_none_of_it(store):
    run = {"run_id": "r1", "pipeline": "p", "status": "running", "error": None}
    store.upsert_run(run)
    bad_stats = {"src": {"kind": "source", "no_such_column": 1}}
    with pytest.raises(sqlite3.OperationalError):
        store.finish_run_record(
            {**run, "status": "failed", "error": "boom"}, bad_stats, "error", "run failed"
        )
    assert row(store, "r1")["status"] == "running"  # the row's update was rolled back with it
    assert store.logs("r1") == [] and store.node_stats("r1") == []
    store.log("r1", "info", "the store still works")
    assert [line["message"] for line in store.logs("r1")] == ["the store still works"]


def test_a_real_run_records_version_stats_and_its_two_lines(tmp_path):
    (tmp_path / "in.csv").write_text("a,b\n1,2\n3,4\n", encoding="utf-8")
    doc = {
        "name": "tiny",
        "sources": [{"name": "in", "connector_type": "file", "config": {"path": "in.csv", "format": "csv"}}],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.csv"}}],
    }
    with Workspace(tmp_path / "data") as ws:
        plan = validate(doc, reuse=True)
        records = [run_pipeline(plan, ws, base_dir=tmp_path, trigger="interval") for _ in range(2)]
        for record in records:
            stored = ws.metadata.run(record["run_id"])
            assert stored["status"] == "success" and stored["version"] == 1 and stored["rows_out"] == 2
            assert stored["owner_pid"] and stored["finished_at"]
            assert {s["node_id"] for s in ws.metadata.node_stats(record["run_id"])} == {"in", "out"}
            assert [line["message"] for line in ws.metadata.logs(record["run_id"])] == [
                "run started (interval)",
                "run success",
            ]
        assert ws.metadata.leftovers(finished_only=False) == []  # the temporary file was forgotten
