"""`/health`, `/metrics`, `/transformations`, `/validate` and `/preview`."""

from __future__ import annotations

import concurrent.futures
import time
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.http.auth import loopback_or_token, require_token
from app.http.deps import engine
from app.http.documents import document_body, read_document
from app.http.errors import ApiError
from app.http.shape import frame_columns, frame_rows
from engine.api.protocol import EngineAPI

open_router = APIRouter(tags=["service"], dependencies=[Depends(loopback_or_token)])
router = APIRouter(tags=["pipelines"], dependencies=[Depends(require_token)])
PREVIEW_TIMEOUT_S = 120.0


def version() -> str:
    try:
        return metadata.version("data-aggregator")
    except metadata.PackageNotFoundError:
        return "unknown"


@open_router.get("/health", summary="Is the service up: status, version, uptime, data directory")
def health(request: Request, api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    state = api.state
    return {
        "status": "ok" if state == "ready" else state,
        "version": version(),
        "uptime_s": round(time.monotonic() - request.app.state.started, 3),
        "data_dir": str(api.data_dir),
        "listen_host": request.app.state.listen_host,
        "engine": state,
        "running_jobs": api.running_jobs(),
    }


@open_router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics()
    return Response(body, media_type=content_type)


@router.get("/transformations", summary="The transformations catalog, each with its config schema")
def transformations(api: EngineAPI = Depends(engine)) -> list[dict[str, Any]]:
    return api.pipelines.transformations()


@router.post(
    "/validate",
    summary="Validate a pipeline document: every issue with its path",
    openapi_extra=document_body(),
)
async def validate(request: Request, api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    doc = await read_document(request)
    issues = await run_in_threadpool(api.pipelines.validate, doc)
    return {"valid": not issues, "issues": issues}


@router.post(
    "/preview",
    summary="Dry run: the first rows at each node; nothing is written",
    openapi_extra=document_body("the pipeline document to preview"),
)
async def preview(
    request: Request,
    node: str | None = Query(None, max_length=200, description="only this node (and what feeds it)"),
    limit: int = Query(10, ge=1, le=1000, description="rows per node"),
    base_dir: str | None = Query(None, max_length=4096, description="folder relative paths resolve from"),
    timeout: float = Query(PREVIEW_TIMEOUT_S, ge=1, le=600, description="seconds to wait for it"),
    arrow: bool = Query(False, description="each port's rows also as an Arrow IPC stream (base64, `arrow`)"),
    api: EngineAPI = Depends(engine),
) -> dict[str, Any]:
    doc = await read_document(request)
    if base_dir is not None and "\x00" in base_dir:
        raise ApiError("query.base_dir: a NUL character (allowed: a folder path)", 422)
    job = api.runs.preview(doc, node_id=node, limit=limit, base_dir=base_dir)
    try:
        result = await run_in_threadpool(job.result, timeout)
    except concurrent.futures.TimeoutError:
        job.cancel()
        # the client's own limit (408): it may ask again with a longer `timeout`
        raise ApiError(
            f"query.timeout: no preview within {timeout:g} s (cancelled; allowed: up to 600)", 408
        ) from None
    return {
        "node": result.node,
        "ports": [
            {
                "node": p.node,
                "port": p.port,
                "rows_total": p.rows_total,
                "columns": frame_columns(p.rows),
                "rows": frame_rows(p.rows, limit),
                **({"arrow": arrow_text(p.rows.head(limit))} if arrow else {}),
            }
            for p in result.ports.values()
        ],
        "stats": result.stats,
        "live_sampled": result.live_sampled,
        "live_problems": result.live_problems,
    }


def arrow_text(frame: Any) -> str:
    """A frame as a base64 Arrow IPC stream: `aggregator preview` next to a service reads the rows
    back with their own types, so it prints what a local preview prints."""
    import base64
    import io

    buffer = io.BytesIO()
    frame.write_ipc_stream(buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
