"""`OutboxAPI` over the service's `/outbox` routes (app/http/routes_outbox.py).

The service owns the forwarders: `start()` is a no-op (they run while it serves) and `stop()` is
refused (stop the service instead). Everything else is one request.
"""

from __future__ import annotations

from typing import Any

from engine.api.remote.client import ServiceClient
from engine.errors import UsageError


class RemoteOutbox:
    def __init__(self, client: ServiceClient):
        self._client = client

    def status(self) -> list[dict[str, Any]]:
        return self._client.get("/outbox")

    def quarantine(self, pipeline: str | None = None, destination: str | None = None) -> list[dict[str, Any]]:
        return self._client.get("/outbox/quarantine", pipeline=pipeline, destination=destination)

    def quarantine_records(
        self, pipeline: str, destination: str, ids: list[int] | None = None
    ) -> list[dict[str, Any]]:
        return self._client.get(
            "/outbox/quarantine/export", pipeline=pipeline, destination=destination, id=ids or None
        )

    def quarantine_retry(self, pipeline: str, destination: str, ids: list[int] | None = None) -> int:
        body = {"pipeline": pipeline, "destination": destination, "ids": ids, "all": ids is None}
        return int(self._client.post("/outbox/quarantine/retry", body)["records"])

    def quarantine_delete(self, pipeline: str, destination: str, ids: list[int] | None = None) -> int:
        params: dict[str, Any] = {"pipeline": pipeline, "destination": destination}
        if ids is None:
            params["all"] = True
        else:
            params["id"] = ids
        return int(self._client.request("DELETE", "/outbox/quarantine", params=params)["records"])

    def edge_id(self) -> str:
        return str(self._client.get("/outbox/edge-id")["edge_id"])

    def set_edge_id(self, value: str) -> str:
        return str(self._client.request("PUT", "/outbox/edge-id", json={"edge_id": value})["edge_id"])

    def start(self) -> None:
        """The service runs its forwarders already."""

    def stop(self, timeout: float = 10.0) -> None:
        raise UsageError("the service's forwarders stop with the service (aggregator serve): stop it instead")
