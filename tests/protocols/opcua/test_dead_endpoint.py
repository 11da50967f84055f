"""A dead endpoint is visible at once, in one line; asyncua's chatter goes to a debug log
(issue 9, A5)."""

from __future__ import annotations

import logging
import re
import socket
import time

import pytest

from tests.net import closed_port


def _lost_line(rec) -> str | None:
    return next((d for _, s, d in rec.states if s == "lost"), None)


def test_a_refused_endpoint_is_one_line_within_5_s(recorder):
    endpoint = f"opc.tcp://127.0.0.1:{closed_port()}"
    config = {
        "endpoint": endpoint,
        "nodes": ["ns=2;s=Turbine01.Power"],
        "reconnect": {"initial_delay_s": 2.0},
    }
    with recorder(config) as rec:
        started = time.monotonic()
        seconds = rec.wait_for(lambda: _lost_line(rec) is not None, timeout=5.0)
        assert time.monotonic() - started < 5.0 and seconds < 5.0
    line = _lost_line(rec)
    assert re.fullmatch(rf"OPC UA {re.escape(endpoint)}: connection refused; retrying in \d+\.\d s", line), (
        line
    )
    delay = float(line.rsplit(" ", 2)[-2])
    assert 1.6 <= delay <= 2.4  # the configured first wait, with its jitter


def test_a_silent_endpoint_is_one_line_within_5_s(recorder):
    """A server that accepts the connection and never answers (a hung process, a proxy)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"opc.tcp://127.0.0.1:{silent.getsockname()[1]}"
        config = {"endpoint": endpoint, "nodes": ["ns=2;s=Turbine01.Power"], "timeout_s": 1.0}
        with recorder(config) as rec:
            rec.wait_for(lambda: _lost_line(rec) is not None, timeout=5.0)
    assert re.fullmatch(
        rf"OPC UA {re.escape(endpoint)}: no answer within 1 s; retrying in \d+\.\d s", _lost_line(rec)
    )


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def root_records():
    """What a console (or any handler on the root logger) would be handed, at every level."""
    root, handler = logging.getLogger(), _Records()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.records
    root.removeHandler(handler)
    root.setLevel(level)


def test_asyncua_chatter_on_a_lost_link_goes_to_debug_not_the_console(farm, recorder, root_records):
    """asyncua logs an ERROR traceback ("Publish iteration crashed") and warnings ("close_session
    was called but connection is closed") when a server goes away; the source's one-line state
    says it all, so those reach the log at DEBUG, never a console at WARNING."""
    config = {
        "endpoint": farm.endpoint,
        "browse_root": "WindFarm",
        "publishing_interval_ms": 100,
        "reconnect": {"initial_delay_s": 0.2, "max_delay_s": 1.0},
    }
    with recorder(config) as rec:
        rec.wait_for(lambda: rec.source.counters["notifications"] >= 12)
        farm.go_down()
        try:
            rec.wait_for(lambda: rec.source.state == "lost")
            rec.wait_for(lambda: any(_demoted_warning(r) for r in root_records))
        finally:
            farm.come_back()
        rec.wait_for(lambda: rec.source.counters["reconnects"] == 1 and rec.source.state == "subscribed")
    loud = [r for r in root_records if r.levelno >= logging.WARNING and r.name.startswith("asyncua")]
    assert loud == [], [r.getMessage() for r in loud]
    demoted = [r for r in root_records if _demoted_warning(r)]
    assert all(
        (r.levelno == logging.DEBUG and r.exc_info is None) or r.levelno == logging.DEBUG for r in demoted
    )


def _demoted_warning(record: logging.LogRecord) -> bool:
    return record.levelno == logging.DEBUG and bool(
        re.match(r"\[(warning|error|critical) asyncua", str(record.msg))
    )


PROCESS = r"""
import sys, time
from engine.context import RunContext
from protocols.opcua.connector import OpcUaSource
from protocols.opcua.simulator import OpcUaSimulator

sim = OpcUaSimulator(turbines=1, interval_s=0.1).start()
config = {"endpoint": sim.endpoint, "browse_root": "WindFarm", "publishing_interval_ms": 100,
          "reconnect": {"initial_delay_s": 0.2, "max_delay_s": 1.0}}
source = OpcUaSource(config, RunContext())
source.start(lambda batch: None)

def until(condition, what):
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}: {source.state} {source.state_detail}")
        time.sleep(0.05)

until(lambda: source.counters["notifications"] >= 8, "values")
sim.go_down()
until(lambda: source.state == "lost", "the loss")
print("lost:", source.state_detail, flush=True)
sim.come_back()
until(lambda: source.counters["reconnects"] == 1 and source.state == "subscribed", "the healing")
source.stop()
sim.stop()
"""


def test_a_process_without_logging_set_up_prints_no_asyncua_chatter():
    """As `aggregator run` is: no logging configured, so Python's last-resort handler would print
    every WARNING and ERROR on stderr (asyncua's traceback when the server went away did)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", PROCESS], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert re.match(
        r"lost: OPC UA opc\.tcp://127\.0\.0\.1:\d+/windfarm: .+; retrying in \d+\.\d s$", done.stdout
    )
    assert done.stderr == ""
