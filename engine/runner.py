"""One run of a batch pipeline: attempts with the pipeline's retry policy. The run record, the
back-off and time formatting live in engine/runs/ (shared with streaming runs)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from engine.errors import AggregatorError, RunCancelled
from engine.lazy_chain import executor_for
from engine.runs.record import begin_run, finish_run, run_context
from engine.runs.retry import retry_delays, retryable
from engine.secrets import mask
from engine.spec.plan import Plan
from engine.workspace import Workspace

_context = run_context  # the name tests and engine.api used


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


def run_pipeline(
    plan: Plan,
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
    policy = plan.graph.error_handling.retry_policy
    delays = retry_delays(policy)
    emit = on_event or (lambda e: None)
    start = begin_run(plan, ws, trigger=trigger, spec_path=spec_path, emit=emit)
    run_id = start.run_id

    attempt, error, result, status = 0, None, None, "failed"
    failure: BaseException | None = None
    while True:
        attempt += 1
        ctx = run_context(plan, ws, run_id, start.started, base_dir, cancel, dry_run=False)
        executor = executor_for(plan, ctx, on_event=emit)
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
        if failure is None or not retryable(failure) or attempt > policy.max_retries:
            break
        delay = next(delays)
        ws.metadata.log(run_id, "warning", f"attempt {attempt} failed: {error}; retrying in {delay:g}s")
        ws.metadata.upsert_run({**start.base, "status": "retrying", "attempt": attempt + 1, "error": error})
        emit(
            {
                "event": "retrying",
                "run_id": run_id,
                "attempt": attempt + 1,
                "delay_s": delay,
                "retry": attempt,  # this is retry `retry` of `max_retries`
                "max_retries": policy.max_retries,
                "error": mask(error),  # events reach the API's event stream: no secret value
            }
        )
        wait(delay)
        if cancel.is_set():
            status, error = "cancelled", "run cancelled"
            break

    record = finish_run(
        ws,
        start,
        status=status,
        error=error,
        attempt=attempt,
        rows_in=result.rows_in if result else 0,
        rows_out=result.rows_out if result else 0,
        rows_rejected=result.rows_rejected if result else 0,
        node_stats=result.stats if result else {},
        emit=emit,
    )
    record["_targets"] = result.targets if result else {}
    return record


def preview_pipeline(
    plan: Plan,
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
    ctx = run_context(plan, ws, "preview", started, base_dir, cancel or threading.Event(), dry_run=True)
    preview = run_preview(plan, ctx, limit=limit, sample_rows=sample_rows)
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
