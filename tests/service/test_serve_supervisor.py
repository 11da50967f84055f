"""real_time pipelines under the service host: kept running, restarted with the pipeline's back-off
when they fail, stopped gracefully when released. In process, with a real engine and a real
streaming source that fails (tests/engine/faulty_sources.py)."""

from __future__ import annotations

import json

import pytest

from engine.connectors import registry
from engine.service.host import ServiceHost
from tests.engine.faulty_sources import FaultyConnector
from tests.service.conftest import wait_for


@pytest.fixture
def engine(tmp_path):
    from engine.api.local import LocalEngine

    registry.register(FaultyConnector)
    eng = LocalEngine(tmp_path / "data")
    yield eng
    eng.close()


def _stream(name: str, fault: str, initial: float = 0.5) -> dict:
    return {
        "name": name,
        "sources": [
            {
                "name": "src",
                "connector_type": "test_faulty",
                "config": {"fault": fault, "fault_after": 1, "batches": 3},
            }
        ],
        "destinations": [{"name": "hist", "connector_type": "historian", "config": {}}],
        "schedule": {"type": "real_time", "max_latency_ms": 50},
        "error_handling": {"retry_policy": {"initial_delay_seconds": initial, "backoff_multiplier": 2.0}},
    }


def test_a_failing_stream_is_restarted_with_backoff(engine, tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "dies.json").write_text(json.dumps(_stream("dies", "die")))
    lines: list[tuple[str, str]] = []
    host = ServiceHost(engine, [folder], say=lambda level, text: lines.append((level, text)))
    host.start()
    try:
        key = str((folder / "dies.json").resolve())
        wait_for(lambda: len(host.supervisor.delays(key)) >= 3, 30, what="three restarts")
        delays = host.supervisor.delays(key)[:3]
        # 0.5, 1, 2 s, each within the 10% jitter: the pipeline's retry_policy, growing
        for got, want in zip(delays, (0.5, 1.0, 2.0), strict=True):
            assert want * 0.9 <= got <= want * 1.1
        failed = [t for lvl, t in lines if "stream 'dies' ended failed" in t]
        assert failed and "restarting in" in failed[0] and "decoder state corrupted" in failed[0]
        runs = engine.workspace.metadata.runs(pipeline="dies", limit=10)
        assert len([r for r in runs if r["status"] == "failed"]) >= 3
    finally:
        host.stop(10)


def test_a_healthy_stream_runs_until_the_host_stops(engine, tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "fine.json").write_text(json.dumps(_stream("fine", "none")))
    host = ServiceHost(engine, [folder], say=lambda *_: None)
    host.start()
    key = str((folder / "fine.json").resolve())
    wait_for(lambda: host.supervisor.status().get(key, {}).get("running"), 30, what="the stream to run")
    wait_for(lambda: engine.workspace.metadata.runs(pipeline="fine", limit=1), 30, what="its run record")
    host.stop(10)
    runs = engine.workspace.metadata.runs(pipeline="fine", limit=10)
    assert [r["status"] for r in runs] in (["success"], ["cancelled"])  # stopped by us, once, not restarted
    assert host.supervisor.delays(key) == []


def test_deleting_a_stream_file_stops_it_and_it_is_not_restarted(engine, tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    spec = folder / "gone.json"
    spec.write_text(json.dumps(_stream("gone", "none")))
    lines: list[str] = []
    host = ServiceHost(engine, [folder], say=lambda level, text: lines.append(text))
    host.start()
    try:
        key = str(spec.resolve())
        wait_for(lambda: host.supervisor.status().get(key, {}).get("running"), 30, what="the stream to run")
        spec.unlink()
        wait_for(lambda: "pipeline 'gone' removed" in " ".join(lines), 30, what="the removal")
        assert key not in host.supervisor.status()
        runs = engine.workspace.metadata.runs(pipeline="gone", limit=10)
        assert len(runs) == 1 and runs[0]["status"] in ("success", "cancelled")  # stopped, not failed
        assert not [t for t in lines if "restarting" in t]
    finally:
        host.stop(10)
