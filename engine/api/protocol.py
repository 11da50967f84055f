"""`EngineAPI`: the one front door to the engine (architecture: one front door).

Every client goes through it: the CLI, the desktop app and the service's HTTP routes. Two
implementations: `LocalEngine` (engine/api/local.py: the engine in this process, owning the data
directory) and `RemoteEngine` (engine/api/remote/: a running `aggregator serve` over HTTP and its
event stream). Nothing outside `engine/` reaches the stores, the runner or the workspace; an
import-linter contract keeps `ui` and `app` to `engine.api`.

Design:
- The API is composed, not mixed in: `engine.pipelines.list()`, `engine.runs.start(doc)`,
  `engine.connectors.test(...)`, `engine.live.tags()`, `engine.data.sql(...)`,
  `engine.health.summary()`. Each sub-API is a small Protocol below; an implementation is free to
  share one core between them.
- Every call returns a result or a `Job[T]`. Calls that read or write data, or talk to devices,
  (previews, runs, streams, connection tests) return a `Job` at once: a future for the result, a
  cancel flag and an id that the job's events carry. Other calls are quick and blocking (a SQLite or
  historian read, a file read); a GUI runs them off its thread with `engine.call(fn, *args)`, which
  returns a future of `fn(*args)` (on the engine's pool in process, on a client thread remotely).
- Values crossing the door are plain data (dicts, lists, Polars frames, numpy arrays for live
  windows), never store or model objects, so a remote implementation can carry them as JSON/Arrow.
- Events are the typed records of engine/api/events.py; `subscribe(callback)` delivers them on an
  engine thread and returns the unsubscribe function.
- Errors are the engine's own (`engine.errors`): SpecError with its issues, DataError for an unknown
  run, ConnectorError for a bad connector, PermissionError for a shipped pipeline's deletion.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, runtime_checkable

from engine.api.core import Job
from engine.api.events import EngineEvent

if TYPE_CHECKING:
    import polars as pl

    from engine.api.runs import PreviewResult

P = ParamSpec("P")
T = TypeVar("T")

Document = dict[str, Any]  # a pipeline document (linear or graph form), as read from its file
RunRecord = dict[str, Any]  # a row of the run history (run_id, pipeline, status, started_at...)


@dataclass(frozen=True)
class RunFilter:
    """Which runs `runs.list` returns: newest first, started in [`since`, `until`) (ISO 8601 UTC
    texts or datetimes; None: open), at most `limit`."""

    pipeline: str | None = None
    status: str | None = None
    since: datetime | str | None = None
    until: datetime | str | None = None
    limit: int = 200


# ---- the sub-APIs ----------------------------------------------------------------------------
class PipelinesAPI(Protocol):
    """Pipeline documents: the user's own files under <data dir>/pipelines, the shipped examples
    and templates, their validation and the editor's palette."""

    def list(self) -> list[dict[str, Any]]:
        """{path, origin (mine|example|template), name, description, mode, modified, error,
        last_run} of every pipeline file."""
        ...

    def read(self, path: str | Path) -> dict[str, Any]:
        """{"document": graph form, "form": as the file had it, "shipped": read-only or not}."""
        ...

    def open(self, path: str | Path) -> Document:
        """The document at `path` in graph form."""
        ...

    def save(self, path: str | Path, doc: Document) -> int:
        """Write it atomically and record a pipeline version; the version number."""
        ...

    def delete(self, path: str | Path) -> None:
        """Delete one of the user's own files (PermissionError for any other)."""
        ...

    def validate(self, doc: Any) -> list[dict[str, Any]]:
        """Issues as {path, message, allowed, node_id}; empty when the document is valid."""
        ...

    def load(self, path: str | Path) -> dict[str, Any]:
        """Read and check a spec file: {"document" (as the file has it), "name", "form", "mode"
        (its schedule type), "nodes": [{id, kind}] in document order}. A file that does not read or
        is invalid raises SpecError naming the file, with every issue."""
        ...

    def node_types(self) -> list[dict[str, Any]]:
        """The palette: every source, transform and destination with its schema and ports."""
        ...

    def transformations(self) -> list[dict[str, Any]]:
        """The transformations catalog: type, title, category, description, config schema."""
        ...

    def templates(self) -> list[dict[str, Any]]:
        """The shipped templates: {name, title, path}."""
        ...

    def folder(self) -> Path:
        """The user's pipelines folder (created if missing)."""
        ...

    def install_demo(self) -> dict[str, Any]:
        """The e-commerce demo copied under the data dir: {"document", "spec_path"}."""
        ...


