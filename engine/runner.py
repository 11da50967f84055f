"""One run of a pipeline: retries with backoff, statuses, the run record and its storage."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from engine import process, statuses
from engine.context import RunContext
from engine.diskspace import NoSpaceError
from engine.errors import AggregatorError, ConnectorError, RunCancelled
from engine.executor import Executor
from engine.spec.models import dump
from engine.spec.validate import Compiled
from engine.workspace import Workspace

# Errors worth another attempt: the outside world may heal (file appears, server comes back).
RETRYABLE = (ConnectorError, OSError)
RUN_STATUSES = statuses.RUN_STATUSES  # every status a run record can have


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_run_id(now: datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def _context(
    compiled: Compiled,
    ws: Workspace,
    run_id: str,
    started: datetime,
    base_dir: Path | None,
    cancel: threading.Event,
    dry_run: bool,
) -> RunContext:
    return RunContext(
        run_id=run_id,
        pipeline=compiled.graph.name,
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


def reclaim_space(ws: Workspace, error: BaseException | None) -> None:
    """A DuckDB file that met a full disk gives its unused tail back (see `shrink_duckdb_file`);
    the historian's, when a full disk was met elsewhere (another sink may have grown it)."""
    from engine.diskspace import no_space
    from engine.store.historian import shrink_duckdb_file

    path = getattr(error, "duckdb_file", None)
    if path is None:
        if error is not None and no_space(error):
            ws.historian.reclaim()
        return
    if Path(path).resolve() == ws.historian.path.resolve():
        ws.historian.reclaim()
    else:
        shrink_duckdb_file(Path(path))


def begin_run(
    compiled: Compiled,
    ws: Workspace,
    *,
    trigger: str,
    spec_path: str | None,
    emit: Callable,
    what: str = "run",
) -> tuple[str, datetime, dict[str, Any]]:
    """Record a run as `running` (with the pipeline's version) and announce it: (run id, start,
    the fields every later update of the run record repeats)."""
    started = datetime.now(UTC)
    run_id = new_run_id(started)
    graph = compiled.graph
    pid, pid_started = process.current()  # the owner: a later start-up tells a killed run by them
    base = {
        "run_id": run_id,
        "pipeline": graph.name,
        "version": ws.metadata.save_pipeline_version(graph.name, dump(graph)),
        "started_at": _iso(started),
        "trigger": trigger,
        "spec_path": spec_path,
        "owner_pid": pid,
        "owner_start": pid_started,
    }
    ws.metadata.upsert_run({**base, "status": "running", "attempt": 1})
    ws.metadata.log(run_id, "info", f"{what} started ({trigger})")
    emit({"event": "run_started", "run_id": run_id, "pipeline": graph.name})
    return run_id, started, base


