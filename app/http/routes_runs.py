"""`/runs`: the run history and one run in detail; `/jobs`: the work running now."""

from __future__ import annotations

import collections
import concurrent.futures
import enum
import threading
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from app.http.deps import engine
from app.http.documents import document_body, read_document
from app.http.errors import ApiError, NotFound, refuse_invalid_document
from app.http.shape import frame_columns, frame_rows
from engine.api.protocol import EngineAPI, RunFilter
from engine.statuses import RUN_STATUSES

router = APIRouter(tags=["runs"])
RunStatus = enum.Enum("RunStatus", {s: s for s in RUN_STATUSES}, type=str)
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$"
MAX_REJECTS = 1000
KEPT_JOBS = 200  # jobs started by POST /runs whose results stay readable (the newest)
TRIGGERS = r"^[a-z_]{1,30}$"


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


@router.post(
    "/runs",
    status_code=202,
    summary="Run a pipeline document now (a real_time one streams); answers its job id",
    openapi_extra=document_body("the pipeline document to run"),
)
async def start_run(
    request: Request,
    spec_path: str | None = Query(None, max_length=4096, description="the spec file the document came from"),
    base_dir: str | None = Query(None, max_length=4096, description="folder relative paths resolve from"),
    trigger: str = Query("manual", pattern=TRIGGERS, description="what started it, as the run record says"),
    seconds: float | None = Query(None, gt=0, le=10**7, description="a real_time pipeline: stream this long"),
    api: EngineAPI = Depends(engine),
) -> dict[str, Any]:
    """The CLI next to a service (`aggregator run`) runs here; `GET /jobs/{id}/result` answers the
    run record when the job ends, the event stream carries its progress (filter `job`)."""
    doc = await read_document(request)
    for name, value in (("spec_path", spec_path), ("base_dir", base_dir)):
        if value is not None and "\x00" in value:
            raise ApiError(f"query.{name}: a NUL character (allowed: a file path)", 422)
    # every issue, as `aggregator validate` says them; nothing starts
    refuse_invalid_document(await run_in_threadpool(api.pipelines.validate, doc))
    job = api.runs.start(doc, spec_path=spec_path, base_dir=base_dir, trigger=trigger, seconds=seconds)
    _kept_jobs(request)[job.id] = job
    return {"job_id": job.id, "kind": job.kind, "result_url": f"/jobs/{job.id}/result"}


def _kept_jobs(request: Request) -> collections.OrderedDict:
    state = request.app.state
    with _kept_lock:
        kept = getattr(state, "kept_jobs", None)
        if kept is None:
            kept = state.kept_jobs = _KeptJobs()
        return kept


class _KeptJobs(collections.OrderedDict):
    """Job id -> job, the newest `KEPT_JOBS`; running ones are never dropped."""

    def __setitem__(self, key, value) -> None:
        with _kept_lock:
            super().__setitem__(key, value)
            done = [k for k, job in self.items() if job.done()]
            for k in done[: max(0, len(self) - KEPT_JOBS)]:
                del self[k]


_kept_lock = threading.RLock()


@router.get("/jobs/{job_id}/result", summary="A job's result: waits up to `wait` s for it to end")
async def job_result(
    request: Request,
    job_id: str = PathParam(max_length=200),
    wait: float = Query(0, ge=0, le=60, description="seconds to wait for the end"),
    api: EngineAPI = Depends(engine),
) -> dict[str, Any]:
    """`{"id", "done": false}` while it runs; `{"id", "done": true, "result"}` once it has ended. A job
    that failed before its run started (an invalid document, a missing secret) answers its error."""
    job = _kept_jobs(request).get(job_id)
    if job is None:
        raise NotFound(f"job '{job_id}' unknown (only jobs started by POST /runs keep a result)")
    if wait and not job.done():
        await run_in_threadpool(concurrent.futures.wait, [job.future], wait)
    if not job.done():
        return {"id": job_id, "done": False}
    return {"id": job_id, "done": True, "result": job.result()}


@router.post("/jobs/{job_id}/stop", summary="Stop a run or stream gracefully")
def stop_job(job_id: str = PathParam(max_length=200), api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    if not api.runs.stop(job_id):
        raise NotFound(f"job '{job_id}' is not running (GET /jobs lists them)")
    return {"id": job_id, "stopping": True}


def parse_moment(text: str) -> datetime:
    """An ISO 8601 time as an aware datetime kept in its own offset (UTC when it names none); 422
    when it is no time or has no UTC equivalent."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment.astimezone(UTC)  # one that overflows in UTC is refused here, not later
        return moment
    except (ValueError, OverflowError):
        raise ApiError(
            f"query: '{text}' is not a time (allowed: ISO 8601, e.g. 2026-01-31T12:00:00Z)", 422
        ) from None


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (UTC when it names no offset) as an aware UTC datetime; 422 otherwise."""
    return parse_moment(text).astimezone(UTC)


def _utc(text: str | None) -> str | None:
    """An ISO 8601 time as the run records write it (UTC, `Z`), so texts compare in time order."""
    if text is None:
        return None
    moment = parse_time(text)
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.%fZ")