class RunsAPI(Protocol):
    """Previews, batch runs, real-time streams and the run history."""

    def preview(
        self,
        doc: Document,
        node_id: str | None = None,
        limit: int = 100,
        base_dir: str | Path | None = None,
    ) -> Job[PreviewResult]:
        """A dry run through `node_id` (None: every node); nothing is written."""
        ...

    def start(
        self,
        doc: Document,
        spec_path: str | Path | None = None,
        base_dir: str | Path | None = None,
        trigger: str = "manual",
        seconds: float | None = None,
    ) -> Job[RunRecord]:
        """Run the pipeline now; a real_time one streams until `stop(job.id)` (or `seconds`). The
        job's result is the final run record."""
        ...

    def stop(self, job_id: str) -> bool:
        """Stop a running stream or run gracefully; False if no such job."""
        ...

    def rerun(self, run_id: str, base_dir: str | Path | None = None) -> Job[RunRecord]:
        """Run again the pipeline version that `run_id` ran."""
        ...

    def list(self, filter: RunFilter | None = None) -> list[RunRecord]:
        """Run records, newest first."""
        ...

    def pipeline_names(self) -> list[str]:
        """Pipelines that have runs."""
        ...

    def overview(self, filter: RunFilter | None = None) -> dict[str, Any]:
        """The run history's one read: {"runs": `list(filter)`, "pipelines": `pipeline_names()`}."""
        ...

    def nodes(self, run_id: str) -> list[dict[str, Any]]:
        """A run's node statistics (node_id, status, rows in/out/rejected, duration_s)."""
        ...

    def detail(self, run_id: str) -> dict[str, Any]:
        """{"record", "nodes" (node statistics), "logs" (log lines), "rejects" (a frame)};
        DataError for an unknown run."""
        ...

    def jobs(self) -> list[Job[Any]]:
        """The jobs running now."""
        ...


class ConnectorsAPI(Protocol):
    """Connector types, saved connector configurations, their secrets and connection tests."""

    def types(self) -> list[dict[str, Any]]: ...

    def schema(self, connector_type: str, role: str) -> dict[str, Any]: ...

    def list(self) -> list[dict[str, Any]]:
        """Saved connectors: name, connector_type, role, config, updated_at."""
        ...

    def get(self, name: str) -> dict[str, Any] | None: ...

    def check(self, connector_type: str, role: str, config: dict[str, Any]) -> list[dict[str, str]]:
        """What is wrong with a config, without I/O: [{path, message}]."""
        ...

    def save(
        self,
        name: str,
        connector_type: str,
        role: str,
        config: dict[str, Any],
        previous_name: str | None = None,
    ) -> dict[str, Any]: ...

    def delete(self, name: str) -> bool: ...

    def test(
        self, connector_type: str, role: str, config: dict[str, Any], name: str = "test"
    ) -> Job[dict[str, Any]]:
        """A connection check in the background: {"ok", "error", "seconds"}."""
        ...

    def browse_opcua(self, config: dict[str, Any], node_id: str | None = None) -> Job[list[dict[str, Any]]]:
        """The children of `node_id` (default: Objects) on an OPC UA server."""
        ...

    def secret_names(self) -> list[str]: ...

    def set_secret(self, name: str, value: str, use_keyring: bool = True) -> str:
        """Store a secret's value (keyring, else the encrypted file); where it went."""
        ...

    def check_secret(self, name: str) -> None:
        """SecretError, saying where it was looked for, when the secret has no value."""
        ...

    def delete_secret(self, name: str) -> bool:
        """Remove a stored secret and forget its name; False when none was stored."""
        ...


