"""The `RemoteEngine` itself: the sub-APIs over one `ServiceClient`."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.api.events import EngineEvent
from engine.api.remote.client import ServiceClient, ServiceUnavailable

SOURCE_HEADER = "X-Aggregator-Source"  # cli or gui: the audit trail's `source` (app/http/auth.py)


class RemoteEngine:
    """`EngineAPI` over a service at `url` with the bearer `token`."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 30.0,
        data_dir: Path | str | None = None,
        source: str | None = None,
        refresh_token: str | None = None,
    ):
        from engine.api.remote.alerts import RemoteAlerts
        from engine.api.remote.connectors import RemoteConnectors
        from engine.api.remote.data import RemoteData
        from engine.api.remote.health import RemoteHealth
        from engine.api.remote.live import RemoteLive
        from engine.api.remote.outbox import RemoteOutbox
        from engine.api.remote.pipelines import RemotePipelines
        from engine.api.remote.runs import RemoteRuns
        from engine.api.remote.users import RemoteAudit, RemoteUsers

        self._client = ServiceClient(url, token, timeout=timeout)
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self.pipelines = RemotePipelines(self._client)
        self.runs = RemoteRuns(self._client)
        self.connectors = RemoteConnectors(self._client)
        self.health = RemoteHealth(self._client)
        self.live = RemoteLive(self._client)
        self.data = RemoteData(self._client)
        self.alerts = RemoteAlerts(self._client)
        self.outbox = RemoteOutbox(self._client)
        self.users = RemoteUsers(self._client)  # the service checks the roles and audits
        self.audit = RemoteAudit(self._client)
        if source:
            self.set_source(source)
        if refresh_token:  # a user's login: its access token is renewed when it expires
            self._refresh_token = refresh_token
            self._client.renew_token = self._renew

    def _renew(self) -> str | None:
        """A new access token for the refresh token (spent and replaced): `POST /auth/refresh`."""
        answer = self._client.post("/auth/refresh", {"refresh_token": self._refresh_token})
        self._refresh_token = answer["refresh_token"]
        return answer["access_token"]

    def set_source(self, source: str) -> None:
        """Which client this is (cli, gui), for the service's audit trail. It labels the entries;
        it grants nothing (the token says who the caller is)."""
        self._client._http.headers[SOURCE_HEADER] = source

    @property
    def url(self) -> str:
        return self._client.url

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            self._data_dir = Path(self._client.get("/health").get("data_dir", ""))
        return self._data_dir

    @property
    def state(self) -> str:
        """The service's engine state; "stopped" when the service no longer answers."""
        if self._client.closed:
            return "stopped"
        try:
            return str(self._client.get("/health").get("engine") or "ready")
        except ServiceUnavailable:
            return "stopped"

    def subscribe(self, callback: Callable[[EngineEvent], None]) -> Callable[[], None]:
        return self._client.subscribe(callback)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        return self._client.call(fn, *args, **kwargs)

    def running_jobs(self) -> int:
        return len(self._client.get("/jobs"))

    def warm_up(self) -> concurrent.futures.Future[float]:
        future: concurrent.futures.Future[float] = concurrent.futures.Future()
        future.set_result(0.0)  # the service's engine is warm already
        return future

    def close(self, timeout: float = 10.0) -> None:
        self._client.close(timeout)

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
