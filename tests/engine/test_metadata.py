"""The SQLite metadata store: WAL mode, pipeline versions, runs, node statistics, logs, threads."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from engine.store.metadata import SCHEMA_VERSION, MetadataStore

DOC = {
    "name": "p",
    "nodes": [{"id": "a", "kind": "source", "connector_type": "file", "config": {"path": "a.csv"}}],
}


@pytest.fixture
def store(tmp_path):
    s = MetadataStore(tmp_path / "meta" / "metadata.db")
    yield s
    s.close()


def run_row(run_id: str, pipeline: str, status: str, started: str, **extra) -> dict:
    return {"run_id": run_id, "pipeline": pipeline, "status": status, "started_at": started, **extra}


def test_wal_mode_and_schema(store, tmp_path):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.log("r", "info", "hello")
    assert (tmp_path / "meta" / "metadata.db-wal").exists()
    # A second, independent connection sees the file in WAL mode as well (it is persistent).
    other = sqlite3.connect(tmp_path / "meta" / "metadata.db")
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in other.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"pipelines", "pipeline_versions", "runs", "node_stats", "run_logs", "meta"} <= tables
        assert other.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION
        )
    finally:
        other.close()


def test_reopening_keeps_everything(tmp_path):
    path = tmp_path / "metadata.db"
    first = MetadataStore(path)
    first.save_pipeline_version("p", DOC)
    first.upsert_run(run_row("r1", "p", "success", "2026-01-01T00:00:00Z"))
    first.close()
    again = MetadataStore(path)
    try:
        assert [v["version"] for v in again.pipeline_versions("p")] == [1]
        assert again.run("r1")["status"] == "success"
        assert again.save_pipeline_version("p", DOC) == 1  # unchanged document: same version
    finally:
        again.close()


def test_versions_by_content(store):
    assert store.save_pipeline_version("p", DOC) == 1
    assert (
        store.save_pipeline_version("p", dict(reversed(list(DOC.items())))) == 1
    )  # key order is not content
    changed = {**DOC, "description": "v2"}
    assert store.save_pipeline_version("p", changed) == 2
    assert store.save_pipeline_version("p", changed) == 2
    assert store.save_pipeline_version("p", DOC) == 3  # back to the first text is still a new version
    assert store.save_pipeline_version("q", DOC) == 1  # versions count per pipeline

    versions = store.pipeline_versions("p")
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[0]["spec_hash"] == versions[2]["spec_hash"] != versions[1]["spec_hash"]
    assert all(v["saved_at"].endswith("Z") for v in versions)
    assert store.pipeline_spec("p") == DOC
    assert store.pipeline_spec("p", 2) == changed
    assert store.pipeline_spec("p", 9) is None and store.pipeline_spec("nope") is None
    latest = store.db.execute("SELECT latest_version FROM pipelines WHERE name = 'p'").fetchone()[0]
    assert latest == 3


def test_runs_filter_by_pipeline_and_status_newest_first(store):
    store.upsert_run(run_row("a1", "alpha", "success", "2026-01-01T00:00:01Z"))
    store.upsert_run(run_row("a2", "alpha", "failed", "2026-01-01T00:00:03Z"))
    store.upsert_run(run_row("b1", "beta", "failed", "2026-01-01T00:00:02Z"))
    store.upsert_run(run_row("a3", "alpha", "running", "2026-01-01T00:00:04Z"))
    # Upsert: the same run id is updated in place, not added twice.
    store.upsert_run(run_row("a3", "alpha", "warning", "2026-01-01T00:00:04Z", rows_in=5, error=None))

    assert [r["run_id"] for r in store.runs()] == ["a3", "a2", "b1", "a1"]
    assert [r["run_id"] for r in store.runs(pipeline="alpha")] == ["a3", "a2", "a1"]
    assert [r["run_id"] for r in store.runs(status="failed")] == ["a2", "b1"]
    assert [r["run_id"] for r in store.runs(pipeline="alpha", status="failed")] == ["a2"]
    assert [r["run_id"] for r in store.runs(limit=2)] == ["a3", "a2"]
    assert store.runs(pipeline="gamma") == []
    assert store.run("a3")["status"] == "warning" and store.run("a3")["rows_in"] == 5
    assert store.run("zz") is None


def test_node_stats_in_order_and_replaced_on_save(store):
    store.save_node_stats(
        "r",
        {
            "src": {"kind": "source", "rows_in": 0, "rows_out": 3},
            "dst": {"kind": "destination", "rows_in": 3},
        },
    )
    store.save_node_stats("r", {"src": {"kind": "source", "rows_in": 0, "rows_out": 4}})
    stats = store.node_stats("r")
    assert [(s["node_id"], s["kind"]) for s in stats] == [("src", "source"), ("dst", "destination")]
    assert stats[0]["rows_out"] == 4
    assert store.node_stats("other") == []


def test_logs_keep_their_order_per_run(store):
    for i in range(20):
        store.log("r1", "info" if i % 2 else "warning", f"line {i}", "node" if i == 3 else None)
        store.log("r2", "info", f"other {i}")
    lines = store.logs("r1")
    assert [line["message"] for line in lines] == [f"line {i}" for i in range(20)]
    assert [line["level"] for line in lines[:2]] == ["warning", "info"]
    assert lines[3]["node_id"] == "node" and lines[0]["node_id"] is None
    assert [line["ts"] for line in lines] == sorted(line["ts"] for line in lines)
    assert all(line["ts"].endswith("Z") for line in lines)
    assert len(store.logs("r2")) == 20 and store.logs("r3") == []


def test_concurrent_writes_from_threads_share_one_store(store):
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            barrier.wait()
            for i in range(40):
                store.log(f"run{n}", "info", f"{n}-{i}")
                store.upsert_run(
                    run_row(f"run{n}", f"pipe{n % 2}", "running", f"2026-01-01T00:00:{n:02d}Z", attempt=i)
                )
                store.save_node_stats(f"run{n}", {f"node{i % 3}": {"kind": "transform", "rows_in": i}})
            store.save_pipeline_version("shared", {"n": n})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(store.runs()) == 8
    for n in range(8):
        assert [line["message"] for line in store.logs(f"run{n}")] == [f"{n}-{i}" for i in range(40)]
        assert store.run(f"run{n}")["attempt"] == 39
        assert len(store.node_stats(f"run{n}")) == 3
    assert len(store.runs(pipeline="pipe0")) == 4
    assert [v["version"] for v in store.pipeline_versions("shared")] == list(range(1, 9))


def test_concurrent_writes_from_two_stores_on_one_file(tmp_path):
    """Two stores (say the service and a CLI run) on one file: WAL plus busy_timeout, no 'locked'."""
    path = tmp_path / "metadata.db"
    stores = [MetadataStore(path), MetadataStore(path)]
    errors: list[BaseException] = []

    def work(store: MetadataStore, n: int) -> None:
        try:
            for i in range(100):
                store.log(f"run{n}", "info", str(i))
                store.upsert_run(run_row(f"run{n}", "p", "running", "2026-01-01T00:00:00Z", attempt=i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(stores[n % 2], n)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert errors == []
        for n in range(4):
            assert len(stores[(n + 1) % 2].logs(f"run{n}")) == 100  # seen through the other connection
        assert len(stores[0].runs()) == 4
    finally:
        for s in stores:
            s.close()


def test_an_older_file_gains_the_new_columns_and_its_unfinished_runs_are_recovered(tmp_path):
    """A metadata.db written before runs recorded their owner: opening it adds the columns
    (owner_pid, owner_start, node_stats.committed, run_leftovers) and keeps every row; a run it
    left `running` has no owner to ask, so the next start-up marks it `interrupted`."""
    from engine.workspace import Workspace

    path = tmp_path / "data" / "metadata.db"
    path.parent.mkdir()
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, pipeline TEXT, version INTEGER, status TEXT,
            attempt INTEGER, started_at TEXT, finished_at TEXT, duration_s FLOAT, rows_in INTEGER,
            rows_out INTEGER, rows_rejected INTEGER, error TEXT, "trigger" TEXT, spec_path TEXT);
        CREATE TABLE node_stats (run_id TEXT, node_id TEXT, kind TEXT, status TEXT, rows_in INTEGER,
            rows_out INTEGER, rows_rejected INTEGER, duration_s FLOAT, PRIMARY KEY (run_id, node_id));
        INSERT INTO runs (run_id, pipeline, status, started_at) VALUES
            ('old-ok', 'p', 'success', '2025-01-01T00:00:00Z'),
            ('old-left', 'p', 'running', '2025-01-02T00:00:00Z');
        INSERT INTO node_stats VALUES ('old-ok', 'src', 'source', 'success', 0, 5, 0, 0.1);
        """
    )
    old.close()
    with Workspace(tmp_path / "data") as ws:
        columns = ws.metadata.db["runs"].columns_dict
        assert {"owner_pid", "owner_start"} <= set(columns)
        assert "committed" in ws.metadata.db["node_stats"].columns_dict
        assert ws.metadata.run("old-ok")["status"] == "success"
        assert ws.metadata.node_stats("old-ok")[0]["rows_out"] == 5
        left = ws.metadata.run("old-left")
        assert left["status"] == "interrupted"
        assert (
            left["error"] == "the process that started the run ended without finishing it (killed or crashed)"
        )
        assert ws.metadata.leftovers(finished_only=False) == []


def test_a_log_line_after_close_is_not_an_error(tmp_path, caplog):
    """A source thread still stopping after the engine closed its stores must not die on a log."""
    store = MetadataStore(tmp_path / "metadata.db")
    store.close()
    with caplog.at_level("INFO", logger="engine.store.metadata"):
        store.log("run-1", "warning", "session lost: modbus://127.0.0.1:1: connection refused", "meters")
    assert any(
        "not stored" in r.getMessage() and "connection refused" in r.getMessage() for r in caplog.records
    )


def test_opening_a_data_directory_never_imports_pandas(tmp_path):
    """pandas is installed in the dev environment (for the benchmarks), and the metadata store once
    imported it through sqlite-utils: no command may pay ~40 MB and ~0.4 s for it."""
    import subprocess
    import sys

    code = (
        "import sys; from engine.store.metadata import MetadataStore; "
        f"MetadataStore({str(tmp_path / 'metadata.db')!r}); print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