class LiveAPI(Protocol):
    """Live tag values (ring buffers), their history (the historian) and stream throughput."""

    def tags(self, wait: bool = False) -> list[dict[str, Any]]:
        """Every tag with its newest value: tag, source, value, quality, timestamp_us, live."""
        ...

    def window(self, tag: str, since_us: int | None = None) -> tuple[Any, Any, Any]:
        """(timestamps µs, values, quality codes) of `tag` from the ring buffer."""
        ...

    def windows(self, tags: Sequence[str], since_us: int | None = None) -> dict[str, tuple[Any, Any, Any]]:
        """`window` of each tag, in one call (a chart refresh reads all its tags at once)."""
        ...

    def history(
        self,
        tags: str | Sequence[str],
        start: datetime | None,
        end: datetime | None,
        bucket: str | timedelta = "1s",
        statistics: Sequence[str] = ("avg", "min", "max", "count"),
    ) -> pl.DataFrame:
        """One row per tag and bucket in [start, end) (the historian's query)."""
        ...

    def last_values(self, tags: str | Sequence[str]) -> pl.DataFrame:
        """The newest stored value of each tag."""
        ...

    def chart_series(
        self, tags: Sequence[str], seconds: float, now_us: int | None = None
    ) -> dict[str, tuple[Any, Any, Any]]:
        """{tag: (timestamps µs, values, quality)} over the last `seconds`."""
        ...

    def throughput(self) -> dict[str, float]:
        """Rows/s committed by each running streaming pipeline."""
        ...


class DataAPI(Protocol):
    """The data directory's tables: browse, page, read-only SQL and export."""

    def objects(self) -> list[dict[str, Any]]: ...

    def preview_object(self, name: str, offset: int = 0, limit: int = 200) -> dict[str, Any]: ...

    def sql(self, sql: str, limit: int = 10_000) -> dict[str, Any]:
        """{"frame", "truncated", "rows"} of a read-only statement (DataError otherwise)."""
        ...

    def export_frame(self, frame: pl.DataFrame, path: Path | str, fmt: str | None = None) -> Job[Path]:
        """Write a frame to a file (csv, parquet, xlsx): the job's result is the path written."""
        ...

    def export_object(self, name: str, path: Path | str, fmt: str | None = None) -> Job[Path]:
        """A whole table or view to a file, no row limit."""
        ...


