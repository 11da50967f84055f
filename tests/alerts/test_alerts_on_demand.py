"""The alert engine is built when something needs it (engine/api/alerts.py, issue 12): a one-shot
run of a pipeline without alert rules does not import the evaluator; a pipeline with rules still
raises its alerts, and one whose rule was removed still has its open alert cleared at its next run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.api import LocalEngine

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import atexit, json, runpy, sys
atexit.register(lambda: print("SEEN " + json.dumps({"evaluator": "engine.alerts.evaluator" in sys.modules})))
sys.argv = ["aggregator", *sys.argv[1:]]
runpy.run_module("app.cli", run_name="__main__")
"""


def _doc(folder: Path, alerts: list | None, path: str = "in.csv") -> dict:
    doc: dict = {
        "name": "watched",
        "sources": [{"name": "in", "connector_type": "file", "config": {"path": str(folder / path)}}],
        "destinations": [
            {"name": "out", "connector_type": "file", "config": {"path": str(folder / "out.csv")}}
        ],
    }
    if alerts is not None:
        doc["error_handling"] = {"alerts": alerts}
    return doc


def _probe_run(tmp_path: Path, alerts: list | None) -> dict:
    (tmp_path / "in.csv").write_text("id\n1\n2\n")
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps(_doc(tmp_path, alerts)))
    env = {**os.environ, "AGGREGATOR_ALLOWED_ROOTS": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "run", str(spec), "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    line = next((x for x in proc.stdout.splitlines() if x.startswith("SEEN ")), None)
    assert line is not None, proc.stdout + proc.stderr
    return json.loads(line.removeprefix("SEEN "))


def test_a_run_without_alert_rules_does_not_build_the_alert_engine(tmp_path):
    assert _probe_run(tmp_path, None) == {"evaluator": False}


def test_a_run_with_alert_rules_builds_it(tmp_path):
    assert _probe_run(tmp_path, [{"condition": "failed"}]) == {"evaluator": True}


def test_rules_raise_and_a_removed_rule_is_cleared_at_the_next_run(tmp_path, monkeypatch):
    monkeypatch.setenv("AGGREGATOR_ALLOWED_ROOTS", str(tmp_path))
    (tmp_path / "in.csv").write_text("id\n1\n")
    data = tmp_path / "data"
    with LocalEngine(data) as engine:
        failed = engine.runs.start(_doc(tmp_path, [{"condition": "failed"}], "missing.csv")).result(60)
        assert failed["status"] == "failed"
        [alert] = engine.alerts.list()
        assert alert["kind"] == "pipeline_failed" and alert["state"] == "active"

    with LocalEngine(data) as engine:  # a new process: its alert engine not built yet
        assert engine.runs.start(_doc(tmp_path, None)).result(60)["status"] == "success"
        assert engine.alerts.list() == []
        [gone] = engine.alerts.list(active=False)
        assert gone["state"] == "cleared" and gone["message"].endswith("(the rule was removed)")