def run_pipeline(
    compiled: Compiled,
    ws: Workspace,
    *,
    base_dir: Path | None = None,
    spec_path: str | None = None,
    trigger: str = "manual",
    cancel: threading.Event | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Run now; return the run record of spec section 6. Never raises for a failed run."""
    cancel = cancel or threading.Event()
    wait = sleep or (lambda s: cancel.wait(s))
    graph = compiled.graph
    policy = graph.error_handling.retry_policy
    emit = on_event or (lambda e: None)
    run_id, started, base = begin_run(compiled, ws, trigger=trigger, spec_path=spec_path, emit=emit)

    attempt, error, result, status = 0, None, None, "failed"
    failure: BaseException | None = None
    t0 = time.perf_counter()
    while True:
        attempt += 1
        ctx = _context(compiled, ws, run_id, started, base_dir, cancel, dry_run=False)
        executor = Executor(compiled, ctx, on_event=emit)
        try:
            result = executor.execute()
            status, error = ("warning" if result.rows_rejected else "success"), None
            break
        except RunCancelled:
            status, error, result = "cancelled", "run cancelled", executor.result(committed=False)
            break
        except AggregatorError as exc:
            error, result, failure = exc.one_line(), executor.result(committed=False), exc
            reclaim_space(ws, exc)  # the outputs are rolled back: a full disk gets its space back
        except Exception as exc:  # a bug: still recorded, never a silent crash
            error, result = f"internal error: {type(exc).__name__}: {exc}", executor.result(committed=False)
            ws.metadata.log(run_id, "error", error)
            break
        retryable = isinstance(failure, RETRYABLE)
        if not retryable or attempt > policy.max_retries:
            break
        delay = policy.delay(attempt)
        ws.metadata.log(run_id, "warning", f"attempt {attempt} failed: {error}; retrying in {delay:g}s")
        ws.metadata.upsert_run({**base, "status": "retrying", "attempt": attempt + 1, "error": error})
        emit({"event": "retrying", "run_id": run_id, "attempt": attempt + 1, "delay_s": delay})
        wait(delay)
        if cancel.is_set():
            status, error = "cancelled", "run cancelled"
            break

    finished = datetime.now(UTC)
    record = {
        "run_id": run_id,
        "pipeline": graph.name,
        "status": status,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration_s": round(time.perf_counter() - t0, 6),
        "rows_in": result.rows_in if result else 0,
        "rows_out": result.rows_out if result else 0,
        "rows_rejected": result.rows_rejected if result else 0,
        "nodes": {nid: s.public() for nid, s in result.stats.items()} if result else {},
        "error": error,
    }
    final = {
        **base,
        "status": status,
        "attempt": attempt,
        "finished_at": record["finished_at"],
        "duration_s": record["duration_s"],
        "rows_in": record["rows_in"],
        "rows_out": record["rows_out"],
        "rows_rejected": record["rows_rejected"],
        "error": error,
    }
    stats = (
        {
            nid: {"kind": s.kind, "status": s.status, "committed": s.committed, **s.public()}
            for nid, s in result.stats.items()
        }
        if result
        else {}
    )
    save_final_record(ws, final, stats)
    ws.metadata.log(
        run_id, "error" if status == "failed" else "info", f"run {status}" + (f": {error}" if error else "")
    )
    emit({"event": "run_finished", "run_id": run_id, "status": status})
    record["_targets"] = result.targets if result else {}
    return record


def save_final_record(ws: Workspace, run: dict[str, Any], stats: dict[str, dict[str, Any]]) -> None:
    """The run's last record and node statistics. A full disk is met by giving DuckDB's unused space
    back and trying once more; if that fails too, the record stays `running` and the next start-up
    marks it `interrupted` (its process is gone by then)."""
    for attempt in (1, 2):
        try:
            ws.metadata.upsert_run(run)
            if stats:
                ws.metadata.save_node_stats(run["run_id"], stats)
            return
        except NoSpaceError:
            if attempt == 2:
                raise
            ws.historian.reclaim()


def preview_pipeline(
    compiled: Compiled,
    ws: Workspace,
    *,
    base_dir: Path | None = None,
    limit: int = 20,
    sample_rows: int = 10_000,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Dry run on a sample: the first `limit` rows at every node and port; writes nothing.
    Streaming sources give a short live sample (engine/preview.py, the GUI's preview path too);
    `live_problems` says why a live sample holds no value."""
    from engine.preview import run_preview

    started = datetime.now(UTC)
    ctx = _context(compiled, ws, "preview", started, base_dir, cancel or threading.Event(), dry_run=True)
    preview = run_preview(compiled, ctx, limit=limit, sample_rows=sample_rows)
    return {
        "stats": preview.stats,
        "samples": preview.samples,
        "live_sampled": preview.live_sampled,
        "live_problems": preview.live_problems,
    }


def frame_to_json_rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Small frames (previews) to JSON-ready rows; timestamps as ISO 8601 UTC with Z."""
    import json

    conv = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, pl.Datetime):
            col = pl.col(name)
            if dtype.time_zone:
                col = col.dt.convert_time_zone("UTC")
            conv.append(col.dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ").alias(name))
        elif dtype in (pl.Date, pl.Time, pl.Duration) or isinstance(dtype, pl.Duration):
            conv.append(pl.col(name).cast(pl.String))
        else:
            conv.append(pl.col(name))
    text = df.select(conv).write_json() if df.width else "[]"
    return json.loads(text)
