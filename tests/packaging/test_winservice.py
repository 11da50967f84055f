"""The Windows service wrapper's plain-Python part, on Linux: the command it runs and the supervisor
that starts `aggregator serve` and stops it politely (SIGTERM here, Ctrl+Break on Windows)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from app import winservice
from tests.net import free_port
from tests.waiting import wait_for


def test_importable_without_pywin32_and_says_so(capsys):
    assert winservice.HAVE_PYWIN32 is False  # this is Linux
    assert winservice.main(["aggregator-service"]) == 2
    assert "needs Windows and pywin32" in capsys.readouterr().err


def test_data_dir_is_under_programdata():
    assert winservice.default_data_dir({"ProgramData": "/pd"}) == Path("/pd") / "DataAggregator"
    assert winservice.default_data_dir({"ProgramData": "/pd", "AGGREGATOR_HOME": "/x"}) == Path("/x")


def test_serve_command_beside_the_service_exe():
    cli = winservice.cli_executable("/opt/app/aggregator-service")
    assert cli == ["/opt/app/aggregator"]
    assert winservice.serve_command(cli, Path("/d"), "127.0.0.1:9") == [
        "/opt/app/aggregator",
        "serve",
        "--data-dir",
        "/d",
        "--listen",
        "127.0.0.1:9",
    ]


def test_supervisor_starts_serve_and_stops_it_cleanly(tmp_path):
    port = free_port()
    command = winservice.serve_command(winservice.cli_executable(), tmp_path / "data", f"127.0.0.1:{port}")
    supervisor = winservice.ServeSupervisor(command, stop_timeout_s=30, log_path=tmp_path / "console.log")
    supervisor.start()
    try:

        def health():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    return json.load(answer)
            except OSError:
                assert supervisor.exited() is None, (tmp_path / "console.log").read_text()
                return None

        assert wait_for(health, timeout=60, interval=0.1, what="serve's /health")["status"] == "ok"
    finally:
        code = supervisor.stop()
    assert code == 0, (tmp_path / "console.log").read_text()  # SIGTERM: a clean stop, not a kill
    assert supervisor.exited() == 0


def test_stop_before_start_is_nothing():
    assert winservice.ServeSupervisor(["true"]).stop() is None
