"""A real `aggregator serve` process for the route tests, with clients that carry its token.

`served_api(folder)` starts `aggregator serve --data-dir <folder>/data --listen 127.0.0.1:0` through
the conftest's `spawn` (the helper every service test uses), waits for `GET /health`, reads the token
the service created, and yields an `ApiServer`. The service gets a configuration folder of its own
(`<folder>/config`, where the secrets key lives) and no OS keyring, so that a module can share one
service while each test has its own `$AGGREGATOR_CONFIG`. On leaving, the service is stopped with
SIGTERM and must exit 0 (killed if it does not stop)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from engine.secrets import SecretStore
from engine.service.token import TOKEN_SECRET
from tests.service.conftest import ServeProcess, spawn
from tests.waiting import wait_for


@dataclass
class ApiServer:
    url: str
    token: str
    data_dir: Path
    config_dir: Path  # the service's $AGGREGATOR_CONFIG
    service: ServeProcess
    client: httpx.Client  # carries the token
    anonymous: httpx.Client  # does not

    def wait_for(self, condition, timeout: float = 30.0, what: str = "condition"):
        return wait_for(condition, timeout, what=what)

    def run_to_end(self, pipeline_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """`POST /pipelines/{id}/execute`, then `GET /runs/{run id}` until it is no longer running."""
        started = self.client.post(f"/pipelines/{pipeline_id}/execute")
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        return self.wait_for(
            lambda: (
                (r := self.client.get(f"/runs/{run_id}").json()).get("status") not in ("running", None) and r
            ),
            timeout,
            what=f"run {run_id} to end",
        )


def service_env(config_dir: Path) -> dict[str, str]:
    """The environment of a test service: its own secrets key folder, no OS keyring."""
    return {"AGGREGATOR_CONFIG": str(config_dir), "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}


@contextlib.contextmanager
def served_api(folder: Path, *args: str) -> Iterator[ApiServer]:
    """`aggregator serve` on `folder/data` (`args` go to serve); stopped with SIGTERM on leaving."""
    folder.mkdir(parents=True, exist_ok=True)
    config_dir = folder / "config"
    data_dir = folder / "data"
    service = spawn(data_dir, folder / "serve.out", *args, env=service_env(config_dir))
    clients: list[httpx.Client] = []
    try:
        service.wait_ready()
        token = SecretStore(data_dir, config=config_dir).get(TOKEN_SECRET)  # as `aggregator token` reads it
        url = str(service.url)
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        anonymous = httpx.Client(base_url=url, timeout=30)
        clients += [client, anonymous]
        yield ApiServer(url, token, data_dir, config_dir, service, client, anonymous)
    finally:
        for c in clients:
            c.close()
        if service.proc.poll() is None:
            try:
                code = service.stop(signal.SIGTERM, timeout=30)
            except Exception:
                service.proc.kill()
                service.proc.wait(10)
                raise
            assert code == 0, f"serve exited {code} on SIGTERM:\n{service.output()[-3000:]}"
