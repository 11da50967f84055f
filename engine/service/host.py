"""The service's pipelines: one engine, the spec files it serves, and what runs them unattended.

`ServiceHost(engine, folders)` loads every spec file of the engine's own pipelines folder (the
stored pipelines: what the desktop app saves) and of the extra folders (`aggregator serve
--pipelines DIR`), and gives each to what its schedule asks for:

- `cron`, `interval`: the scheduler (engine/service/scheduler.py, its policy in docs/service.md);
- `file_arrival`: the watcher, once a matching file has settled (engine/service/watcher.py);
- `real_time`: the supervisor, which keeps the stream running (engine/service/supervisor.py);
- `manual`: nothing until `run_now(name)`.

The folders are watched: a file added, changed or deleted is picked up within a few seconds (the
pipeline is rescheduled from its new text; a stream is restarted). A file that does not validate is
said once, in one line, and not scheduled. A batch pipeline runs at most once at a time: a fire
while it runs is coalesced into one more run when it ends (said as such).

Every run goes through `_start`, the one place that calls the engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.api.pipelines import SPEC_SUFFIXES  # the files the stored pipelines are, too
from engine.service.scheduler import INTERVAL_SPREAD_S, Fire, Scheduler
from engine.service.supervisor import Supervisor
from engine.service.watcher import Watcher

if TYPE_CHECKING:
    from engine.api.protocol import EngineAPI

log = logging.getLogger("aggregator.service")
DEFAULT_SETTLE_S = 2.0


@dataclass
class Served:
    """One spec file the service serves."""

    key: str  # the file's resolved path
    path: Path
    name: str
    doc: dict[str, Any]
    schedule: Any  # the parsed schedule model
    retry_policy: Any
    digest: str
    job: Any = None  # the batch run in flight
    pending: bool = False  # a fire came while it ran: one more run when it ends
    last_status: str | None = None
    runs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class ServiceHost:
    def __init__(
        self,
        engine: EngineAPI,
        folders: list[Path] | None = None,
        say: Callable[[str, str], None] | None = None,
        now: Callable | None = None,
        on_lag: Callable[[float], None] | None = None,
    ):
        self.engine = engine
        own = Path(engine.data_dir) / "pipelines"
        self.folders = [
            own,
            *[Path(f).resolve() for f in folders or [] if Path(f).resolve() != own.resolve()],
        ]
        self._say = say or (lambda level, text: log.log(logging.getLevelName(level.upper()), text))
        kwargs = {"now": now} if now is not None else {}
        self.scheduler = Scheduler(self._fired, on_log=self._say, spread_s=INTERVAL_SPREAD_S, **kwargs)
        self.watcher = Watcher()
        self.supervisor = Supervisor(self._stop_job, self._say)
        self._served: dict[str, Served] = {}
        self._bad: dict[str, str] = {}  # key -> digest of a file said to be invalid (said once)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._on_lag = on_lag  # seconds from a slot to its fire (the service's metrics)

    # ---- the one call into the engine --------------------------------------------------------
    def _start(self, served: Served, trigger: str) -> Any:
        """Start a run (a real_time pipeline: a stream) of `served` through the EngineAPI; its Job."""
        return self.engine.runs.start(served.doc, spec_path=served.path, trigger=trigger)

    def _stop_job(self, job_id: str) -> bool:
        return self.engine.runs.stop(job_id)

    # ---- life --------------------------------------------------------------------------------
    def start(self) -> None:
        alerts = getattr(self.engine, "alerts", None)
        if alerts is not None and hasattr(alerts, "start"):  # alert rules' clock; notifications left pending
            alerts.start()  # before the outboxes: it rebuilds its own (`_alerts`) forwarders
        outbox = getattr(self.engine, "outbox", None)
        if outbox is not None:  # every pipeline it runs: store_and_forward; pending outboxes forwarded
            outbox.start()
        self.reload()
        for i, folder in enumerate(self.folders):
            self.watcher.watch_folder(f"folder:{i}", folder, self.reload)
        self.watcher.start()
        self.scheduler.start()

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        """Stop new work, then let the runs in flight finish within `timeout`; what is still running
        then is cancelled (destinations abort: no partial file, no temporary file). Returns counts."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        self.scheduler.stop()
        self.watcher.stop()
        self.supervisor.stop(timeout)  # streams: stopped gracefully, last micro-batch committed
        # Every job of the engine, the API's too: batch runs may finish; streams stop gracefully
        # now (a stream does not end by itself); previews, tests and exports are not waited for.
        jobs = []
        for job in self.engine.runs.jobs():
            if job.kind == "run":
                jobs.append(job)
            else:
                self._stop_job(job.id)
        finished = cancelled = 0
        for job in jobs:
            with contextlib.suppress(Exception):
                job.result(max(0.0, deadline - time.monotonic()))
            if job.done():
                finished += 1
            else:
                job.cancel()
                cancelled += 1
        for job in jobs:
            with contextlib.suppress(Exception):
                job.result(5.0)  # a cancelled run ends between batches (readers: at most 2 s)
        outbox = getattr(self.engine, "outbox", None)
        if outbox is not None:  # after the runs: their last batches are in the outboxes
            with contextlib.suppress(Exception):
                outbox.stop(max(1.0, deadline - time.monotonic()))
        return {"finished": finished, "cancelled": cancelled}

    # ---- loading -----------------------------------------------------------------------------
    def spec_files(self) -> list[Path]:
        found = []
        for folder in self.folders:
            if folder.is_dir():
                found += sorted(
                    p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SPEC_SUFFIXES
                )
        return found

    def reload(self) -> None:
        """Bring the served pipelines in line with the spec files: new ones are scheduled, changed
        ones rescheduled, deleted ones unscheduled (a stream is stopped)."""
        if self._stopping.is_set():
            return
        with self._lock:
            present = {}
            for path in self.spec_files():
                with contextlib.suppress(OSError):
                    present[str(path.resolve())] = (path, hashlib.sha256(path.read_bytes()).hexdigest())
            for key in [k for k in self._served if k not in present]:
                served = self._served.pop(key)
                self._unschedule(served)
                self._say("info", f"pipeline '{served.name}' removed ({served.path})")
            for key, (path, digest) in present.items():
                old = self._served.get(key)
                if (old is not None and old.digest == digest) or self._bad.get(key) == digest:
                    continue
                served = self._load(key, path, digest)
                if old is not None:
                    self._unschedule(old)
                    self._served.pop(key, None)
                if served is None:
                    continue
                self._served[key] = served
                self._schedule(served)
                verb = "reloaded" if old is not None else "loaded"
                self._say("info", f"pipeline '{served.name}' {verb}: {self._describe(served.schedule)}")

    def _load(self, key: str, path: Path, digest: str) -> Served | None:
        from engine.errors import AggregatorError
        from engine.spec.io import read_document
        from engine.spec.validate import validate

        try:
            doc = read_document(path)
            compiled = validate(doc, check_schemas=False)
        except AggregatorError as exc:
            self._bad[key] = digest
            self._say("error", f"pipeline file {path}: not served: {exc.one_line()}")
            return None
        self._bad.pop(key, None)
        graph = compiled.graph
        return Served(
            key,
            path,
            graph.name,
            doc,
            graph.schedule,
            graph.error_handling.retry_policy,
            digest,
        )

    @staticmethod
    def _describe(schedule: Any) -> str:
        kind = schedule.type
        if kind == "cron":
            return f"cron '{schedule.expression}' ({schedule.timezone})"
        if kind == "interval":
            return f"every {schedule.seconds:g} s"
        if kind == "file_arrival":
            return f"on files arriving at {schedule.path}"
        if kind == "real_time":
            return "real time, kept running"
        return "manual (runs on request)"

    def _schedule(self, served: Served) -> None:
        kind = served.schedule.type
        if kind in ("cron", "interval"):
            self.scheduler.add(served.key, served.schedule)
        elif kind == "file_arrival":
            pattern = Path(served.schedule.path)
            if not pattern.is_absolute():
                pattern = Path(os.path.normpath(served.path.parent / pattern))
            settle = getattr(served.schedule, "settle_seconds", DEFAULT_SETTLE_S)
            self.watcher.watch_files(
                served.key, pattern, settle, lambda file, key=served.key: self._arrived(key, file)
            )
        elif kind == "real_time":
            self.supervisor.keep(
                served.key,
                served.name,
                lambda s=served: self._start(s, "real_time"),
                served.retry_policy,
            )

    def _unschedule(self, served: Served) -> None:
        self.scheduler.remove(served.key)
        self.watcher.unwatch(served.key)
        self.supervisor.release(served.key)

    # ---- firing ------------------------------------------------------------------------------
    def _fired(self, fire: Fire) -> None:
        if self._on_lag is not None:
            self._on_lag(fire.lag_s)
        with self._lock:
            served = self._served.get(fire.key)
        if served is not None:
            self._say("info", f"schedule fired: '{served.name}' ({fire.describe()})")
            self._run(served, served.schedule.type)

    def _arrived(self, key: str, file: Path) -> None:
        with self._lock:
            served = self._served.get(key)
        if served is not None:
            self._say("info", f"file arrived for '{served.name}': {file}")
            self._run(served, "file_arrival")

    def run_now(self, name: str) -> Any:
        """Run the pipeline called `name` (or at that path) now, whatever its schedule; its Job."""
        with self._lock:
            matches = [s for s in self._served.values() if name in (s.name, s.key, str(s.path))]
        if not matches:
            from engine.errors import UsageError

            raise UsageError(f"no pipeline '{name}' is served")
        return self._run(matches[0], "manual", coalesce=False)

    def _run(self, served: Served, trigger: str, coalesce: bool = True) -> Any:
        if self._stopping.is_set():
            return None
        with served.lock:
            if coalesce and served.job is not None and not served.job.done():
                if not served.pending:
                    self._say("warning", f"'{served.name}' is still running: one more run when it ends")
                served.pending = True
                return served.job
            job = self._start(served, trigger)
            served.job = job
            served.runs += 1
        job.add_done_callback(lambda j, s=served, t=trigger: self._ended(s, j, t))
        return job

    def _ended(self, served: Served, job: Any, trigger: str) -> None:
        try:
            record = job.result(0)
            served.last_status = record.get("status")
            error = f": {record['error']}" if record.get("error") else ""
            # the console's "run finished" line comes from the engine's events (engine/service/logs.py)
            self._say("debug", f"run of '{served.name}' ({trigger}) finished {served.last_status}{error}")
        except Exception as exc:
            served.last_status = "failed"
            self._say("error", f"run of '{served.name}' failed: {exc}")
        with served.lock:
            again = served.pending and not self._stopping.is_set()
            served.pending = False
        if again:
            threading.Thread(target=self._run, args=(served, trigger), daemon=True).start()

    # ---- status ------------------------------------------------------------------------------
    def pipelines(self) -> list[dict[str, Any]]:
        with self._lock:
            served = list(self._served.values())
        streams = self.supervisor.status()
        out = []
        for s in served:
            nxt = self.scheduler.next_fire(s.key)
            out.append(
                {
                    "name": s.name,
                    "path": str(s.path),
                    "schedule": s.schedule.type,
                    "next_fire": nxt.isoformat() if nxt else None,
                    "running": bool(s.job is not None and not s.job.done())
                    or streams.get(s.key, {}).get("running", False),
                    "runs": s.runs,
                    "restarts": streams.get(s.key, {}).get("restarts", 0),
                    "last_status": s.last_status,
                }
            )
        return out
