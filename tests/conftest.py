"""Shared fixtures. Service-backed tests use `require_service`: they skip with a reason when the
service is absent, and fail instead when REQUIRE_SERVICES=1 (CI), so nothing skips silently."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SERVICES = {
    "postgresql": 5432,
    "mariadb": 3306,
    "mosquitto": 1883,
    "redis": 6379,
    "rabbitmq": 5672,
    "nats": 4222,
}

# The run record of spec section 6, as `aggregator run --json` prints it.
RUN_RECORD_KEYS = frozenset(
    {
        "run_id",
        "pipeline",
        "status",
        "started_at",
        "finished_at",
        "duration_s",
        "rows_in",
        "rows_out",
        "rows_rejected",
        "nodes",
        "error",
    }
)


def require_service(name: str) -> None:
    port = SERVICES[name]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        message = f"{name} is not reachable on 127.0.0.1:{port}"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} and REQUIRE_SERVICES=1")
        pytest.skip(message)


@pytest.fixture(autouse=True, scope="session")
def allowed_roots(tmp_path_factory):
    """What an admin configures on a real machine (engine/spec/paths_policy.py): tests name files in
    the temporary folders and the repository (golden cases, examples), and run plugins. Set for
    the whole session, so that a module's service (a module-scoped fixture, started before any
    function's fixtures) has it too. The tests of the policy itself set their own."""
    roots = [str(tmp_path_factory.getbasetemp()), tempfile.gettempdir(), str(REPO)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGGREGATOR_ALLOWED_ROOTS", os.pathsep.join(roots))
        mp.setenv("AGGREGATOR_PLUGINS_ENABLED", "true")
        yield roots


@pytest.fixture(autouse=True)
def config_dir(tmp_path_factory, monkeypatch):
    """Every test gets its own configuration folder (where the secrets key lives), never the user's."""
    path = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("AGGREGATOR_CONFIG", str(path))
    return path


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "data"
    monkeypatch.setenv("AGGREGATOR_HOME", str(path))
    return path
