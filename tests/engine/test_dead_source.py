"""A dead source is visible at once (issue 9, A5), through `aggregator run` of a real_time
pipeline against a Modbus port where nothing listens:
- within 5 s, one line on the console names the endpoint and the reason;
- a `--seconds` run that never received a value exits 1, with one line saying so and why;
- pymodbus' own chatter ("Failed to connect", "Repeating....") stays off the console.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.engine.test_preview_protocols import modbus_doc
from tests.net import closed_port

ROOT = Path(__file__).resolve().parents[2]


def test_a_run_against_a_dead_modbus_port_says_why_at_once_and_exits_1(tmp_path):
    port = closed_port()
    spec = tmp_path / "dead.json"
    spec.write_text(json.dumps(modbus_doc(port, poll_interval_ms=200)))
    command = [sys.executable, "-m", "app.cli", "run", str(spec), "--seconds", "3"]
    command += ["--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[str, list[tuple[float, str]]] = {"out": [], "err": []}

    def read(stream, key):
        for line in stream:
            seen[key].append((time.monotonic(), line.rstrip("\n")))

    readers = [
        threading.Thread(target=read, args=(proc.stdout, "out"), daemon=True),
        threading.Thread(target=read, args=(proc.stderr, "err"), daemon=True),
    ]
    for reader in readers:
        reader.start()
    code = proc.wait(timeout=60)
    for reader in readers:
        reader.join(10)

    started = next(t for t, line in seen["out"] if line.startswith('Streaming "meters preview"'))
    errors = [line for _, line in seen["err"]]
    said = f"source 'meters' lost: modbus://127.0.0.1:{port}: connection refused; retrying every 0.4 s"
    first = next((t for t, line in seen["err"] if line.startswith(said)), None)
    assert first is not None, errors
    assert first - started < 5.0  # at once, not at the end of the run
    assert code == 1
    assert errors[-1] == (
        f"error: no values were received from 'meters': modbus://127.0.0.1:{port}: connection refused; "
        "retrying every 0.4 s, backing off to 30 s"
    )
    # one line for the outage (the source retries every 0.2-30 s meanwhile), one for the end;
    # no library chatter, no traceback
    assert errors == [errors[0], errors[-1]] and errors[0].startswith(said), errors
    assert "FAILED" in "\n".join(line for _, line in seen["out"])


def test_the_console_says_an_outage_once_and_says_when_the_device_is_back(tmp_path):
    """The device is down when the run starts (the source retries several times meanwhile), then
    comes up: one line for the outage, one for the recovery, and the run succeeds."""
    from datetime import UTC, datetime

    import protocols
    from engine.runner import _context
    from engine.spec.validate import validate
    from engine.streaming import StreamRunner
    from engine.streaming.run import SourceStateLines
    from engine.workspace import Workspace
    from protocols.modbus.simulator import ModbusSimulator

    protocols.register_all()
    port = closed_port()
    document = modbus_doc(port, poll_interval_ms=100)
    document["nodes"][0]["config"]["devices"][0]["backoff_max_ms"] = 200
    lines: list[str] = []
    say = SourceStateLines()

    def on_event(event):
        line = say(event)
        if line:
            lines.append(line)

    with Workspace(tmp_path / "data") as ws:
        compiled = validate(document)
        ctx = _context(compiled, ws, "run1", datetime.now(UTC), tmp_path, threading.Event(), dry_run=False)
        runner = StreamRunner(compiled, ctx, on_event=on_event)
        runner.start()
        try:
            deadline = time.monotonic() + 10
            while runner.sources["meters"].counters["connects"] < 4:  # several attempts, one line
                assert time.monotonic() < deadline, lines
                time.sleep(0.02)
            with ModbusSimulator(port=port, meters=1, frozen_at=1000.0):
                while not (any("connected again" in line for line in lines) and "meters" in runner.valued):
                    assert time.monotonic() < deadline + 10, lines
                    time.sleep(0.02)
        finally:
            runner.stop()
    assert lines == [
        f"source 'meters' lost: modbus://127.0.0.1:{port}: connection refused; retrying every 0.2 s",
        f"source 'meters' connected again: modbus://127.0.0.1:{port}",
    ]
    assert runner.status == "success" and runner.stats()["rows_committed"] > 0
