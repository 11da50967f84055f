"""`/runs`: the run history and one run in detail; `/jobs`: the work running now."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam

from app.http.deps import engine
from app.http.errors import ApiError, NotFound
from app.http.shape import frame_columns, frame_rows
from engine.api.protocol import EngineAPI, RunFilter
from engine.statuses import RUN_STATUSES

router = APIRouter(tags=["runs"])
RunStatus = enum.Enum("RunStatus", {s: s for s in RUN_STATUSES}, type=str)
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$"
MAX_REJECTS = 1000


def run_filter(
    pipeline: str | None,
    status: RunStatus | None,
    limit: int,
    since: str | None = None,
    until: str | None = None,
) -> RunFilter:
    return RunFilter(
        pipeline=pipeline or None,
        status=status.value if status is not None else None,
        since=since,
        until=until,
        limit=limit,
    )


@router.get("/runs", summary="Run records, newest first")
def list_runs(
    pipeline: str | None = Query(None, max_length=500, description="the pipeline's name"),
    status: RunStatus | None = Query(None),
    since: str | None = Query(None, pattern=TIME_PATTERN, description="started at or after (ISO 8601, UTC)"),
    until: str | None = Query(None, pattern=TIME_PATTERN, description="started before (ISO 8601, UTC)"),
    limit: int = Query(50, ge=1, le=10_000),
    api: EngineAPI = Depends(engine),
) -> list[dict[str, Any]]:
    return api.runs.list(run_filter(pipeline, status, limit, _utc(since), _utc(until)))


@router.get("/runs/{run_id}", summary="One run: its record, node statistics, log lines and rejects")
def get_run(
    run_id: str = PathParam(max_length=200),
    rejects: int = Query(100, ge=0, le=MAX_REJECTS, description="how many rejected records to include"),
    api: EngineAPI = Depends(engine),
) -> dict[str, Any]:
    if not run_id.strip():
        raise NotFound("run '' not found")
    detail = api.runs.detail(run_id)
    frame = detail.get("rejects")
    record = detail["record"]
    return {
        "run_id": record.get("run_id"),
        "pipeline": record.get("pipeline"),
        "status": record.get("status"),
        "record": record,
        "nodes": detail.get("nodes") or [],
        "logs": detail.get("logs") or [],
        "rejects": {
            "total": frame.height if frame is not None else 0,
            "columns": frame_columns(frame) if frame is not None else [],
            "rows": frame_rows(frame, rejects) if frame is not None else [],
        },
    }


@router.get("/jobs", summary="The work running now (runs, streams, previews, connection tests)")
def list_jobs(api: EngineAPI = Depends(engine)) -> list[dict[str, Any]]:
    return [{"id": job.id, "kind": job.kind, "cancelled": job.cancelled} for job in api.runs.jobs()]


@router.post("/jobs/{job_id}/stop", summary="Stop a run or stream gracefully")
def stop_job(job_id: str = PathParam(max_length=200), api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    if not api.runs.stop(job_id):
        raise NotFound(f"job '{job_id}' is not running (GET /jobs lists them)")
    return {"id": job_id, "stopping": True}


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (UTC when it names no offset) as an aware datetime; 422 otherwise."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ApiError(
            f"query: '{text}' is not a time (allowed: ISO 8601, e.g. 2026-01-31T12:00:00Z)", 422
        ) from None


def _utc(text: str | None) -> str | None:
    """An ISO 8601 time as the run records write it (UTC, `Z`), so texts compare in time order."""
    if text is None:
        return None
    moment = parse_time(text)
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.%fZ")
