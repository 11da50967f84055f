"""`/monitoring/*` (the service's state, per-pipeline statistics, alerts) and `/analytics/*`
(historian time series, top pipelines, trends)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from app.http.deps import engine
from app.http.errors import ApiError
from app.http.routes_runs import TIME_PATTERN, _utc, parse_time
from app.http.shape import frame_rows
from engine.api.live import parse_duration
from engine.api.protocol import EngineAPI

router = APIRouter(tags=["monitoring"])
DURATION = r"^[1-9][0-9]{0,8}(ms|s|m|h|d|w)$"
Since = Query(None, pattern=TIME_PATTERN, description="only runs started at or after (ISO 8601, UTC)")
# The historian's statistics (engine/store/tag_historian.py STATISTICS); the engine checks them too.
Statistic = Enum(
    "Statistic", {s: s for s in ("avg", "min", "max", "first", "last", "sum", "count")}, type=str
)
MAX_POINTS = 100_000


@router.get("/monitoring/pipeline-stats", summary="Per pipeline: runs, successes, failures, rows, last run")
def pipeline_stats(since: str | None = Since, api: EngineAPI = Depends(engine)) -> list[dict[str, Any]]:
    return api.health.pipeline_stats(_utc(since))


@router.get("/monitoring/pipeline-performance", summary="Per pipeline: average and longest duration, rows/s")
def pipeline_performance(since: str | None = Since, api: EngineAPI = Depends(engine)) -> list[dict[str, Any]]:
    return api.health.pipeline_performance(_utc(since))


@router.get("/monitoring/system-health", summary="Engine state, disk space, jobs, streams and their sources")
def system_health(api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    status = api.health.status()
    return {**status, "active_streams": api.health.active_streams(), "throughput": api.live.throughput()}


@router.get("/monitoring/alerts", summary="Failed and interrupted runs, sources that are down; newest first")
def alerts(limit: int = Query(50, ge=1, le=1000), api: EngineAPI = Depends(engine)) -> list[dict[str, Any]]:
    return api.health.alerts(limit)


@router.get("/analytics/timeseries", summary="Historian query: one row per tag and bucket")
async def timeseries(
    tags: list[str] = Query(..., min_length=1, max_length=100, description="tag names, globs, or re:regex"),
    window: str | None = Query(None, pattern=DURATION, description="the last WINDOW (e.g. 1h), if no start"),
    start: str | None = Query(None, pattern=TIME_PATTERN, description="from (ISO 8601)"),
    end: str | None = Query(
        None, pattern=TIME_PATTERN, description="until, excluded (ISO 8601; default now)"
    ),
    bucket: str = Query("1m", pattern=DURATION, description="bucket width (e.g. 10s, 1m, 1h)"),
    stats: list[Statistic] = Query([Statistic.avg, Statistic.min, Statistic.max, Statistic.count]),
    api: EngineAPI = Depends(engine),
) -> dict[str, Any]:
    if any(not t.strip() or len(t) > 500 for t in tags):
        raise ApiError("query.tags: an empty or over-long tag (allowed: 1-500 characters)", 422)
    until = _moment(end) or datetime.now(UTC)
    since = _moment(start)
    if since is None and window is not None:
        try:
            since = until - parse_duration(window, "query.window")
        except OverflowError:
            raise ApiError(f"query.window: '{window}' reaches before the year 1", 422) from None
    if since is not None and since >= until:
        raise ApiError("query.start: not before end", 422)
    statistics = [s.value for s in stats]
    frame = await run_in_threadpool(api.live.history, tags, since, until, bucket, statistics)
    return {
        "start": since,
        "end": until,
        "bucket": bucket,
        "rows": frame_rows(frame, MAX_POINTS),
        "truncated": frame.height > MAX_POINTS,
    }


@router.get("/analytics/top-pipelines", summary="Pipelines by rows written")
def top_pipelines(
    limit: int = Query(10, ge=1, le=1000), since: str | None = Since, api: EngineAPI = Depends(engine)
) -> list[dict[str, Any]]:
    return api.health.top_pipelines(limit, _utc(since))


@router.get("/analytics/pipeline-trends", summary="Per day and pipeline: runs, failures, rows written")
def pipeline_trends(
    days: int = Query(7, ge=1, le=366), api: EngineAPI = Depends(engine)
) -> list[dict[str, Any]]:
    return api.health.pipeline_trends(days)


def _moment(text: str | None) -> datetime | None:
    return None if text is None else parse_time(text)
