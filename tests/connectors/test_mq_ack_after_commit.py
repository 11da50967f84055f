"""Ack after commit, shown with SIGKILL (issue 13): a pipeline process killed after it received
messages and before it committed them gets them again at the next start; killed after it
committed (and so acknowledged) them, it does not. Real RabbitMQ, Redis Streams and NATS JetStream
on 127.0.0.1; the pipeline runs in a child process (tests/connectors/mq_crash_child.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.runner import _context
from engine.spec.validate import validate
from engine.store.tag_historian import TAGS_TABLE
from engine.streaming import StreamRunner
from engine.workspace import Workspace
from tests.connectors.mq_brokers import ACKING, Broker, tag_bodies
from tests.waiting import wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def run_child(broker: Broker, mode: str, data_dir: Path, n: int) -> str:
    """The pipeline in a child process, until it kills itself; its output."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.connectors.mq_crash_child",
            broker.kind,
            broker.id,
            mode,
            str(data_dir),
            str(n),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, (
        f"child ended {proc.returncode}: {proc.stdout} {proc.stderr[-2000:]}"
    )
    return proc.stdout


def values_after_restart(broker: Broker, data_dir: Path, expect: int) -> tuple[list[float], dict]:
    """Start the pipeline again (in this process, into a historian), wait for `expect` rows, stop:
    the values stored, and the source's counters (messages received, acked...)."""
    doc = {
        "name": "mq",
        "nodes": [
            {
                "id": "src",
                "kind": "source",
                "connector_type": broker.connector_type,
                "config": broker.source_config(),
            },
            {
                "id": "hist",
                "kind": "destination",
                "inputs": ["src"],
                "connector_type": "historian",
                "config": {},
            },
        ],
        "schedule": {"type": "real_time", "batch_size": 10_000, "max_latency_ms": 50},
    }
    with Workspace(data_dir) as ws:
        compiled = validate(doc)
        ctx = _context(compiled, ws, "again", datetime.now(UTC), data_dir, threading.Event(), dry_run=False)
        runner = StreamRunner(compiled, ctx)
        runner.start()
        try:
            wait_for(lambda: runner.stats()["rows_committed"] >= expect, timeout=60, what=f"{expect} rows")
            wait_for(lambda: runner.sources["src"].counters["acked"] >= expect, what="their acks")
        finally:
            runner.stop()
        counters = dict(runner.sources["src"].counters)
        rows = ws.historian.cursor().sql(f"SELECT value FROM {TAGS_TABLE} ORDER BY value").fetchall()
        return [r[0] for r in rows], counters


def differences(values: list[float], expected, broker: Broker, counters: dict) -> str:
    """A failed comparison in one line: the values stored twice, those missing, the source's
    counters and the broker's own counts (a duplicate: received twice, redelivered by the broker,
    or published twice?)."""
    seen = Counter(values)
    twice = sorted(v for v, n in seen.items() if n > 1)
    missing = sorted(float(v) for v in expected if float(v) not in seen)
    return f"{len(values)} rows; stored twice {twice}; missing {missing}; source {counters}; {broker.state()}"


@pytest.mark.parametrize("kind", ACKING)
def test_killed_before_the_commit_the_messages_come_again_after_it_they_do_not(kind, tmp_path):
    broker = Broker(kind)
    try:
        broker.declare()
        broker.publish(tag_bodies(200))
        out = run_child(broker, "before", tmp_path / "a", 200)
        assert "received" in out  # killed with the messages in hand, nothing committed
        values, counters = values_after_restart(broker, tmp_path / "b", 200)
        assert values == [float(i) for i in range(200)], differences(values, range(200), broker, counters)

        broker.publish(tag_bodies(100, start=200))
        out = run_child(broker, "after", tmp_path / "c", 100)
        assert "acked 100" in out  # killed once they were committed and acknowledged
        if broker.unacked() is not None:
            assert broker.unacked() == 0
        canary = json.dumps({"timestamp": "2026-02-01T00:00:00Z", "tag": "canary", "value": 1000.0})
        broker.publish([canary.encode()])
        # what was committed does not come again: the next start sees the canary only (a message
        # left unacked would come first: RabbitMQ requeues at the head, Redis re-reads its pending)
        values, counters = values_after_restart(broker, tmp_path / "d", 1)
        assert values == [1000.0], differences(values, [1000], broker, counters)
    finally:
        broker.cleanup()
