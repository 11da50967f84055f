"""EngineAPI: the dashboard calls (see engine/api/core.py): counts of pipelines and today's runs,
the latest runs, the engine's health (state, data directory disk space, running jobs, and the
session state of every source of a running stream), and the demo the dashboard offers to run.

Session states come from the `source_state` events that streaming runs emit on every change
(connecting, connected, subscribed, lost, reconnecting, stopped); they are kept here, per run and
node, until the run ends, so a dashboard opened after a stream started still shows its links.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import UTC, datetime
from typing import Any

from engine.api.core import EngineCore, Event

STREAM_JOB_KINDS = ("stream", "streaming", "real_time")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DashboardAPI(EngineCore):
    """The dashboard part of the in-process engine."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sessions_lock = threading.Lock()
        self._run_names: dict[str, str] = {}  # run id -> pipeline name (from run_started)
        self._sessions: dict[tuple[str, str], dict[str, Any]] = {}  # (run id, node) -> state
        self._stream_jobs: set[str] = set()  # jobs that stream (a re-run of a real_time run too)
        self.subscribe(self._note_session_event)

    def dashboard_summary(self, now: datetime | None = None) -> dict[str, Any]:
        """Cards and health in one call (one SQLite query per card; cheap). "Today" starts at
        midnight in `now`'s time zone (the computer's when not given)."""
        if now is None or now.tzinfo is None:
            now = (now or datetime.now()).astimezone()
        midnight = _iso(now.replace(hour=0, minute=0, second=0, microsecond=0))
        db = self.workspace.metadata.db
        today = next(
            db.query(
                "SELECT count(*) AS runs, coalesce(sum(rows_in), 0) AS rows_in,"
                " coalesce(sum(rows_out), 0) AS rows_out,"
                " coalesce(sum(status IN ('failed', 'interrupted')), 0) AS failures"
                " FROM runs WHERE started_at >= ?",
                [midnight],
            )
        )
        pipelines = next(db.query("SELECT count(*) AS n FROM pipelines"))["n"]
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
            "active_streams": self.active_streams(),
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
            "sources": self.source_sessions(),
        }

    # ---- streams and their sources -----------------------------------------------------------
    def active_streams(self) -> int:
        """Streaming runs going now: stream jobs, and run jobs that turned out to stream."""
        with self._sessions_lock:
            streaming = set(self._stream_jobs)
        return sum(1 for j in self.jobs() if j.kind in STREAM_JOB_KINDS or j.id in streaming)

    def source_sessions(self) -> list[dict[str, Any]]:
        """Each source of each running stream: {pipeline, run_id, node, state, detail, since},
        by pipeline and node."""
        with self._sessions_lock:
            sessions = [dict(s) for s in self._sessions.values()]
        return sorted(sessions, key=lambda s: (s["pipeline"], s["node"], s["run_id"]))

    def _note_session_event(self, event: Event) -> None:
        kind = event.get("event")
        run_id, job = event.get("run_id"), event.get("job")
        with self._sessions_lock:
            if kind == "run_started" and run_id:
                self._run_names[run_id] = str(event.get("pipeline") or run_id)
            elif kind == "source_state" and run_id:
                node = str(event.get("node") or "source")
                self._sessions[(run_id, node)] = {
                    "pipeline": self._run_names.get(run_id, run_id),
                    "run_id": run_id,
                    "node": node,
                    "state": str(event.get("state") or "unknown"),
                    "detail": event.get("detail"),
                    "since": _iso(datetime.now(UTC)),
                }
                if job:
                    self._stream_jobs.add(job)
            elif kind == "stream_stats" and job:
                self._stream_jobs.add(job)
            elif kind == "run_finished" and run_id:
                self._run_names.pop(run_id, None)
                for key in [k for k in self._sessions if k[0] == run_id]:
                    del self._sessions[key]
            elif kind == "job_finished" and job:
                self._stream_jobs.discard(job)

    # ---- the demo ----------------------------------------------------------------------------
    def install_demo(self) -> dict[str, Any]:
        """Copy the user guide's e-commerce example (two shop exports and the pipeline) into
        <data dir>/demo/ecommerce, as `aggregator demo` does, with the last outputs removed; returns
        {"document", "spec_path"} for `run(document, spec_path=...)`. Blocking: call it on the pool."""
        from engine.examples import install_ecommerce_example

        spec = install_ecommerce_example(self.data_dir)
        return {"document": json.loads(spec.read_text(encoding="utf-8")), "spec_path": str(spec)}
