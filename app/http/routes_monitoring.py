"""`/monitoring/*` (the service's state, per-pipeline statistics, alerts) and `/analytics/*`
(historian time series, top pipelines, trends)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
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
    request: Request,
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
    if start is None and end is None and window is not None:
        # "the last WINDOW": one answer for the same question asked within RECENT_S (see _Recent)
        key = (tuple(tags), window, bucket, tuple(s.value for s in stats))
        return await _recent(request).answer(
            key, lambda: _timeseries(api, tags, window, None, None, bucket, stats)
        )
    return await _timeseries(api, tags, window, start, end, bucket, stats)


async def _timeseries(api, tags, window, start, end, bucket, stats) -> dict[str, Any]:
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


RECENT_S = 0.2  # a time series of "the last WINDOW" is answered again for this long


class _Recent:
    """Time series of a window that ends now ("the last 5 min"), shared by the requests that ask
    the same question (tags, window, bucket, statistics) at about the same time: while one is being
    computed, the others wait for it, and its answer is given again for `RECENT_S`. The answer
    names the window it covers (`start`, `end`), so one given again says it ends up to `RECENT_S`
    before the request. Dashboards poll the same series from several clients; each computation
    reads the historian (~5-15 ms of CPU under a 20k values/s stream, issue 10). On the event
    loop's thread only: no lock."""

    def __init__(self) -> None:
        self.done: dict[tuple, tuple[float, dict[str, Any]]] = {}
        self.running: dict[tuple, asyncio.Future] = {}

    async def answer(self, key: tuple, compute) -> dict[str, Any]:
        now = time.monotonic()
        hit = self.done.get(key)
        if hit is not None and now - hit[0] < RECENT_S:
            return hit[1]
        running = self.running.get(key)
        if running is not None:
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                if not running.cancelled():
                    raise  # this request was cancelled
                return await compute()  # the one computing it was (its client left): compute here
        future = asyncio.get_running_loop().create_future()
        self.running[key] = future
        try:
            result = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no warning when no one else waited
            raise
        finally:
            del self.running[key]
        future.set_result(result)
        if len(self.done) >= 64:
            self.done = {k: v for k, v in self.done.items() if now - v[0] < RECENT_S}
        self.done[key] = (time.monotonic(), result)
        return result


def _recent(request: Request) -> _Recent:
    state = request.app.state
    recent = getattr(state, "recent_timeseries", None)
    if recent is None:
        recent = state.recent_timeseries = _Recent()
    return recent
