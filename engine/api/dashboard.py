"""EngineAPI: the dashboard calls (see engine/api/core.py): counts of pipelines and today's runs,
the latest runs, and the engine's health (state, data directory disk space, running jobs)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from typing import Any

from engine.api.core import EngineCore

STREAM_JOB_KINDS = ("stream", "streaming", "real_time")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DashboardAPI(EngineCore):
    """The dashboard part of the in-process engine."""

    def dashboard_summary(self, now: datetime | None = None) -> dict[str, Any]:
        """Cards and health in one call (one SQLite query per card; cheap)."""
        now = (now or datetime.now().astimezone()).astimezone()
        midnight = _iso(now.replace(hour=0, minute=0, second=0, microsecond=0))
        db = self.workspace.metadata.db
        today = next(
            db.query(
                "SELECT count(*) AS runs, coalesce(sum(rows_in), 0) AS rows_in,"
                " coalesce(sum(rows_out), 0) AS rows_out,"
                " coalesce(sum(status = 'failed'), 0) AS failures"
                " FROM runs WHERE started_at >= ?",
                [midnight],
            )
        )
        pipelines = next(db.query("SELECT count(*) AS n FROM pipelines"))["n"]
        streams = sum(1 for j in self.jobs() if any(k in j.kind for k in STREAM_JOB_KINDS))
        running = next(
            db.query(
                "SELECT count(*) AS n FROM runs WHERE status = 'running' AND started_at >= ?", [midnight]
            )
        )
        return {
            "pipelines": pipelines,
            "runs_today": today["runs"],
            "rows_today": today["rows_in"],
            "rows_out_today": today["rows_out"],
            "failures_today": today["failures"],
            "active_streams": streams,
            "running_runs": running["n"],
            "health": self.health(),
        }

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        return self.workspace.metadata.runs(limit=limit)

    def health(self) -> dict[str, Any]:
        usage = shutil.disk_usage(self.data_dir)
        return {
            "engine": self.state,
            "data_dir": str(self.data_dir),
            "disk_free_bytes": usage.free,
            "disk_total_bytes": usage.total,
            "disk_free_ratio": usage.free / usage.total if usage.total else 0.0,
            "running_jobs": self.running_jobs(),
        }
