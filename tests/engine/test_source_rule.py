"""The rule for streaming sources, kept once by the runtime (engine/connectors/base.py and
engine/streaming/runner.py): any exception in a source's receive or batch path is caught, counted
and logged with its item, and everything else flows; a stopped source never looks like a running
one, and the run does not end SUCCESS.

The sources are real StreamingSources (tests/engine/faulty_sources.py) that misbehave as protocol
stacks do; the destination is the real DuckDB historian, the rejects the real reject store.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from engine.connectors import registry
from engine.runner import _context
from engine.spec.validate import validate
from engine.streaming import StreamRunner, run_streaming
from engine.workspace import Workspace
from tests.engine.faulty_sources import FaultyConnector

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _connector():
    registry.register(FaultyConnector)


@pytest.fixture
def ws(tmp_path):
    with Workspace(tmp_path / "data") as workspace:
        yield workspace


def doc(**config) -> dict:
    return {
        "name": "rule",
        "nodes": [
            {"id": "src", "kind": "source", "connector_type": "test_faulty", "config": config},
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["src"],
                "connector_type": "duckdb",
                "config": {"table": "live"},
            },
        ],
        "schedule": {"type": "real_time", "batch_size": 100, "max_latency_ms": 20},
    }


def runner_for(ws, tmp_path, document) -> tuple[StreamRunner, list[tuple[str, str, str | None]]]:
    compiled = validate(document)
    ctx = _context(compiled, ws, "run1", datetime.now(UTC), tmp_path, threading.Event(), dry_run=False)
    logs: list[tuple[str, str, str | None]] = []
    ctx.log = lambda level, msg, node=None: logs.append((level, msg, node))
    return StreamRunner(compiled, ctx), logs


def wait_for(check, timeout=15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def values(ws) -> list[float]:
    rows = ws.historian.cursor().sql("SELECT value FROM live ORDER BY value").fetchall()
    return [r[0] for r in rows]


def test_a_bad_batch_is_rejected_with_its_reason_and_everything_else_flows(ws, tmp_path):
    runner, logs = runner_for(ws, tmp_path, doc(fault="garbage"))
    runner.start()
    wait_for(lambda: runner.stats()["rows_committed"] == 30 and runner.stats()["rows_rejected"] == 2)
    runner.stop()
    assert runner.status == "warning"  # rejected records: finished, with something to look at
    assert values(ws) == [float(v) for v in range(30)]  # every good row, before and after the garbage
    rejects = sorted(
        ws.historian.cursor()
        .sql("SELECT node_id, reason, record::VARCHAR FROM _rejects WHERE run_id = 'run1'")
        .fetchall(),
        key=lambda row: "schema" in row[1],
    )
    assert [node for node, _, _ in rejects] == ["src", "src"]
    (_, not_a_frame, _), (_, wrong_types, record) = rejects
    assert not_a_frame == "bad batch from the source: expected a Polars DataFrame, got dict"
    assert wrong_types.startswith("bad batch from the source: it does not fit the source's schema")
    assert "timestamp" in wrong_types
    assert '"twelve"' in record and '"yesterday"' in record  # the record is kept as it came
    assert runner.sources["src"].counters["item_errors"] == 2
    assert any(
        level == "warning" and msg.startswith("batch: ") and node == "src" for level, msg, node in logs
    )
    assert runner.sources["src"].state == "stopped" and runner.stats()["sources"]["src"]["received"] == 30


def test_a_tag_batch_with_text_that_is_not_utf8_is_rejected_naming_the_record(ws, tmp_path):
    """A TagBatch (a few rows as plain columns) is not checked by Arrow on its way in, as a frame
    is: text no store can take (surrogate escapes) is found at the door, the batch goes to the
    reject store as text with the record and field named, and the stream goes on."""
    runner, _ = runner_for(ws, tmp_path, doc(fault="bad_text"))
    runner.start()
    wait_for(lambda: runner.stats()["rows_committed"] == 30 and runner.stats()["rows_rejected"] == 2)
    runner.stop()
    assert values(ws) == [float(v) for v in range(30)]
    (reason, record), *more = (
        ws.historian.cursor()
        .sql("SELECT reason, record::VARCHAR FROM _rejects WHERE run_id = 'run1' ORDER BY record::VARCHAR")
        .fetchall()
    )
    assert (
        reason
        == "bad batch from the source: record 2, field 'value_text': text that is not UTF-8 (surrogates not allowed at 3)"
    )
    assert len(more) == 1 and "2026-01-02T03:04:05+00:00" in record
    assert "caf\\\\udce9" in more[0][1]  # kept, escaped (JSON of a backslash escape)
    assert runner.sources["src"].state == "stopped" and runner.status == "warning"


def test_an_item_that_raises_is_counted_and_logged_with_the_item(ws, tmp_path):
    runner, logs = runner_for(ws, tmp_path, doc(fault="bad_item"))
    runner.start()
    wait_for(lambda: runner.stats()["rows_committed"] == 30)
    runner.stop()
    assert runner.status == "success" and values(ws) == [float(v) for v in range(30)]
    assert runner.sources["src"].counters["item_errors"] == 2
    warned = [msg for level, msg, node in logs if level == "warning" and node == "src"]
    assert warned == [
        "message 1: ValueError: message 1 cannot be parsed",
        "message 2: ValueError: message 2 cannot be parsed",
    ]


def test_a_source_whose_thread_dies_fails_the_run_at_once(ws, tmp_path):
    t0 = time.monotonic()
    record = run_streaming(validate(doc(fault="die")), ws, seconds=60, base_dir=tmp_path)
    assert time.monotonic() - t0 < 30  # it ended by itself: nothing more could come
    assert record["status"] == "failed"
    assert record["error"] == (
        "source 'src' failed: faulty-src stopped: RuntimeError: decoder state corrupted"
    )
    assert record["stream"]["sources"]["src"]["state"] == "stopped"
    assert record["stream"]["nodes"]["src"]["status"] == "failed"
    assert values(ws) == [float(v) for v in range(15)]  # what came before the death is kept
    logged = {(line["level"], line["message"]) for line in ws.metadata.logs(record["run_id"])}
    assert ("error", "session failed: faulty-src stopped: RuntimeError: decoder state corrupted") in logged


def test_a_worker_process_that_crashes_fails_the_run(ws, tmp_path):
    document = doc(fault="exit")
    document["nodes"][0]["worker_process"] = True
    record = run_streaming(validate(document), ws, seconds=60, base_dir=tmp_path)
    assert record["status"] == "failed"
    assert record["error"] == "source 'src' failed: worker process ended (exit code 3)"
    assert values(ws) == [float(v) for v in range(15)]


def test_a_killed_run_leaves_no_broken_pipe_traceback_from_its_worker(tmp_path):
    """The parent dies (kill -9) while its worker process is sending: the worker stops quietly."""
    script = textwrap.dedent(
        f"""
        import os, signal, threading, time
        from datetime import UTC, datetime
        from engine.connectors import registry
        from engine.runner import _context
        from engine.spec.validate import validate
        from engine.streaming import StreamRunner
        from engine.workspace import Workspace
        from tests.engine.faulty_sources import FaultyConnector

        registry.register(FaultyConnector)
        document = {doc(batches=100000, rows=50, interval_s=0.0)!r}
        document["nodes"][0]["worker_process"] = True
        ws = Workspace({str(tmp_path / "data")!r})
        compiled = validate(document)
        ctx = _context(compiled, ws, "run1", datetime.now(UTC), None, threading.Event(), dry_run=False)
        runner = StreamRunner(compiled, ctx)
        runner.start()
        deadline = time.monotonic() + 30
        while runner.stats()["rows_committed"] < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        print("streaming", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -9 and done.stdout.strip() == "streaming"
    # stderr is shared with the worker, and stays open until the worker has ended too
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_a_failed_source_stays_failed_until_stopped():
    from engine.context import RunContext
    from tests.engine.faulty_sources import FaultyConfig, FaultySource

    source = FaultySource(FaultyConfig(), RunContext(), "src")
    states: list[tuple[str, str | None]] = []
    source.on_state = lambda _n, state, detail: states.append((state, detail))
    source.fail("the stack crashed")
    source.set_state("connected", "a late callback")  # must not hide the death
    assert source.state == "failed" and source.counters["failures"] == 1
    source.set_state("stopped")
    assert states == [("failed", "the stack crashed"), ("stopped", None)]


def test_conform_casts_what_fits_and_fills_what_is_missing():
    from engine.streaming.runner import _conform
    from engine.tags import TAG_SCHEMA

    frame = pl.DataFrame({"tag": ["a"], "value": [1]})  # value as an integer, other columns missing
    out = _conform(frame, lambda: TAG_SCHEMA)
    assert out.select(TAG_SCHEMA.names()).schema == TAG_SCHEMA
    assert out["value"].to_list() == [1.0] and out["quality"].to_list() == [None]
