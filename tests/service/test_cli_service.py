"""The CLI next to a service (issue 10, item 2): when a real `aggregator serve` owns the data
directory, `run`, `runs`, `query`, `preview` and `validate` go through its API and just work: no lock
error, and the same output and exit codes as the same command on a data directory with no service.

Each test seeds two identical data directories, serves one (tests/service/conftest.py) and runs the
CLI, as a user would, in a subprocess against each; outputs are compared once the values that differ
by nature (run ids, times, durations, the owning process) are masked. The run records show the
service ran the work (`owner_pid` is the service's)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.api.events import StreamStats
from engine.api.remote import RemoteEngine
from engine.service import token as api_token
from tests.pipelines import csv_into_duckdb, opcua_stream
from tests.service.conftest import ROOT, cli, wait_for
from tests.tag_history import seed_two_tags

RUN_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]{8}")
MOMENT = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?Z?")
NUMBER = re.compile(r"\d+\.\d+")
# Each test runs the CLI a dozen times in fresh processes (a second or two each on a loaded machine).
pytestmark = pytest.mark.slow
VOLATILE = ("run_id", "started_at", "finished_at", "duration_s", "owner_pid", "owner_start")


def masked(text: str) -> str:
    return NUMBER.sub("N", MOMENT.sub("TIME", RUN_ID.sub("RUN", text)))


def steady(record: dict) -> dict:
    """A run record without what differs between two runs of the same pipeline."""
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    if isinstance(out.get("nodes"), dict):
        out["nodes"] = {n: {k: v for k, v in s.items() if k != "duration_s"} for n, s in out["nodes"].items()}
    return out


@pytest.fixture
def pair(serve, tmp_path):
    """(specs folder, served data dir, local data dir, the service)."""
    specs = tmp_path / "specs"
    specs.mkdir()
    doc = csv_into_duckdb(specs, 40, name="numbers", table="numbers")
    doc["nodes"][0]["config"]["path"] = "in.csv"  # relative: resolved from the spec's folder
    (specs / "numbers.json").write_text(json.dumps(doc), encoding="utf-8")
    broken = json.loads(json.dumps(doc))
    broken["name"] = "broken"
    broken["nodes"][0]["config"]["path"] = "missing.csv"
    (specs / "broken.json").write_text(json.dumps(broken), encoding="utf-8")
    invalid = json.loads(json.dumps(doc))
    invalid["nodes"][1]["connector_type"] = "nope"
    (specs / "invalid.json").write_text(json.dumps(invalid), encoding="utf-8")
    served = seed_two_tags(tmp_path / "served")
    local = seed_two_tags(tmp_path / "local")
    service = serve(data_dir=served)
    return specs, served, local, service


def both(served: Path, local: Path, *args) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    return cli(*args, "--data-dir", served), cli(*args, "--data-dir", local)


def test_run_runs_preview_validate_and_query_answer_as_locally(pair):
    specs, served, local, service = pair
    spec = specs / "numbers.json"

    remote, here = both(served, local, "run", spec)
    assert (remote.returncode, here.returncode) == (0, 0), remote.stderr + here.stderr
    assert "lock" not in remote.stderr.lower()
    assert masked(remote.stdout) == masked(here.stdout)
    assert "wrote dst -> historian.duckdb:numbers" in remote.stdout
    # the service ran it: its run record names the service's process
    assert [r["owner_pid"] for r in service.runs("numbers")] == [service.pid]

    remote, here = both(served, local, "run", spec, "--json")
    assert (remote.returncode, here.returncode) == (0, 0), remote.stderr + here.stderr
    assert steady(json.loads(remote.stdout)) == steady(json.loads(here.stdout))

    remote, here = both(served, local, "runs")
    assert (remote.returncode, here.returncode, remote.stderr) == (0, 0, "")
    assert masked(remote.stdout) == masked(here.stdout)
    assert len(remote.stdout.splitlines()) == 3  # the header and two runs

    remote, here = both(served, local, "runs", "--json", "--pipeline", "numbers")
    assert (remote.returncode, here.returncode) == (0, 0), remote.stderr
    assert [steady(r) for r in json.loads(remote.stdout)] == [steady(r) for r in json.loads(here.stdout)]

    for args in (("--limit", "3"), ("--limit", "2", "--json"), ("--node", "src", "--json")):
        remote, here = both(served, local, "preview", spec, *args)
        assert (remote.returncode, here.returncode) == (0, 0), remote.stderr + here.stderr
        if "--json" in args:
            assert steady_preview(json.loads(remote.stdout)) == steady_preview(json.loads(here.stdout))
        else:
            assert masked(remote.stdout) == masked(here.stdout)
            assert "│ 0   │" in remote.stdout  # the rows, typed as locally

    # validate reads no data directory (it has no --data-dir): next to a service it is the same
    remote, here = cli("validate", spec, home=served), cli("validate", spec, home=local)
    assert remote.returncode == 0 and "valid (graph form, 2 nodes)" in remote.stdout
    assert (remote.returncode, remote.stdout, remote.stderr) == (here.returncode, here.stdout, here.stderr)

    for args in (
        ("t1.*", "--start", "2024-03-01T12:00", "--end", "2024-03-01T12:02Z", "--stat", "avg,max", "--json"),
        ("*.power", "--bucket", "5m"),
        ("t2.*", "--bucket", "5m", "--include-bad", "--json"),
        ("*", "--last", "--json"),
    ):
        remote, here = both(served, local, "query", *args)
        assert (remote.returncode, here.returncode) == (0, 0), remote.stderr + here.stderr
        if "--last" in args:  # each seed stored its values at its own moment (`ingested_at`)
            assert masked(remote.stdout) == masked(here.stdout)
        else:
            assert remote.stdout == here.stdout
        assert remote.stdout.strip() not in ("", "[]", "(no values)")
    assert service.proc.poll() is None  # the service still owns its directory

    # next to a service, `aggregator runs` stays light: no Polars, no DuckDB (a regression guard of
    # the < 300 ms figure of tests/benchmarks/bench_cli_service.py)
    timed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "app.cli", "runs", "--data-dir", str(served)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip
    assert timed.returncode == 0, timed.stderr[-2000:]
    modules = {line.rsplit("|", 1)[-1].strip() for line in timed.stderr.splitlines() if "|" in line}
    assert "engine.api.remote" in modules
    assert not modules & {"polars", "duckdb", "sqlite_utils", "fastapi"}


def steady_preview(doc: dict) -> dict:
    for node in doc["nodes"].values():
        node.pop("duration_s", None)
    return doc


def test_a_failing_run_and_an_invalid_spec_exit_as_locally(pair):
    specs, served, local, service = pair
    remote, here = both(served, local, "run", specs / "broken.json")
    assert (remote.returncode, here.returncode) == (1, 1)
    assert masked(remote.stdout) == masked(here.stdout)
    assert remote.stderr == here.stderr == "error: " + str(specs / "missing.csv") + ": file not found\n"
    assert [r["status"] for r in service.runs("broken")] == ["failed"]

    for command in ("run", "validate", "preview"):
        where = ("--data-dir",) if command != "validate" else ()
        remote = cli(command, specs / "invalid.json", *where, *([served] if where else []), home=served)
        here = cli(command, specs / "invalid.json", *where, *([local] if where else []), home=local)
        assert (remote.returncode, here.returncode) == (2, 2), command
        assert remote.stderr == here.stderr and "unknown connector type 'nope'" in remote.stderr

    remote, here = both(served, local, "runs", "--status", "bogus")
    assert (remote.returncode, here.returncode) == (2, 2)
    remote, here = both(served, local, "query", "t1.*", "--stat", "median")
    assert (remote.returncode, here.returncode, remote.stderr) == (2, 2, here.stderr)


@pytest.fixture
def stream_pair(serve, tmp_path):
    """A served and a local data directory, and a real_time spec streaming an OPC UA simulator."""
    from tests.ui.conftest import opcua_simulator

    with opcua_simulator(1, 2) as sim:
        spec = tmp_path / "stream.json"
        spec.write_text(
            json.dumps(opcua_stream(sim, name="plc stream", max_latency_ms=100)), encoding="utf-8"
        )
        yield spec, serve(data_dir=tmp_path / "served"), tmp_path / "local"


def test_a_real_time_run_with_seconds_streams_in_the_service_and_prints_the_same(stream_pair):
    spec, service, local = stream_pair
    remote = cli("run", spec, "--seconds", "1.5", "--data-dir", service.data_dir)
    here = cli("run", spec, "--seconds", "1.5", "--data-dir", local)
    assert (remote.returncode, here.returncode) == (0, 0), remote.stderr + here.stderr
    lines = masked(remote.stdout).splitlines()
    assert lines[0] == 'Streaming "plc stream" for N s...'

    # the counts differ with the moment (and so does the padding of a right-aligned column: 99 rows
    # on a busy machine, 150 on a quiet one); the words and their order do not
    def shape(line: str) -> list[str]:
        return re.sub(r"\d[\d,]*", "#", line).split()

    assert [shape(line) for line in lines] == [shape(line) for line in masked(here.stdout).splitlines()]
    (record,) = service.runs("plc stream")
    assert (record["owner_pid"], record["status"], record["trigger"]) == (service.pid, "success", "real_time")
    assert record["rows_out"] > 0


def test_sigterm_to_the_cli_stops_the_stream_in_the_service(stream_pair):
    spec, service, _local = stream_pair
    out = spec.with_name("cli.out")
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run", str(spec), "--data-dir", str(service.data_dir)],
            cwd=ROOT, env=dict(os.environ), stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        committed = threading.Event()

        def on_event(event) -> None:
            if isinstance(event, StreamStats) and event.rows_committed > 0:
                committed.set()

        with RemoteEngine(service.url, api_token.ensure(service.data_dir)) as engine:
            engine.subscribe(on_event)
            running = wait_for(
                lambda: [r for r in service.runs("plc stream") if r["status"] == "running"],
                60,
                what="the stream running in the service",
            )
            assert committed.wait(30), "no rows committed by the service's stream"
        assert running[0]["owner_pid"] == service.pid
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, out.read_text()  # an endless stream ends with a signal: not a failure
        assert time.monotonic() - began < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    (record,) = service.runs("plc stream")
    assert record["status"] == "cancelled" and record["rows_out"] > 0
    assert "CANCELLED" in out.read_text()
    assert service.proc.poll() is None
