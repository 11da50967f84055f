"""The run record: one begin (`running`, with the pipeline's version) and one finish (the final
record, node statistics, the last log line and the `run_finished` event), for batch and streaming
runs alike. The record returned to callers is spec section 6's."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import process
from engine.context import RunContext
from engine.diskspace import NoSpaceError
from engine.errors import AggregatorError
from engine.runs.timefmt import iso_utc

if TYPE_CHECKING:
    from engine.spec.plan import Plan
    from engine.workspace import Workspace


_owners: dict[int, tuple[int, str | None]] = {}


def _owner() -> tuple[int, str | None]:
    """This process (pid, start time), read from /proc once per process (a forked child is a new pid)."""
    pid = os.getpid()
    owner = _owners.get(pid)
    if owner is None:
        owner = _owners[pid] = process.current()
    return owner


def new_run_id(now: datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


@dataclass
class RunStart:
    """What `begin_run` recorded: the fields every later update of the run record repeats."""

    run_id: str
    started: datetime
    base: dict[str, Any]
    t0: float = field(default_factory=time.perf_counter)  # for the duration (monotonic)

    def __iter__(self):  # (run id, start, base): the tuple `begin_run` used to return
        return iter((self.run_id, self.started, self.base))


def run_context(
    plan: Plan,
    ws: Workspace,
    run_id: str,
    started: datetime,
    base_dir: Path | None,
    cancel: threading.Event,
    dry_run: bool,
) -> RunContext:
    """The context a run's nodes see: its secrets, historian, log and cancel event."""
    return RunContext(
        run_id=run_id,
        pipeline=plan.graph.name,
        started_at=started,
        data_dir=ws.data_dir,
        base_dir=base_dir or Path.cwd(),
        secret=ws.secrets.get,
        historian=ws.historian,
        cancel=cancel,
        dry_run=dry_run,
        log=lambda level, msg, node=None: ws.metadata.log(run_id, level, msg, node),
        track=_tracker(ws, run_id) if not dry_run else RunContext.track,
    )


def _tracker(ws: Workspace, run_id: str) -> Callable[..., Callable[[], None]]:
    """`ctx.track` of a run: what a destination is about to create is recorded with the run first."""

    def track(kind: str, location: str, name: str | None = None) -> Callable[[], None]:
        leftover = ws.metadata.note_leftover(run_id, kind, location, name)

        def forget() -> None:
            with contextlib.suppress(AggregatorError):  # a full disk: the next start-up forgets it
                ws.metadata.forget_leftover(leftover)

        return forget

    return track


def begin_run(
    plan: Plan,
    ws: Workspace,
    *,
    trigger: str,
    spec_path: str | None,
    emit: Callable,
    what: str = "run",
) -> RunStart:
    """Record a run as `running` (with the pipeline's version) and its first log line, in one
    transaction, and announce it."""
    started = datetime.now(UTC)
    run_id = new_run_id(started)
    graph = plan.graph
    pid, pid_started = _owner()  # the owner: a later start-up tells a killed run by them
    base = {
        "run_id": run_id,
        "pipeline": graph.name,
        "version": None,
        "started_at": iso_utc(started),
        "trigger": trigger,
        "spec_path": spec_path,
        "owner_pid": pid,
        "owner_start": pid_started,
    }
    text, digest = plan.version_text  # the document's canonical text, made once per Plan
    base["version"] = ws.metadata.start_run_record(
        {**base, "status": "running", "attempt": 1}, text, digest, "info", f"{what} started ({trigger})"
    )
    emit({"event": "run_started", "run_id": run_id, "pipeline": graph.name})
    return RunStart(run_id, started, base)


def _masked(text: str | None) -> str | None:
    from engine.secrets import mask

    return mask(text) if text else text


def finish_run(
    ws: Workspace,
    start: RunStart,
    *,
    status: str,
    error: str | None,
    attempt: int,
    rows_in: int,
    rows_out: int,
    rows_rejected: int,
    node_stats: dict[str, Any],
    emit: Callable,
    summary: str | None = None,
) -> dict[str, Any]:
    """The one finish of a run: the final record and node statistics are stored, the last log
    line says how it ended (`run <status>[: summary][: error]`) and `run_finished` is emitted.
    Returns the run record (spec section 6). `node_stats` maps node id -> NodeStats."""
    finished = datetime.now(UTC)
    record = {
        "run_id": start.run_id,
        "pipeline": start.base["pipeline"],
        "status": status,
        "started_at": iso_utc(start.started),
        "finished_at": iso_utc(finished),
        "duration_s": round(time.perf_counter() - start.t0, 6),
        "rows_in": rows_in,
        "rows_out": rows_out,
        "rows_rejected": rows_rejected,
        "nodes": {nid: s.public() for nid, s in node_stats.items()},
        "error": _masked(error),  # the record goes to callers (a service's job result): no secret value
    }
    final = {
        **start.base,
        "status": status,
        "attempt": attempt,
        "finished_at": record["finished_at"],
        "duration_s": record["duration_s"],
        "rows_in": rows_in,
        "rows_out": rows_out,
        "rows_rejected": rows_rejected,
        "error": error,
    }
    stats = {
        nid: {"kind": s.kind, "status": s.status, "committed": s.committed, **s.public()}
        for nid, s in node_stats.items()
    }
    line = f"run {status}" + (f": {summary}" if summary else "") + (f": {error}" if error else "")
    save_final_record(ws, final, stats, ("error" if status == "failed" else "info", line))
    from engine.secrets import mask

    emit(
        {
            "event": "run_finished",
            "run_id": start.run_id,
            "status": status,
            # what the service's log line and metrics say of the run (engine/service)
            "pipeline": record["pipeline"],
            "duration_s": record["duration_s"],
            "rows_in": rows_in,
            "rows_out": rows_out,
            "rows_rejected": rows_rejected,
            "error": mask(error),
        }
    )
    return record


def save_final_record(
    ws: Workspace,
    run: dict[str, Any],
    stats: dict[str, dict[str, Any]],
    line: tuple[str, str] | None = None,
) -> None:
    """The run's last record, node statistics and last log line `(level, text)`, in one
    transaction. A full disk is met by giving DuckDB's unused space back and trying once more; if
    that fails too, the record stays `running` and the next start-up marks it `interrupted` (its
    process is gone by then)."""
    level, text = line if line is not None else ("info", None)
    for attempt in (1, 2):
        try:
            if text is None:
                ws.metadata.upsert_run(run)
                if stats:
                    ws.metadata.save_node_stats(run["run_id"], stats)
            else:
                ws.metadata.finish_run_record(run, stats, level, text)
            return
        except NoSpaceError:
            if attempt == 2:
                raise
            ws.historian.reclaim()
