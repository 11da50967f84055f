"""`HealthAPI` over the service's `/health`, `/monitoring/*` and `/analytics/*` routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.api.remote.client import ServiceClient
from engine.api.remote.wire import when


class RemoteHealth:
    def __init__(self, client: ServiceClient):
        self._client = client

    def status(self) -> dict[str, Any]:
        return self._client.get("/monitoring/system-health")

    def summary(self, now: datetime | None = None, recent: int = 0) -> dict[str, Any]:
        """The dashboard's cards; "today" is this client's day (its time zone's midnight)."""
        moment = now if now is not None else datetime.now().astimezone()
        return self._client.get("/dashboard/summary", now=moment.isoformat(), recent=recent)

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        return self._client.get("/runs", limit=limit)

    def source_sessions(self) -> list[dict[str, Any]]:
        return list(self.status().get("sessions") or [])

    def active_streams(self) -> int:
        return int(self.status().get("active_streams") or 0)

    def pipeline_stats(self, since: datetime | str | None = None) -> list[dict[str, Any]]:
        return self._client.get("/monitoring/pipeline-stats", since=when(since))

    def pipeline_performance(self, since: datetime | str | None = None) -> list[dict[str, Any]]:
        return self._client.get("/monitoring/pipeline-performance", since=when(since))

    def alerts(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._client.get("/monitoring/alerts", limit=limit)

    def top_pipelines(self, limit: int = 10, since: datetime | str | None = None) -> list[dict[str, Any]]:
        return self._client.get("/analytics/top-pipelines", limit=limit, since=when(since))

    def pipeline_trends(self, days: int = 7, now: datetime | None = None) -> list[dict[str, Any]]:
        return self._client.get("/analytics/pipeline-trends", days=days)
