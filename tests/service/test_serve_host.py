"""The service host in process, with a real engine: manual pipelines run on request only, and a
schedule that fires while its pipeline still runs is coalesced into one more run (said), never two
runs side by side."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from engine.service.host import ServiceHost
from tests.service.conftest import wait_for

SLOW = """
import time

def slow(frame):
    if frame.height:
        time.sleep(0.8)
    return frame
"""


@pytest.fixture
def engine(tmp_path):
    from engine.api.local import LocalEngine

    eng = LocalEngine(tmp_path / "data")
    yield eng
    eng.close()


def _doc(name: str, schedule: dict, steps: list | None = None) -> dict:
    return {
        "name": name,
        "sources": [
            {"name": "input", "connector_type": "file", "config": {"path": "in.csv", "format": "csv"}}
        ],
        "transformations": steps or [],
        "destinations": [
            {
                "name": "output",
                "connector_type": "file",
                "config": {"path": f"out/{name}.csv", "format": "csv"},
            }
        ],
        "schedule": schedule,
    }


def _folder(tmp_path: Path, *docs: dict) -> Path:
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "in.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    for doc in docs:
        (folder / f"{doc['name']}.json").write_text(json.dumps(doc), encoding="utf-8")
    return folder


def test_manual_runs_on_request_only(engine, tmp_path):
    folder = _folder(tmp_path, _doc("by_hand", {"type": "manual"}))
    host = ServiceHost(engine, [folder], say=lambda *_: None)
    host.start()
    try:
        assert [p["schedule"] for p in host.pipelines()] == ["manual"]
        assert engine.workspace.metadata.runs(pipeline="by_hand") == []
        record = host.run_now("by_hand").result(60)
        assert record["status"] == "success"
        assert engine.workspace.metadata.run(record["run_id"])["trigger"] == "manual"
        assert (folder / "out" / "by_hand.csv").read_text().splitlines() == ["a,b", "1,2"]
        with pytest.raises(Exception, match="no pipeline 'nope' is served"):
            host.run_now("nope")
    finally:
        host.stop(10)


def test_a_fire_while_running_is_coalesced_into_one_more_run(engine, tmp_path):
    (engine.data_dir / "plugins").mkdir(exist_ok=True)
    (engine.data_dir / "plugins" / "slowdown.py").write_text(SLOW)
    doc = _doc(
        "busy", {"type": "interval", "seconds": 0.2}, [{"type": "python", "function": "slowdown:slow"}]
    )
    folder = _folder(tmp_path, doc)
    lines: list[str] = []
    host = ServiceHost(engine, [folder], say=lambda level, text: lines.append(text))
    host.start()
    try:
        wait_for(
            lambda: (
                len([r for r in engine.workspace.metadata.runs(pipeline="busy") if r["status"] == "success"])
                >= 3
            ),
            60,
            what="three runs",
        )
    finally:
        host.stop(10)
    runs = sorted(engine.workspace.metadata.runs(pipeline="busy"), key=lambda r: r["started_at"])
    for before, after in itertools.pairwise(runs):
        assert before["finished_at"] <= after["started_at"], "two runs of one pipeline overlapped"
    assert any("'busy' is still running: one more run when it ends" in t for t in lines)


def test_stop_waits_for_runs_the_service_did_not_start(engine, tmp_path):
    """A run started through the API (not by a schedule) is in flight on SIGTERM: it may finish too."""
    (engine.data_dir / "plugins").mkdir(exist_ok=True)
    (engine.data_dir / "plugins" / "slowdown.py").write_text(SLOW)
    folder = _folder(tmp_path)
    host = ServiceHost(engine, [folder], say=lambda *_: None)
    host.start()
    doc = _doc("by_api", {"type": "manual"}, [{"type": "python", "function": "slowdown:slow"}])
    job = engine.runs.start(doc, base_dir=folder)
    wait_for(lambda: engine.workspace.metadata.runs(pipeline="by_api"), 30, what="the run to start")
    counts = host.stop(30)
    assert job.done() and counts == {"finished": 1, "cancelled": 0}
    assert job.result(0)["status"] == "success"
    assert (folder / "out" / "by_api.csv").read_text().splitlines() == ["a,b", "1,2"]
