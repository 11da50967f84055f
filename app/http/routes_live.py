"""`/live/*`: what the Live page of a desktop app attached to the service reads (engine.live): the
tags with their newest values, windows of the ring buffers, chart series (ring buffer plus
historian buckets), historian queries, last stored values and stream throughput.

Series and frames answer as Arrow IPC streams (app/http/arrow.py). A window is one long frame,
`tag`, `timestamp_us` (epoch µs), `value` (float, NaN for a text or missing value), `quality`
(0 good, 1 uncertain, 2 bad), oldest first per tag: a chart refresh reads all its tags in one call.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from starlette.concurrency import run_in_threadpool

from app.http.arrow import ARROW_RESPONSE, arrow_response
from app.http.deps import engine
from app.http.errors import ApiError
from app.http.routes_monitoring import DURATION, Statistic
from app.http.routes_runs import TIME_PATTERN, parse_time
from engine.api.protocol import EngineAPI

router = APIRouter(prefix="/live", tags=["live"])
MAX_TAGS = 500
MAX_WINDOW_S = 366 * 86400.0
# Epoch microseconds a client may name: 1970 to 2200 (a chart's since/now).
MAX_US = 7_258_118_400_000_000

Tags = Query(..., min_length=1, max_length=MAX_TAGS, description="tag names (repeat the parameter)")


def _check_tags(tags: list[str]) -> list[str]:
    for i, tag in enumerate(tags):
        if not tag.strip() or len(tag) > 500:
            raise ApiError(f"query.tags[{i}]: an empty or over-long tag (allowed: 1-500 characters)", 422)
    return list(dict.fromkeys(tags))  # each once, in the order asked


def series_frame(series: dict[str, tuple[Any, Any, Any]]):
    """{tag: (timestamps µs, values, quality)} as one long frame (tag, timestamp_us, value, quality)."""
    import numpy as np
    import polars as pl

    parts = []
    for tag, (ts, values, quality) in series.items():
        parts.append(
            pl.DataFrame(
                {
                    "tag": pl.Series([tag], dtype=pl.String).new_from_index(0, len(ts)),
                    "timestamp_us": pl.Series(np.asarray(ts, dtype=np.int64)),
                    "value": pl.Series(np.asarray(values, dtype=np.float64)),
                    "quality": pl.Series(np.asarray(quality, dtype=np.uint8)),
                }
            )
        )
    if not parts:
        return pl.DataFrame(
            schema={"tag": pl.String, "timestamp_us": pl.Int64, "value": pl.Float64, "quality": pl.UInt8}
        )
    return pl.concat(parts, how="vertical", rechunk=False)


@router.get("/tags", summary="Every tag with its newest value, quality and time; live or stored")
def tags(api: EngineAPI = Depends(engine)) -> list[dict[str, Any]]:
    return api.live.tags()


@router.get("/throughput", summary="Rows/s committed by each running streaming pipeline")
def throughput(api: EngineAPI = Depends(engine)) -> dict[str, float]:
    return api.live.throughput()


@router.get(
    "/windows",
    summary="The ring buffers' points of some tags since a moment (Arrow IPC)",
    response_class=Response,
    responses=ARROW_RESPONSE,
)
def windows(
    tags: list[str] = Tags,
    since_us: int | None = Query(None, ge=0, le=MAX_US, description="from this epoch µs on (default: all)"),
    api: EngineAPI = Depends(engine),
) -> Response:
    return arrow_response(series_frame(api.live.windows(_check_tags(tags), since_us)))


@router.get(
    "/chart-series",
    summary="A chart's series over the last seconds: ring buffer plus historian buckets (Arrow IPC)",
    response_class=Response,
    responses=ARROW_RESPONSE,
)
async def chart_series(
    tags: list[str] = Tags,
    seconds: float = Query(..., gt=0, le=MAX_WINDOW_S, description="how far back"),
    now_us: int | None = Query(None, ge=0, le=MAX_US, description="the window's end (default: now)"),
    api: EngineAPI = Depends(engine),
) -> Response:
    wanted = _check_tags(tags)
    end = now_us if now_us is not None else time.time_ns() // 1000
    if end - int(seconds * 1e6) < 0:
        raise ApiError("query.seconds: reaches before 1970 from now_us", 422)
    series = await run_in_threadpool(api.live.chart_series, wanted, seconds, end)
    return arrow_response(series_frame(series))


@router.get(
    "/history",
    summary="The historian's bucketed query: one row per tag and bucket (Arrow IPC)",
    response_class=Response,
    responses=ARROW_RESPONSE,
)
async def history(
    tags: list[str] = Tags,
    start: str | None = Query(None, pattern=TIME_PATTERN, description="from (ISO 8601; default: the first)"),
    end: str | None = Query(None, pattern=TIME_PATTERN, description="until, excluded (ISO 8601)"),
    bucket: str = Query("1s", pattern=DURATION, description="bucket width (e.g. 1s, 1m, 1h)"),
    stats: list[Statistic] = Query([Statistic.avg, Statistic.min, Statistic.max, Statistic.count]),
    include_bad: bool = Query(False, description="count bad-quality values in the statistics"),
    api: EngineAPI = Depends(engine),
) -> Response:
    wanted = _check_tags(tags)
    since = parse_time(start) if start is not None else None
    until = parse_time(end) if end is not None else None
    if since is not None and until is not None and since >= until:
        raise ApiError("query.start: not before end", 422)
    statistics = list(dict.fromkeys(s.value for s in stats))
    more = {"include_bad": True} if include_bad else {}  # `aggregator query --include-bad`
    frame = await run_in_threadpool(api.live.history, wanted, since, until, bucket, statistics, **more)
    return arrow_response(frame)


@router.get(
    "/last-values",
    summary="The newest stored value of each tag (Arrow IPC)",
    response_class=Response,
    responses=ARROW_RESPONSE,
)
async def last_values(tags: list[str] = Tags, api: EngineAPI = Depends(engine)) -> Response:
    frame = await run_in_threadpool(api.live.last_values, _check_tags(tags))
    return arrow_response(frame)