class HealthAPI(Protocol):
    """The engine's health, the dashboard's cards, and the monitoring/analytics read-outs."""

    def status(self) -> dict[str, Any]:
        """engine state, data dir, historian file, disk space, running jobs, source sessions."""
        ...

    def summary(self, now: datetime | None = None, recent: int = 0) -> dict[str, Any]:
        """The dashboard's cards and health in one call; with `recent`, the newest `recent` run
        records too (`recent_runs`)."""
        ...

    def recent_runs(self, limit: int = 10) -> list[RunRecord]: ...

    def source_sessions(self) -> list[dict[str, Any]]: ...

    def active_streams(self) -> int: ...

    def pipeline_stats(self, since: datetime | str | None = None) -> list[dict[str, Any]]:
        """Per pipeline: runs, successes, failures, rows in/out/rejected, last run."""
        ...

    def pipeline_performance(self, since: datetime | str | None = None) -> list[dict[str, Any]]:
        """Per pipeline: run count and average/max duration, rows per second."""
        ...

    def alerts(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recent failed or interrupted runs and the error/warning log lines, newest first."""
        ...

    def top_pipelines(self, limit: int = 10, since: datetime | str | None = None) -> list[dict[str, Any]]:
        """Pipelines by rows out."""
        ...

    def pipeline_trends(self, days: int = 7, now: datetime | None = None) -> list[dict[str, Any]]:
        """Per day and pipeline: runs, failures, rows out."""
        ...


# ---- the whole -------------------------------------------------------------------------------
class OutboxAPI(Protocol):
    """The store-and-forward outboxes of the remote destinations: `LocalEngine.outbox`
    (engine/api/outbox.py) and `RemoteEngine.outbox` (engine/api/remote/outbox.py, over the
    service's `/outbox` routes)."""

    def status(self) -> list[dict[str, Any]]:
        """Per destination: pending_records, pending_bytes, appended_records, forwarded_records,
        dropped_records, quarantined_records, oldest_pending_age_s, link_state..."""
        ...

    def quarantine(
        self, pipeline: str | None = None, destination: str | None = None
    ) -> list[dict[str, Any]]: ...

    def quarantine_records(
        self, pipeline: str, destination: str, ids: list[int] | None = None
    ) -> list[dict[str, Any]]: ...

    def quarantine_retry(self, pipeline: str, destination: str, ids: list[int] | None = None) -> int: ...

    def quarantine_delete(self, pipeline: str, destination: str, ids: list[int] | None = None) -> int: ...

    def edge_id(self) -> str: ...

    def set_edge_id(self, value: str) -> str: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...


class AlertsAPI(Protocol):
    """The alerts of the pipelines' `error_handling.alerts` rules (engine/api/alerts.py): raised,
    acknowledged, cleared; one open alert per rule and subject; events of kind `alert`."""

    def list(
        self,
        active: bool = True,
        severity: str | None = None,
        pipeline: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Newest first; open ones (active or acknowledged) unless `active` is False."""
        ...

    def get(self, alert_id: int) -> dict[str, Any]: ...

    def acknowledge(self, alert_id: int, by: str | None = None, note: str | None = None) -> dict[str, Any]:
        """Who acknowledged it, when, and a note; DataError for an unknown or cleared alert."""
        ...

    def counts(self) -> dict[str, int]:
        """Open alerts by severity (info, warning, critical)."""
        ...

    def notifications(self) -> dict[str, int]:
        """Notifications delivered / failed per channel, and pending in the outboxes."""
        ...


class UsersAPI(Protocol):
    """Local users and logins (engine/api/users.py, engine/auth/): admin manages them; anyone may
    try to log in; `me()` says who the engine acts for."""

    def has_users(self) -> bool: ...

    def list(self) -> list[dict[str, Any]]:
        """{name, role, created_at, updated_at, locked_until}: never a password or its hash."""
        ...

    def add(self, name: str, role: str, password: str) -> dict[str, Any]: ...

    def set_role(self, name: str, role: str) -> dict[str, Any]: ...

    def set_password(self, name: str, password: str) -> None: ...

    def delete(self, name: str) -> bool: ...

    def me(self) -> dict[str, Any]:
        """{user, role, source, client} of the caller."""
        ...

    def login(
        self, username: str, password: str, client: str | None = None, source: str = "api"
    ) -> dict[str, Any]:
        """{access_token, token_type: "bearer", expires_in, refresh_token, user, role};
        LoginFailed (HTTP 401) otherwise."""
        ...

    def refresh(self, refresh_token: str, client: str | None = None, source: str = "api") -> dict[str, Any]:
        """A new pair for a refresh token, which is spent (rotation)."""
        ...


class AuditAPI(Protocol):
    """The hash-chained audit trail (engine/auth/audit.py): admin only."""

    def list(
        self,
        user: str | None = None,
        action: str | None = None,
        since: str | None = None,
        until: str | None = None,
        outcome: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Entries newest first; `action` matches a prefix (`users` finds `users.add`)."""
        ...

    def verify(self) -> dict[str, Any]:
        """{ok, entries, head, first_bad, reason}: the chain checked from its anchor."""
        ...


@runtime_checkable
class EngineAPI(Protocol):
    """The engine, whichever process it runs in."""

    pipelines: PipelinesAPI
    runs: RunsAPI
    connectors: ConnectorsAPI
    live: LiveAPI
    data: DataAPI
    health: HealthAPI
    alerts: AlertsAPI
    outbox: OutboxAPI
    users: UsersAPI
    audit: AuditAPI

    @property
    def data_dir(self) -> Path: ...

    @property
    def state(self) -> str:
        """ready, stopping or stopped."""
        ...

    def subscribe(self, callback: Callable[[EngineEvent], None]) -> Callable[[], None]:
        """Call `callback(record)` for every engine event (on an engine thread); unsubscribe."""
        ...

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        """`fn(*args, **kwargs)` off the caller's thread: a future of its result."""
        ...

    def running_jobs(self) -> int: ...

    def warm_up(self) -> concurrent.futures.Future[float]: ...

    def close(self, timeout: float = 10.0) -> None: ...


__all__ = [
    "AlertsAPI",
    "AuditAPI",
    "ConnectorsAPI",
    "DataAPI",
    "Document",
    "EngineAPI",
    "HealthAPI",
    "Job",
    "LiveAPI",
    "OutboxAPI",
    "PipelinesAPI",
    "RunFilter",
    "RunRecord",
    "RunsAPI",
    "UsersAPI",
]
