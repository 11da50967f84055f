"""Logs (issue 10, item 5): the operator's human lines on the console, JSON lines in a rotated file
under the data directory, `aggregator logs` to read (and follow) them, and no secret in any of it.

The pipelines run for real through the engine (LocalEngine); its events reach `EventLog`."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.cli import main
from engine.api.local import LocalEngine
from engine.service.logs import EventLog, log_file, retry_line, setup_logging, teardown_logging
from tests.service.conftest import wait_for

SECRET_DIR = "plant-7-confidential-share"


@pytest.fixture
def logged(tmp_path):
    """Logging set up for a data directory: (data dir, console text buffer); torn down after."""
    data_dir = tmp_path / "data"
    console = io.StringIO()
    setup_logging(data_dir, stream=console)
    yield data_dir, console
    teardown_logging()


def pipeline(tmp_path: Path, source_path, *, retries: int = 0, name: str = "Orders") -> dict:
    return {
        "name": name,
        "sources": [
            {"name": "orders", "connector_type": "file", "config": {"path": source_path, "format": "csv"}}
        ],
        "destinations": [{"name": "db", "connector_type": "duckdb", "config": {"table": "orders"}}],
        "error_handling": {
            "retry_policy": {"max_retries": retries, "initial_delay_seconds": 0.01, "max_delay_seconds": 0.02}
        },
    }


def run_through_engine(data_dir: Path, doc: dict, base_dir: Path) -> dict:
    with LocalEngine(data_dir, workers=1) as engine:
        engine.subscribe(EventLog())
        return engine.runs.start(doc, base_dir=base_dir).result(timeout=60)


def json_lines(data_dir: Path) -> list[dict]:
    return [json.loads(line) for line in log_file(data_dir).read_text().splitlines()]


def test_a_run_gives_human_console_lines_and_json_lines_with_its_run_id(tmp_path, logged):
    data_dir, console = logged
    (tmp_path / "orders.csv").write_text("id,price\n1,2.5\n2,4.0\n")
    record = run_through_engine(data_dir, pipeline(tmp_path, "orders.csv"), tmp_path)
    assert record["status"] == "success"
    run_id = record["run_id"]

    text = console.getvalue()
    assert f'run {run_id} of "Orders" started' in text
    assert f'run {run_id} of "Orders" finished: success in ' in text
    assert f"s (rows in {record['rows_in']}, out {record['rows_out']}, rejected 0)\n" in text
    assert record["rows_in"] == 2

    lines = json_lines(data_dir)
    mine = [line for line in lines if line.get("run_id") == run_id]
    assert [line["msg"].split(":")[0] for line in mine] == [
        f'run {run_id} of "Orders" started',
        f'run {run_id} of "Orders" finished',
    ]
    for line in mine:
        assert set(line) >= {"ts", "level", "logger", "msg", "run_id", "pipeline"}
        assert line["pipeline"] == "Orders" and line["logger"] == "aggregator.events"
        assert line["ts"].endswith("Z")
    assert oct(log_file(data_dir).parent.stat().st_mode & 0o777) == "0o700"


def test_a_retry_says_the_reason_and_the_next_delay(tmp_path, logged):
    data_dir, console = logged
    record = run_through_engine(data_dir, pipeline(tmp_path, "missing.csv", retries=2), tmp_path)
    assert record["status"] == "failed"
    text = console.getvalue()
    first = f"retry 1/2 in 0.01 s: {tmp_path / 'missing.csv'}: file not found"
    second = f"retry 2/2 in 0.02 s: {tmp_path / 'missing.csv'}: file not found"
    assert f'warning: "Orders": {first}' in text and f'"Orders": {second}' in text
    finished = next(line for line in text.splitlines() if "finished: failed" in line)
    assert " error: " in finished  # a failed run is an error line, with its reason
    assert finished.endswith(f"(rows in 0, out 0, rejected 0): {tmp_path / 'missing.csv'}: file not found")
    warnings = [line for line in json_lines(data_dir) if line["level"] == "warning"]
    assert [w["msg"] for w in warnings] == [f'"Orders": {first}', f'"Orders": {second}']
    assert all(w["run_id"] == record["run_id"] for w in warnings)


def test_aggregator_run_prints_retries_on_stderr(tmp_path, data_dir, capsys):
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps(pipeline(tmp_path, "missing.csv", retries=1)))
    assert main(["run", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"retry 1/1 in 0.01 s: {tmp_path / 'missing.csv'}: file not found" in err.splitlines()[0]


def test_stream_source_lost_and_back_are_logged():
    """Source state lines keep their memory: a reason is said once per outage, and 'again' once."""
    messages = []

    class Catch(logging.Handler):
        def emit(self, record):
            messages.append((record.levelname, record.getMessage(), getattr(record, "node", None)))

    logger = logging.getLogger("test.events.states")
    logger.addHandler(Catch())
    logger.propagate = False
    logger.setLevel(logging.INFO)
    log = EventLog(logger)
    log({"event": "run_started", "run_id": "r1", "pipeline": "Wind"})
    for state, detail in [
        ("connecting", None),
        ("connected", "opc.tcp://plc:4840"),
        ("lost", "connection reset"),
        ("reconnecting", "connection reset"),  # the same reason: said once
        ("connected", "opc.tcp://plc:4840"),
    ]:
        log({"event": "source_state", "run_id": "r1", "node": "plc", "state": state, "detail": detail})
    assert messages == [
        ("INFO", 'run r1 of "Wind" started', None),
        ("WARNING", "\"Wind\": source 'plc' lost: connection reset", "plc"),
        ("INFO", "\"Wind\": source 'plc' connected again: opc.tcp://plc:4840", "plc"),
    ]


def test_schedule_fired_line():
    from engine.service.logs import event_line

    level, text = event_line(
        {"event": "schedule_fired", "pipeline": "Hourly", "trigger": "cron", "lag_s": 0.042}
    )
    assert level == logging.INFO and text == 'schedule fired for "Hourly" (cron), 42 ms late'
    assert retry_line({"event": "run_started"}) is None


def test_rows_dropped_by_a_full_queue_are_summed_a_line_a_second(tmp_path, logged):
    import re

    from engine.connectors import registry
    from tests.engine.streaming_sources import TicksConnector
    from tests.engine.test_streaming import SlowConnector

    registry.register(TicksConnector)
    registry.register(SlowConnector)
    data_dir, _console = logged
    doc = {
        "name": "live",
        "nodes": [
            {
                "id": "src",
                "kind": "source",
                "connector_type": "test_ticks",
                "config": {"rows_per_batch": 50, "batches": 200},
            },
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["src"],
                "connector_type": "test_slow_sink",
                "config": {"key": "log-drops", "delay_s": 0.05},
            },
        ],
        "schedule": {
            "type": "real_time",
            "batch_size": 100,
            "max_latency_ms": 50,
            "queue_max_rows": 500,
            "block_timeout_s": 0.01,
        },
    }
    with LocalEngine(data_dir, workers=1) as engine:
        engine.subscribe(EventLog())
        alarms: list = []
        engine.subscribe(lambda event: event.to_dict().get("kind") == "rows_dropped" and alarms.append(event))
        record = engine.runs.start(doc, seconds=1.2).result(timeout=60)
    dropped = record["stream"]["rows_dropped"]
    assert dropped > 0
    lines = [e for e in json_lines(data_dir) if "dropped" in e["msg"]]
    found = [re.search(r"src dropped ([\d,]+) row\(s\) \(.*\), ([\d,]+) in all", e["msg"]) for e in lines]
    assert all(found) and all(e["node"] == "src" and e["level"] == "warning" for e in lines)
    rows = [int(m.group(1).replace(",", "")) for m in found]
    assert sum(rows) == dropped  # every dropped row is in a line, none twice
    assert int(found[-1].group(2).replace(",", "")) == dropped
    # a line a second at most and the rest when the run ends, not one line per drop
    assert len(lines) <= record["duration_s"] + 2 < len(alarms)


# ---- secrets ---------------------------------------------------------------------------------------
def test_a_secret_in_a_failing_path_never_reaches_console_or_file(tmp_path, logged, monkeypatch):
    data_dir, console = logged
    value = str(tmp_path / SECRET_DIR / "orders-2026.csv")
    monkeypatch.setenv("AGGREGATOR_SECRET_ORDERS_PATH", value)
    doc = pipeline(tmp_path, {"secret": "orders_path"}, retries=1)
    record = run_through_engine(data_dir, doc, tmp_path)
    assert record["status"] == "failed"
    logging.getLogger("some.library").error("could not open %s", value)  # any logger, not only ours
    stored = "".join(p.read_text() for p in log_file(data_dir).parent.iterdir())
    text = console.getvalue()
    assert "retry 1/1" in text and "***" in text and "could not open ***" in stored
    assert SECRET_DIR not in text and SECRET_DIR not in stored


# ---- the file: rotation and `aggregator logs` ------------------------------------------------------
def write_lines(data_dir: Path, count: int, *, run_id: str | None = None, max_bytes: int = 2000) -> None:
    setup_logging(data_dir, console=False, max_bytes=max_bytes, backups=5)
    try:
        log = logging.getLogger("aggregator.test")
        for i in range(count):
            log.info("line %d", i, extra={"run_id": run_id} if run_id and i % 2 else {})
    finally:
        teardown_logging()


def test_rotation_keeps_at_most_backups_and_logs_reads_them_in_order(tmp_path, capsys):
    data_dir = tmp_path / "data"
    write_lines(data_dir, 60)  # ~150 bytes a line, 2000 a file: several rotations
    files = sorted(p.name for p in log_file(data_dir).parent.iterdir())
    assert "aggregator.jsonl.1" in files and "aggregator.jsonl" in files
    assert len(files) <= 6
    assert main(["logs", "--data-dir", str(data_dir), "--json"]) == 0
    shown = [json.loads(line)["msg"] for line in capsys.readouterr().out.splitlines()]
    numbers = [int(m.split()[1]) for m in shown]
    assert numbers == sorted(numbers) and numbers[-1] == 59  # oldest first, nothing out of order
    assert numbers == list(range(numbers[0], 60))  # what is kept is contiguous


def test_logs_run_filter_lines_and_human_form(tmp_path, capsys):
    data_dir = tmp_path / "data"
    write_lines(data_dir, 10, run_id="R42", max_bytes=1_000_000)
    assert main(["logs", "--data-dir", str(data_dir), "--run", "R42"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in out] == ["1", "3", "5", "7", "9"]
    assert all(" info " in line and line.split()[0].endswith("Z") for line in out)
    assert main(["logs", "--data-dir", str(data_dir), "--lines", "2"]) == 0
    assert [line.split()[-1] for line in capsys.readouterr().out.splitlines()] == ["8", "9"]


def test_logs_before_any_log_file(tmp_path, data_dir, capsys):
    assert main(["logs", "--data-dir", str(data_dir)]) == 0
    assert str(data_dir / "logs" / "aggregator.jsonl") in capsys.readouterr().out
    # --run: the run's lines from the metadata store, through the engine's API
    (tmp_path / "orders.csv").write_text("id\n1\n")
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps(pipeline(tmp_path, "orders.csv")))
    assert main(["run", str(spec), "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert not log_file(data_dir).exists()
    assert main(["logs", "--data-dir", str(data_dir), "--run", run_id]) == 0
    out = capsys.readouterr().out
    assert "run started (manual)" in out and "run success" in out


def test_logs_follow_shows_new_lines_across_a_rotation(tmp_path):
    data_dir = tmp_path / "data"
    write_lines(data_dir, 1, max_bytes=1500)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "logs", "--follow", "--json", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    seen: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            seen.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: any('"line 0"' in s for s in seen), timeout=30, what="the existing line")
        write_lines(data_dir, 40, max_bytes=1500)  # rotates while it follows
        assert (log_file(data_dir).parent / "aggregator.jsonl.1").exists()

        def numbers():
            return [int(json.loads(s)["msg"].split()[1]) for s in list(seen)]

        wait_for(lambda: numbers()[1:] == list(range(40)), timeout=30, what="every new line once")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---- a real `aggregator serve` -------------------------------------------------------------------
def test_served_logs_console_file_and_aggregator_logs(serve, tmp_path, capsys):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    doc = pipeline(tmp_path, "../missing.csv", retries=1, name="Flaky")
    doc["schedule"] = {"type": "interval", "seconds": 1}
    (folder / "flaky.json").write_text(json.dumps(doc))
    service = serve("--pipelines", str(folder))
    service.wait_output("finished: failed", timeout=30)
    data_dir = service.data_dir
    retry = f"retry 1/1 in 0.01 s: {folder / '..' / 'missing.csv'}: file not found"  # as the spec says
    out = service.output()
    assert f'"Flaky": {retry}' in out and "serving " in out  # the operator's lines on the console

    entries = wait_for(
        lambda: (
            [e for e in json_lines(data_dir) if e.get("pipeline") == "Flaky" and "finished" in e["msg"]]
            and json_lines(data_dir)
        ),
        what="the run's lines in the file",
    )
    run_id = next(e["run_id"] for e in entries if e.get("pipeline") == "Flaky" and "finished" in e["msg"])
    assert main(["logs", "--data-dir", str(data_dir), "--run", run_id]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert any(retry in line and " warning " in line for line in shown)
    assert any(f'run {run_id} of "Flaky" finished: failed' in line and " error " in line for line in shown)
    assert all(run_id in line or "Flaky" in line for line in shown)
    assert service.stop() == 0


def test_served_logs_mask_a_resolved_secret(serve, tmp_path):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    doc = pipeline(tmp_path, {"secret": "orders_path"}, retries=1, name="Secret path")
    doc["schedule"] = {"type": "interval", "seconds": 1}
    (folder / "secret.json").write_text(json.dumps(doc))
    value = str(tmp_path / SECRET_DIR / "orders-2026.csv")
    service = serve("--pipelines", str(folder), env={"AGGREGATOR_SECRET_ORDERS_PATH": value})
    service.wait_output("finished: failed", timeout=30)
    assert service.stop() == 0
    out = service.output()
    stored = "".join(p.read_text() for p in (service.data_dir / "logs").iterdir())
    assert "retry 1/1" in out and "***" in out and "***" in stored
    assert SECRET_DIR not in out and SECRET_DIR not in stored
