"""Runs that survive their process: SIGTERM cancels a run cleanly, and a run whose process was killed
(kill -9) is found by the next command that opens the data directory, marked `interrupted` with the
reason, and its temporary file and `_stage_*` table are removed. Real `aggregator` processes and
real signals throughout."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from engine import process
from engine.store.metadata import MetadataStore
from engine.workspace import Workspace

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals (SIGTERM, SIGKILL)")
EXE = Path(sys.executable).parent / "aggregator"
ENDLESS_ROWS = 2_000_000_000  # the run never gets to the end: the test stops it first


def endless_pipeline(tmp_path: Path) -> Path:
    """A DuckDB query that streams rows for minutes into a CSV file and into a table replaced at
    commit (a `_stage_*` table until then)."""
    doc = {
        "name": "endless",
        "sources": [
            {
                "name": "readings",
                "connector_type": "duckdb",
                "config": {
                    "query": "SELECT range AS id, range * 0.5 AS value, 'm' || (range % 97) AS meter"
                    f" FROM range({ENDLESS_ROWS})"
                },
            }
        ],
        "destinations": [
            {"name": "copy", "connector_type": "file", "config": {"path": "out/readings.csv"}},
            {"name": "table", "connector_type": "duckdb", "config": {"table": "readings", "mode": "replace"}},
        ],
    }
    path = tmp_path / "endless.json"
    path.write_text(json.dumps(doc))
    return path


def poll(condition: Callable[[], Any], what: str, timeout: float = 30.0, proc=None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}: {err[-2000:]}")
        try:
            value = condition()
        except (sqlite3.Error, OSError):
            value = None
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def under_way(data: Path, out: Path) -> dict[str, Any] | None:
    """The run as recorded while it is under way: `running`, its temporary file already holding
    rows, and its stage table created (its CREATE is committed to the historian's WAL; nothing
    else in this pipeline writes the WAL before the commit)."""
    with sqlite3.connect(data / "metadata.db") as con:
        con.row_factory = sqlite3.Row
        run = con.execute("SELECT * FROM runs WHERE status = 'running'").fetchone()
        if run is None:
            return None
        leftovers = [
            dict(r) for r in con.execute("SELECT * FROM run_leftovers WHERE run_id = ?", [run["run_id"]])
        ]
    temps = [Path(x["location"]) for x in leftovers if x["kind"] == "file"]
    stages = [x["name"] for x in leftovers if x["kind"] == "duckdb_table"]
    wal = data / "historian.duckdb.wal"
    if not (temps and stages and temps[0].parent == out):
        return None
    if not (temps[0].exists() and temps[0].stat().st_size > 0 and wal.exists() and wal.stat().st_size > 0):
        return None
    return {**dict(run), "temp": temps[0], "stage": stages[0]}


@contextlib.contextmanager
def reaped(proc: subprocess.Popen):
    """Kill and reap `proc` at the end if the test left it running (a failed wait, say)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def sigterm(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGTERM `proc`, as a service manager's stop does, and answer its (stdout, stderr). A process
    still there after 60 s fails the test with every thread's stack (SIGUSR1: app/cli.py)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        _out, err = proc.communicate()
        pytest.fail(f"the process did not end within 60 s of SIGTERM; its threads then:\n{err[-20000:]}")


def tables(db: Path) -> set[str]:
    con = duckdb.connect(str(db))
    try:
        return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()


def run_record(data: Path, run_id: str) -> dict[str, Any]:
    store = MetadataStore(data / "metadata.db")
    try:
        return store.run(run_id) or {}
    finally:
        store.close()


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*")) if folder.exists() else []


def interrupted_runs(data: Path) -> list[dict[str, Any]]:
    """`aggregator runs --status interrupted --json`: a command that opens the data directory, so
    it marks the runs whose process is gone first."""
    listed = subprocess.run(
        [str(EXE), "runs", "--data-dir", str(data), "--status", "interrupted", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def start_run(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(EXE), "run", str(endless_pipeline(tmp_path)), "--data-dir", str(tmp_path / "data"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_cancels_the_run_like_ctrl_c(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    proc = start_run(tmp_path, "--json")
    with reaped(proc):
        run = poll(lambda: under_way(data, out), "the run to write its temporary file and stage", proc=proc)
        assert run["owner_pid"] == proc.pid and run["owner_start"] == process.start_time(proc.pid)
        stdout, stderr = sigterm(proc)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert json.loads(stdout)["status"] == "cancelled"
    record = run_record(data, run["run_id"])
    assert record["status"] == "cancelled" and record["error"] == "run cancelled"
    assert not run["temp"].exists() and hidden_files(out) == [], "a temporary file was left behind"
    assert not (out / "readings.csv").exists()
    left = tables(data / "historian.duckdb")
    assert not [t for t in left if t.startswith("_stage_")] and "readings" not in left
    with sqlite3.connect(data / "metadata.db") as con:
        assert con.execute("SELECT count(*) FROM run_leftovers").fetchone()[0] == 0


def _tgkill(pid: int, tid: int, sig: int) -> None:
    """`sig` to thread `tid` of process `pid` (Linux): what the kernel may do with a signal sent to
    the process as a whole, when its main thread has one pending already."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.tgkill(pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill {pid} {tid}")


def _takes(pid: int, tid: int, sig: int) -> bool:
    """Thread `tid` of `pid` neither blocks nor ignores `sig` (/proc/PID/task/TID/status)."""
    fields = dict(
        line.split(":\t", 1)
        for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines()
        if ":\t" in line
    )
    bit = 1 << (sig - 1)
    return not (int(fields["SigBlk"], 16) & bit or int(fields["SigIgn"], 16) & bit)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tgkill and /proc/PID/task (Linux)")
def test_sigterm_delivered_to_another_thread_still_cancels_the_run(tmp_path):
    """The kernel delivers a process's signal to any thread that takes it; CPython runs the handler
    in the main thread only, at its next bytecode. The main thread must not sleep until the run
    ends by itself (this run never would): it ends `cancelled` within seconds."""
    data, out = tmp_path / "data", tmp_path / "out"
    proc = start_run(tmp_path, "--json")
    with reaped(proc):
        poll(lambda: under_way(data, out), "the run to write its temporary file and stage", proc=proc)
        others = [int(t.name) for t in Path(f"/proc/{proc.pid}/task").iterdir() if int(t.name) != proc.pid]
        takers = [tid for tid in others if _takes(proc.pid, tid, signal.SIGTERM)]
        assert takers, f"no thread of {proc.pid} but the main one takes SIGTERM"
        _tgkill(proc.pid, takers[0], signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM taken by a thread other than the main one never reached the run")
    assert proc.returncode == 1, stderr
    assert json.loads(stdout)["status"] == "cancelled"
    assert hidden_files(out) == []


def test_sigusr1_prints_every_threads_stack_and_the_run_carries_on(tmp_path):
    """`kill -USR1` answers what a process that does not stop is waiting for: every thread's stack
    on stderr, and the run goes on (SIGTERM still cancels it afterwards)."""
    data, out = tmp_path / "data", tmp_path / "out"
    proc = start_run(tmp_path, "--json")
    with reaped(proc):
        run = poll(lambda: under_way(data, out), "the run to write its temporary file and stage", proc=proc)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)  # the dump is written by the signal handler itself, before the process goes on
        assert proc.poll() is None, "SIGUSR1 ended the process"
        assert run_record(data, run["run_id"])["status"] == "running"
        stdout, stderr = sigterm(proc)
    assert json.loads(stdout)["status"] == "cancelled"
    assert "Current thread" in stderr or "Thread 0x" in stderr, stderr[-2000:]
    assert "_wait" in stderr, "the main thread's stack (app/commands.py _wait) is not in the dump"
    assert stderr.count("Thread 0x") >= 2, "one thread's stack only"


def test_kill_9_is_recovered_by_the_next_command(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    proc = start_run(tmp_path)
    historian = data / "historian.duckdb"
    try:
        run = poll(
            lambda: historian.exists() and historian.stat().st_size > 8_000_000 and under_way(data, out),
            "the run to write its temporary file and stage, and rows into the historian",
            proc=proc,
        )
    finally:
        proc.kill()  # SIGKILL: nothing of the process runs any more
        proc.communicate()
    # What the killed run left: its record says `running`, its temporary file and stage table exist.
    assert run_record(data, run["run_id"])["status"] == "running"
    assert run["temp"].exists()
    assert run["stage"] in tables(data / "historian.duckdb")

    rows = interrupted_runs(data)  # the next command finds the dead run
    assert [r["run_id"] for r in rows] == [run["run_id"]]
    reason = f"process {proc.pid} ended without finishing the run (killed or crashed)"
    assert rows[0]["status"] == "interrupted" and rows[0]["error"] == reason
    assert rows[0]["finished_at"]
    assert hidden_files(out) == [] and not run["temp"].exists()
    assert not [t for t in tables(historian) if t.startswith("_stage_")]
    assert historian.stat().st_size < 2_000_000, "the killed run's uncommitted rows still take space"
    with sqlite3.connect(data / "metadata.db") as con:
        assert con.execute("SELECT count(*) FROM run_leftovers").fetchone()[0] == 0
        logged = [r[0] for r in con.execute("SELECT message FROM run_logs WHERE run_id = ?", [run["run_id"]])]
    assert f"run interrupted: {reason}" in logged

    # The data directory works as before: the next run of a small pipeline succeeds.
    (tmp_path / "small.json").write_text(
        json.dumps(
            {
                "name": "small",
                "sources": [{"name": "q", "connector_type": "duckdb", "config": {"query": "SELECT 1 AS id"}}],
                "destinations": [
                    {"name": "o", "connector_type": "file", "config": {"path": "out/small.csv"}}
                ],
            }
        )
    )
    again = subprocess.run(
        [str(EXE), "run", str(tmp_path / "small.json"), "--data-dir", str(data), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "success"


def _running(store: MetadataStore, run_id: str, pid: int | None, started: str | None) -> None:
    store.upsert_run(
        {
            "run_id": run_id,
            "pipeline": "p",
            "status": "running",
            "started_at": "2026-01-01T00:00:00Z",
            "owner_pid": pid,
            "owner_start": started,
        }
    )


def test_a_live_owner_keeps_its_run_and_a_reused_pid_does_not(tmp_path):
    """The owner is the pid AND its start time: a live process with the recorded id but another
    start time is not the owner (the id was reused)."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    try:
        started = process.start_time(live.pid)
        assert started is not None
        store = MetadataStore(tmp_path / "data" / "metadata.db")
        _running(store, "alive", live.pid, started)
        _running(store, "reused", live.pid, "1@00000000")  # same id, another process
        _running(store, "gone", ended.pid, process.start_time(ended.pid))
        store.upsert_run(
            {"run_id": "retrying", "pipeline": "p", "status": "retrying", "owner_pid": ended.pid}
        )
        store.close()
        with Workspace(tmp_path / "data") as ws:
            statuses = {r: ws.metadata.run(r)["status"] for r in ("alive", "reused", "gone", "retrying")}
            errors = {r: ws.metadata.run(r)["error"] for r in ("reused", "gone")}
            assert sorted(r["run_id"] for r in ws.recovered) == ["gone", "retrying", "reused"]
        assert statuses == {
            "alive": "running",
            "reused": "interrupted",
            "gone": "interrupted",
            "retrying": "interrupted",
        }
        assert errors["reused"] == f"process {live.pid} ended without finishing the run (killed or crashed)"
        assert errors["gone"] == f"process {ended.pid} ended without finishing the run (killed or crashed)"
    finally:
        live.kill()
        live.wait()


def test_a_finished_runs_leftovers_are_removed_and_a_running_runs_are_kept(tmp_path):
    """Only what is recorded is removed, and only once its run is no longer at work."""
    data = tmp_path / "data"
    folder = tmp_path / "out"
    folder.mkdir()
    kept, gone = folder / ".a.csv.tmp-11111111", folder / ".b.csv.tmp-22222222"
    for path in (kept, gone, gone.with_name(gone.name + ".w")):
        path.write_text("x")
    unrelated = folder / ".c.csv.tmp-33333333"  # not recorded by any run: not ours to remove
    unrelated.write_text("x")
    store = MetadataStore(data / "metadata.db")
    pid, started = process.current()
    _running(store, "mine", pid, started)  # this very process: alive
    store.upsert_run({"run_id": "old", "pipeline": "p", "status": "failed"})
    store.note_leftover("mine", "file", str(kept))
    store.note_leftover("old", "file", str(gone))
    store.close()
    with Workspace(data) as ws:
        assert ws.recovered == []
        assert [x["location"] for x in ws.metadata.leftovers(finished_only=False)] == [str(kept)]
    assert kept.exists() and unrelated.exists()
    assert not gone.exists() and not gone.with_name(gone.name + ".w").exists()


def meters_pipeline(tmp_path: Path, sim, *destinations: dict) -> Path:
    """`meters.json`: a real-time pipeline polling the simulator's one meter every 100 ms."""
    from protocols.modbus.simulator import simulator_config

    doc = {
        "name": "meters",
        "sources": [
            {
                "name": "meters",
                "connector_type": "modbus",
                "config": simulator_config([(sim.host, sim.port, sim.unit_ids[0])], poll_interval_ms=100),
            }
        ],
        "destinations": list(destinations),
        "schedule": {"type": "real_time", "max_latency_ms": 100},
    }
    path = tmp_path / "meters.json"
    path.write_text(json.dumps(doc))
    return path


def test_sigterm_cancels_a_real_time_run(tmp_path):
    """A `--seconds` real_time run stopped by SIGTERM ends `cancelled` (exit 1), its micro-batch
    temporary files gone."""
    import protocols  # noqa: F401  (the Modbus simulator)
    from protocols.modbus.simulator import ModbusSimulator

    data, out = tmp_path / "data", tmp_path / "out"
    with ModbusSimulator(meters=1, frozen_at=1000.0) as sim:
        meters_pipeline(
            tmp_path,
            sim,
            {"name": "copy", "connector_type": "file", "config": {"path": "out/meters.csv"}},
            {"name": "table", "connector_type": "duckdb", "config": {"table": "meters"}},
        )
        proc = subprocess.Popen(
            [
                str(EXE),
                "run",
                str(tmp_path / "meters.json"),
                "--data-dir",
                str(data),
                "--seconds",
                "120",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with reaped(proc):
            poll(
                lambda: (out / "meters.csv").stat().st_size > 0,  # created empty at start, then appended to
                "the first micro-batch to be committed",
                proc=proc,
            )
            stdout, stderr = sigterm(proc)
    assert proc.returncode == 1, stderr
    record = json.loads(stdout)
    assert record["status"] == "cancelled" and record["rows_out"] > 0
    assert run_record(data, record["run_id"])["status"] == "cancelled"
    assert hidden_files(out) == [], "a temporary file was left behind"


CHILD = """
import os, sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE kept AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range(100000)")
con.execute("CHECKPOINT")
if sys.argv[2] == "wal":  # rows committed after the checkpoint: in the WAL only
    con.execute("INSERT INTO kept SELECT range + 100000, 'after the checkpoint' FROM range(10)")
cur = con.cursor()
cur.execute("BEGIN TRANSACTION")
cur.execute("CREATE TABLE lost AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range(3000000)")
print(os.path.getsize(sys.argv[1]), flush=True)
os.kill(os.getpid(), 9)  # killed inside the transaction
"""


@pytest.mark.parametrize("wal", ["wal", "no wal"])
def test_shrinking_a_killed_processes_file_keeps_every_committed_row(tmp_path, wal):
    """A process killed inside a big transaction leaves the DuckDB file grown by blocks no table
    uses (and perhaps a WAL of rows committed after its last checkpoint). Shrinking keeps every
    committed row and gives the rest back: DuckDB's checkpoint cuts the file when it has a WAL
    to write; with nothing to write it does not, and the file is cut to what it uses."""
    from engine.store.historian import shrink_duckdb_file

    db = tmp_path / "h.duckdb"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(db), wal], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -9, child.stderr
    grown = int(child.stdout.strip())
    assert db.stat().st_size == grown > 20_000_000
    freed = shrink_duckdb_file(db)
    if wal == "no wal":
        assert freed > 20_000_000
    assert db.stat().st_size < grown - 20_000_000
    expected = (100_010, 100_001) if wal == "wal" else (100_000, 100_000)
    con = duckdb.connect(str(db))
    try:
        assert con.execute("SELECT count(*), count(DISTINCT h) FROM kept").fetchone() == expected
        assert "lost" not in {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        con.execute("INSERT INTO kept SELECT range, 'x' FROM range(100000)")  # and it takes new rows
        con.execute("CHECKPOINT")
        assert con.execute("SELECT count(*) FROM kept").fetchone()[0] == expected[0] + 100_000
    finally:
        con.close()
    assert shrink_duckdb_file(db) == 0  # nothing more to give back


def test_a_killed_streams_record_keeps_its_counts(tmp_path):
    """A real-time run's record carries its counts while it runs (every `COUNTS_EVERY_S`,
    engine/streaming/run.py), so that after a kill -9 the next command marks it `interrupted` with
    what it had received and committed, not zeros. Waits on the record itself showing committed
    rows, then kills; the counts must not exceed the rows the historian holds."""
    import protocols  # noqa: F401  (the Modbus simulator)
    from protocols.modbus.simulator import ModbusSimulator

    data = tmp_path / "data"
    with ModbusSimulator(meters=1, frozen_at=1000.0) as sim:
        meters_pipeline(
            tmp_path, sim, {"name": "table", "connector_type": "duckdb", "config": {"table": "meters"}}
        )
        proc = subprocess.Popen(
            [str(EXE), "run", str(tmp_path / "meters.json"), "--data-dir", str(data), "--seconds", "300"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with reaped(proc):

            def counted() -> dict[str, Any] | None:
                with sqlite3.connect(data / "metadata.db") as con:
                    con.row_factory = sqlite3.Row
                    run = con.execute("SELECT * FROM runs WHERE status = 'running'").fetchone()
                return dict(run) if run is not None and (run["rows_out"] or 0) > 0 else None

            running = poll(counted, "the running record to show committed rows", timeout=60, proc=proc)
            proc.kill()  # SIGKILL: nothing of the process runs any more
            proc.communicate()
    [row] = interrupted_runs(data)
    assert row["run_id"] == running["run_id"] and row["status"] == "interrupted"
    assert row["rows_in"] >= row["rows_out"] >= running["rows_out"] > 0
    con = duckdb.connect(str(data / "historian.duckdb"))
    try:
        stored = con.execute("SELECT count(*) FROM meters").fetchone()[0]
    finally:
        con.close()
    assert stored >= row["rows_out"]  # counted once committed: never more than was stored
