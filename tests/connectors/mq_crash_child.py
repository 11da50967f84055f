"""A real_time pipeline from a message queue, run as a child process by test_mq_ack_after_commit
and SIGKILLed at a chosen point:

- `before`: its destination kills the process in its first write, i.e. after the messages were
  received and before anything was committed;
- `after`: into the historian; the process kills itself once `n` messages are acknowledged.

    python -m tests.connectors.mq_crash_child KIND BROKER_ID MODE DATA_DIR N
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime

from engine.connectors import registry
from engine.connectors.base import Connector, ConnectorConfig, Sink
from engine.runner import _context
from engine.spec.validate import validate
from engine.streaming import StreamRunner
from engine.workspace import Workspace
from tests.connectors.mq_brokers import Broker


class KillConfig(ConnectorConfig):
    pass


class KillSink(Sink):
    def open(self) -> None:
        pass

    def write(self, batch) -> None:
        print(f"received {batch.height}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class KillConnector(Connector):
    connector_type = "test_kill_on_write"
    SinkConfig = KillConfig

    @classmethod
    def make_sink(cls, config, ctx, name):
        return KillSink(config, ctx, name)


def main() -> None:
    kind, broker_id, mode, data_dir, n = sys.argv[1:6]
    registry.register(KillConnector)
    broker = Broker(kind, existing=broker_id)
    dest = (
        {"connector_type": "test_kill_on_write", "config": {}}
        if mode == "before"
        else {"connector_type": "historian", "config": {}}
    )
    doc = {
        "name": "mq",
        "nodes": [
            {
                "id": "src",
                "kind": "source",
                "connector_type": broker.connector_type,
                "config": broker.source_config(),
            },
            {"id": "out", "kind": "destination", "inputs": ["src"], **dest},
        ],
        "schedule": {"type": "real_time", "batch_size": 10_000, "max_latency_ms": 50},
    }
    with Workspace(data_dir) as ws:
        compiled = validate(doc)
        ctx = _context(compiled, ws, "child", datetime.now(UTC), data_dir, threading.Event(), dry_run=False)
        runner = StreamRunner(compiled, ctx)
        runner.start()
        print("started", flush=True)
        source = runner.sources["src"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if mode == "after" and source.counters["acked"] >= int(n):
                print(f"acked {source.counters['acked']}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.01)
        print("timed out", flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
