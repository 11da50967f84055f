"""`aggregator secret` and `aggregator demo` next to a running service: they go through its API
(the service owns the data directory, so opening it here would be a lock error)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.service.conftest import ROOT, cli
from tests.service.http_server import service_env

pytestmark = pytest.mark.slow


def test_secret_set_and_check_go_to_the_service(serve, tmp_path):
    env = service_env(tmp_path / "config")
    service = serve(data_dir=tmp_path / "data", env=env)
    data = str(service.data_dir)
    stored = subprocess.run(
        [sys.executable, "-m", "app.cli", "secret", "set", "plant_db", "--file-store", "--data-dir", data],
        input="s3cret-value\n", capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, **env},
    )  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    assert "secret 'plant_db' stored" in stored.stdout and "lock" not in stored.stderr
    checked = cli("secret", "check", "plant_db", "--data-dir", data, env=env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "secret 'plant_db' is set"
    missing = cli("secret", "check", "nope", "--data-dir", data, env=env)
    assert missing.returncode == 1 and missing.stderr.startswith("error:")
    # The value never shows in the service's own log.
    assert "s3cret-value" not in service.output()
    logs = service.data_dir / "logs" / "aggregator.jsonl"
    assert "s3cret-value" not in logs.read_text(encoding="utf-8")


def test_demo_runs_through_the_service(serve, tmp_path):
    env = service_env(tmp_path / "config")
    service = serve(data_dir=tmp_path / "data", env=env)
    done = cli("demo", "--json", "--data-dir", service.data_dir, env=env)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] in ("success", "warning")
    runs = json.loads(cli("runs", "--json", "--data-dir", service.data_dir, env=env).stdout)
    demo_runs = [r for r in runs if r["run_id"] == record["run_id"]]
    assert demo_runs and demo_runs[0]["owner_pid"] == service.pid
