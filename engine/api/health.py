"""EngineAPI: the health calls (see engine/api/protocol.py): the dashboard's counts of pipelines and
today's runs, the latest runs, the engine's health (state, data directory disk space, running jobs,
and the session state of every source of a running stream), and the monitoring/analytics read-outs
(per-pipeline statistics, alerts, trends). Every query lives in the metadata store.

Session states come from the `source_state` events that streaming runs emit on every change
(connecting, connected, subscribed, lost, reconnecting, stopped); they are kept here, per run and
node, until the run ends, so a dashboard opened after a stream started still shows its links.
"""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.api.core import EngineCore
from engine.api.events import EngineEvent, JobFinished, RunFinished, RunStarted, SourceState, StreamStats
from engine.runs.timefmt import iso_utc, iso_utc_or_none  # the one time text

STREAM_JOB_KINDS = ("stream", "streaming", "real_time")


def _midnight(now: datetime | None) -> datetime:
    """Today's midnight in `now`'s time zone (the computer's when not given)."""
    if now is None or now.tzinfo is None:
        now = (now or datetime.now()).astimezone()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


class LocalHealth:
    """The health part of the in-process engine (`engine.health`): the dashboard and monitoring."""

    def __init__(self, core: EngineCore):
        self._core = core
        self._sessions_lock = threading.Lock()
        self._run_names: dict[str, str] = {}  # run id -> pipeline name (from run_started)
        self._sessions: dict[tuple[str, str], dict[str, Any]] = {}  # (run id, node) -> state
        self._stream_jobs: set[str] = set()  # jobs that stream (a re-run of a real_time run too)
        core.subscribe(self._note_session_event)

    def summary(self, now: datetime | None = None, recent: int = 0) -> dict[str, Any]:
        """Cards and health in one call (one SQLite query per card; cheap). "Today" starts at
        midnight in `now`'s time zone (the computer's when not given). With `recent`, the newest
        `recent` run records come along (`recent_runs`), for the dashboard's activity list."""
        meta = self._core.workspace.metadata
        today = meta.runs_since(iso_utc(_midnight(now)))
        extra = {"recent_runs": self.recent_runs(recent)} if recent else {}
        return {
            **extra,
            "pipelines": meta.pipeline_count(),
            "runs_today": today["runs"],
            "rows_today": today["rows_in"],
            "rows_out_today": today["rows_out"],
            "failures_today": today["failures"],
            "active_streams": self.active_streams(),
            "running_runs": today["running"],
            "health": self.status(),
        }

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        return self._core.workspace.metadata.runs(limit=limit)

    def status(self) -> dict[str, Any]:
        usage = shutil.disk_usage(self._core.data_dir)
        return {
            "engine": self._core.state,
            "data_dir": str(self._core.data_dir),
            "historian": str(self._core.workspace.historian.path),
            "disk_free_bytes": usage.free,
            "disk_total_bytes": usage.total,
            "disk_free_ratio": usage.free / usage.total if usage.total else 0.0,
            "running_jobs": self._core.running_jobs(),
            "sources": self.source_sessions(),
        }

    # ---- monitoring and analytics ------------------------------------------------------------
    def pipeline_stats(self, since: datetime | str | None = None) -> list[dict[str, Any]]:
        return self._core.workspace.metadata.pipeline_stats(iso_utc_or_none(since))

    def pipeline_performance(self, since: datetime | str | None = None) -> list[dict[str, Any]]:
        keys = ("pipeline", "runs", "avg_duration_s", "max_duration_s", "rows_per_s")
        return [{k: row[k] for k in keys} for row in self.pipeline_stats(since)]

    def alerts(self, limit: int = 50) -> list[dict[str, Any]]:
        """The open alerts of the pipelines' `error_handling.alerts` rules (engine/api/alerts.py;
        kind `alert_<condition type>`, with id, severity, state, subject), then failed and
        interrupted runs (newest first), and each running stream's source that is not connected now."""
        rules = getattr(self._core, "alerts", None)
        raised = [
            {
                "kind": "alert_" + a["kind"],
                "pipeline": a["pipeline"],
                "run_id": None,
                "at": a["raised_at"],
                "message": a["message"],
                **{k: a[k] for k in ("id", "severity", "state", "subject", "condition", "acknowledged_by")},
            }
            for a in (rules.list(active=True, limit=limit) if rules is not None else [])
        ]
        return (raised + self._problems(limit))[:limit]

    def _problems(self, limit: int) -> list[dict[str, Any]]:
        out = [
            {
                "kind": "run_" + row["status"],
                "pipeline": row["pipeline"],
                "run_id": row["run_id"],
                "at": row.get("finished_at") or row["started_at"],
                "message": row.get("error") or row["status"],
            }
            for row in self._core.workspace.metadata.problem_runs(limit)
        ]
        down = [s for s in self.source_sessions() if s["state"] in ("lost", "reconnecting")]
        out[:0] = [
            {
                "kind": "source_" + s["state"],
                "pipeline": s["pipeline"],
                "run_id": s["run_id"],
                "at": s["since"],
                "message": f"{s['node']}: {s['detail'] or s['state']}",
            }
            for s in down
        ]
        return out[:limit]

    def top_pipelines(self, limit: int = 10, since: datetime | str | None = None) -> list[dict[str, Any]]:
        rows = sorted(self.pipeline_stats(since), key=lambda r: (-r["rows_out"], r["pipeline"]))
        return rows[:limit]

    def pipeline_trends(self, days: int = 7, now: datetime | None = None) -> list[dict[str, Any]]:
        start = _midnight(now) - timedelta(days=max(days, 1) - 1)
        return self._core.workspace.metadata.daily_runs(iso_utc(start))

    # ---- streams and their sources -----------------------------------------------------------
    def active_streams(self) -> int:
        """Streaming runs going now: stream jobs, and run jobs that turned out to stream."""
        with self._sessions_lock:
            streaming = set(self._stream_jobs)
        return sum(1 for j in self._core.jobs() if j.kind in STREAM_JOB_KINDS or j.id in streaming)

    def source_sessions(self) -> list[dict[str, Any]]:
        """Each source of each running stream: {pipeline, run_id, node, state, detail, since},
        by pipeline and node."""
        with self._sessions_lock:
            sessions = [dict(s) for s in self._sessions.values()]
        return sorted(sessions, key=lambda s: (s["pipeline"], s["node"], s["run_id"]))

    def _note_session_event(self, event: EngineEvent) -> None:
        job = event.job
        with self._sessions_lock:
            if isinstance(event, RunStarted):
                self._run_names[event.run_id] = event.pipeline or event.run_id
            elif isinstance(event, SourceState) and event.run_id:
                run_id, node = event.run_id, event.node or "source"
                self._sessions[(run_id, node)] = {
                    "pipeline": self._run_names.get(run_id, run_id),
                    "run_id": run_id,
                    "node": node,
                    "state": event.state or "unknown",
                    "detail": event.detail,
                    "since": iso_utc(datetime.now(UTC)),
                }
                if job:
                    self._stream_jobs.add(job)
            elif isinstance(event, StreamStats) and job:
                self._stream_jobs.add(job)
            elif isinstance(event, RunFinished):
                self._run_names.pop(event.run_id, None)
                for key in [k for k in self._sessions if k[0] == event.run_id]:
                    del self._sessions[key]
            elif isinstance(event, JobFinished) and job:
                self._stream_jobs.discard(job)
