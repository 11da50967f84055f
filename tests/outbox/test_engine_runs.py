"""Remote destinations in real runs of the engine: direct inside a one-shot run's commit;
store_and_forward under the service (and for real-time runs), forwarded after a restart from the
stored pipeline."""

from __future__ import annotations

from typing import Any, ClassVar

from engine.api.local import LocalEngine
from engine.connectors import registry
from engine.connectors.base import Connector
from engine.outbox.config import RemoteSinkConfig
from engine.outbox.manager import manager_for
from engine.outbox.sinks import remote_sink
from tests.engine.streaming_sources import TicksConnector
from tests.outbox.upstream import Upstream, UpstreamTarget
from tests.waiting import wait_for

DOWN: set[str] = set()  # upstream files that refuse connections


class CentralConfig(RemoteSinkConfig):
    path: str


class CentralConnector(Connector):
    """A remote destination written the way the real ones are: make_target + remote_sink."""

    connector_type = "test_central"
    SinkConfig: ClassVar = CentralConfig

    @classmethod
    def make_target(cls, config: Any, ctx: Any, name: str) -> UpstreamTarget:
        up = Upstream(ctx.resolve_path(config.path))
        up.down = str(up.path) in DOWN
        up.retry_after = 0.05
        return UpstreamTarget(up, name)

    @classmethod
    def make_sink(cls, config: Any, ctx: Any, name: str):
        return remote_sink(cls, config, ctx, name)


def _doc(tmp_path, name="to_central", rows=30):
    lines = "\n".join(f"t{i % 3},{i}" for i in range(rows))
    (tmp_path / "in.csv").write_text("tag,value\n" + lines + "\n")
    return {
        "name": name,
        "sources": [{"name": "in", "connector_type": "file", "config": {"path": str(tmp_path / "in.csv")}}],
        "destinations": [
            {
                "name": "central",
                "connector_type": "test_central",
                "config": {"path": str(tmp_path / "central.sqlite")},
            }
        ],
        "error_handling": {"retry_policy": {"max_retries": 0}},
    }


def setup_module() -> None:
    registry.register(CentralConnector)
    registry.register(TicksConnector)


def test_a_one_shot_run_delivers_directly_or_fails_cleanly(tmp_path):
    doc = _doc(tmp_path)
    central = Upstream(tmp_path / "central.sqlite")
    with LocalEngine(tmp_path / "data", workers=1) as engine:
        record = engine.runs.start(doc).result(60)
        assert record["status"] == "success", record["error"]
        assert central.count() == 30  # inside the run: no outbox
        assert engine.outbox.status() == []
        DOWN.add(str(central.path))
        try:
            record = engine.runs.start(doc).result(60)
        finally:
            DOWN.discard(str(central.path))
        assert record["status"] == "failed"
        assert "destination 'central'" in record["error"] and "connection refused" in record["error"]


def test_under_the_service_runs_go_through_the_outbox_and_survive_a_restart(tmp_path):
    doc = _doc(tmp_path, rows=40)
    central = Upstream(tmp_path / "central.sqlite")
    DOWN.add(str(central.path))
    try:
        with LocalEngine(tmp_path / "data", workers=1) as engine:
            engine.outbox.start()  # what ServiceHost.start does
            record = engine.runs.start(doc).result(60)
            assert record["status"] == "success", record["error"]  # accepted by the outbox
            [row] = engine.outbox.status()
            assert row["pending_records"] == 40 and row["appended_records"] == 40
            wait_for(lambda: engine.outbox.status()[0]["link_state"] == "down", what="link down")
    finally:
        DOWN.discard(str(central.path))
    assert central.count() == 0
    with LocalEngine(tmp_path / "data", workers=1) as engine:  # the service again, the link back
        engine.outbox.start()  # rebuilds the destination from the stored pipeline
        wait_for(lambda: central.count() == 40, what="forwarded after the restart")
        wait_for(lambda: engine.outbox.status()[0]["pending_records"] == 0, what="outbox empty")
    assert not manager_for(tmp_path / "data").serving


def test_a_real_time_run_defaults_to_store_and_forward(tmp_path):
    doc = {
        "name": "live_central",
        "nodes": [
            {
                "id": "ticks",
                "kind": "source",
                "connector_type": "test_ticks",
                "config": {"rows_per_batch": 10, "tags": 10, "batches": 5, "interval_s": 0.01},
            },
            {
                "id": "central",
                "kind": "destination",
                "inputs": ["ticks"],
                "connector_type": "test_central",
                "config": {"path": str(tmp_path / "central.sqlite")},
            },
        ],
        "schedule": {"type": "real_time", "batch_size": 10, "max_latency_ms": 20},
    }
    central = Upstream(tmp_path / "central.sqlite")
    with LocalEngine(tmp_path / "data", workers=1) as engine:
        job = engine.runs.start(doc, seconds=3)
        wait_for(lambda: central.count() == 50, what="ticks forwarded")
        job.result(30)
        [row] = engine.outbox.status()
        assert row["appended_records"] == 50 and row["forwarded_records"] == 50
