"""`AlertsAPI` over the service's `/alerts` routes (app/http/routes_alerts.py)."""

from __future__ import annotations

from typing import Any

from engine.api.remote.client import ServiceClient


class RemoteAlerts:
    def __init__(self, client: ServiceClient):
        self._client = client

    def list(
        self,
        active: bool = True,
        severity: str | None = None,
        pipeline: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"all": not active, "limit": limit}
        if severity:
            params["severity"] = severity
        if pipeline:
            params["pipeline"] = pipeline
        return self._client.get("/alerts", **params)

    def get(self, alert_id: int) -> dict[str, Any]:
        return self._client.get(f"/alerts/{int(alert_id)}")

    def acknowledge(self, alert_id: int, by: str | None = None, note: str | None = None) -> dict[str, Any]:
        return self._client.post(f"/alerts/{int(alert_id)}/acknowledge", {"by": by, "note": note})

    def counts(self) -> dict[str, int]:
        return self._client.get("/alerts/counts")

    def notifications(self) -> dict[str, int]:
        return self._client.get("/alerts/notifications")
