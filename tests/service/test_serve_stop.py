"""SIGTERM: no new work, the run in flight finishes (or, past --stop-timeout, is cancelled cleanly),
no temporary file is left, exit 0. And start-up recovery after a kill -9 in the middle of a run."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.service.conftest import wait_for

SLOW_PLUGIN = """
import time
from pathlib import Path

def slow(frame):
    if frame.height:  # validation plans on empty frames: only real rows wait
        Path(__file__).with_name("started").write_text("yes")
        time.sleep(SECONDS)
    return frame
"""


def _slow_pipeline(tmp_path: Path, data_dir: Path, seconds: float) -> Path:
    (data_dir / "plugins").mkdir(parents=True, exist_ok=True)
    (data_dir / "plugins" / "slowdown.py").write_text(SLOW_PLUGIN.replace("SECONDS", str(seconds)))
    (tmp_path / "in.csv").write_text("a,b\n1,2\n3,4\n", encoding="utf-8")
    folder = tmp_path / "specs"
    folder.mkdir(exist_ok=True)
    doc = {
        "name": "slow",
        "sources": [
            {"name": "input", "connector_type": "file", "config": {"path": "../in.csv", "format": "csv"}}
        ],
        "transformations": [{"type": "python", "function": "slowdown:slow"}],
        "destinations": [
            {
                "name": "output",
                "connector_type": "file",
                "config": {"path": "../out/slow.csv", "format": "csv"},
            }
        ],
        "schedule": {"type": "interval", "seconds": 1},
    }
    (folder / "slow.json").write_text(json.dumps(doc), encoding="utf-8")
    (tmp_path / "out").mkdir(exist_ok=True)
    return folder


def _started(data_dir: Path):
    return (data_dir / "plugins" / "started").exists()


def test_sigterm_lets_the_run_in_flight_finish(serve, tmp_path):
    data_dir = tmp_path / "data"
    folder = _slow_pipeline(tmp_path, data_dir, 2.0)
    sp = serve("--pipelines", str(folder), data_dir=data_dir)
    wait_for(lambda: _started(data_dir), 30, what="the slow run to be inside its transform")
    assert sp.stop(signal.SIGTERM) == 0
    runs = sp.runs("slow")
    assert [r["status"] for r in runs] == ["success"], "one run, finished; none started after SIGTERM"
    assert (tmp_path / "out" / "slow.csv").read_text().splitlines() == ["a,b", "1,2", "3,4"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["slow.csv"]  # no temporary file
    assert "stopping: no new runs" in sp.output() and sp.output().rstrip().endswith("stopped")


def test_sigterm_past_the_stop_timeout_cancels_cleanly(serve, tmp_path):
    data_dir = tmp_path / "data"
    folder = _slow_pipeline(tmp_path, data_dir, 4.0)
    sp = serve("--pipelines", str(folder), "--stop-timeout", "0.5", data_dir=data_dir)
    wait_for(lambda: _started(data_dir), 30, what="the slow run to be inside its transform")
    assert sp.stop(signal.SIGTERM) == 0
    assert [r["status"] for r in sp.runs("slow")] == ["cancelled"]
    assert list((tmp_path / "out").iterdir()) == []  # nothing half-written, no temporary file
    assert "did not finish in time and were cancelled" in sp.output()


def test_kill_9_mid_run_is_recovered_at_the_next_start(serve, tmp_path):
    data_dir = tmp_path / "data"
    folder = _slow_pipeline(tmp_path, data_dir, 30.0)
    sp = serve("--pipelines", str(folder), data_dir=data_dir)
    wait_for(lambda: _started(data_dir), 30, what="the slow run to be inside its transform")
    wait_for(lambda: [r for r in sp.runs("slow") if r["status"] == "running"], 10, what="a running run")
    temporary = wait_for(lambda: list((tmp_path / "out").iterdir()), 10, what="the run's temporary file")
    assert [p.name.startswith(".slow.csv.tmp-") for p in temporary] == [True]
    sp.stop(signal.SIGKILL)
    (data_dir / "plugins" / "slowdown.py").write_text(SLOW_PLUGIN.replace("SECONDS", "0"))
    (folder / "slow.json").unlink()  # the second start runs nothing: what is left is the first's
    again = serve(data_dir=data_dir)
    first = sp.runs("slow")[0]
    assert first["status"] == "interrupted"
    assert f"process {sp.pid} ended without finishing the run" in first["error"]
    assert f"run {first['run_id']} of 'slow' marked interrupted" in again.output()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # its temporary file was removed
    assert again.stop() == 0
