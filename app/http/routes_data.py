"""`/data/*`: what the Data page of a desktop app attached to the service reads (engine.data): the
historian's tables and views, a page of one, the read-only SQL console, and a whole table as a
download (CSV, Parquet or Excel).

Pages and query results answer as Arrow IPC streams (app/http/arrow.py); what goes with them rides
in headers: `X-Total` and `X-Offset` for a page, `X-Rows` and `X-Truncated` for a query.
"""

from __future__ import annotations

import enum
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from app.http.arrow import ARROW_RESPONSE, ARROW_STREAM, arrow_response
from app.http.deps import engine
from engine.api.protocol import EngineAPI

router = APIRouter(prefix="/data", tags=["data"])
MAX_PAGE = 100_000
MAX_SQL_ROWS = 1_000_000
EXPORT_TIMEOUT_S = 600.0
ExportFormat = enum.Enum("ExportFormat", {f: f for f in ("csv", "parquet", "xlsx")}, type=str)
MEDIA = {
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
ObjectName = PathParam(
    min_length=1, max_length=300, description="a table or view as GET /data/objects names it"
)


def _headers(**values: Any) -> dict[str, str]:
    return {f"X-{k.title()}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items()}


def _header_docs(**descriptions: str) -> dict[str, Any]:
    return {
        f"X-{k.title()}": {"description": v, "schema": {"type": "string"}} for k, v in descriptions.items()
    }


class SqlQuery(BaseModel):
    sql: str = Field(min_length=1, max_length=100_000, description="one read-only statement")
    limit: int = Field(10_000, ge=1, le=MAX_SQL_ROWS, description="at most this many rows come back")


@router.get("/objects", summary="The historian's tables and views: name, kind, estimated rows, columns")
def objects(api: EngineAPI = Depends(engine)) -> list[dict[str, Any]]:
    return api.data.objects()


@router.get(
    "/objects/{name}",
    summary="One page of a table or view (Arrow IPC; X-Total: its rows)",
    response_class=Response,
    responses={
        200: {
            **ARROW_RESPONSE[200],
            "headers": _header_docs(total="rows in the table", offset="the page's first row"),
        }
    },
)
async def preview_object(
    name: str = ObjectName,
    offset: int = Query(0, ge=0, le=2**62),
    limit: int = Query(200, ge=0, le=MAX_PAGE),
    api: EngineAPI = Depends(engine),
) -> Response:
    page = await run_in_threadpool(api.data.preview_object, name, offset, limit)
    return arrow_response(page["frame"], _headers(total=page["total"], offset=page["offset"]))


@router.post(
    "/sql",
    summary="Run one read-only statement on the historian (Arrow IPC; X-Truncated when cut at limit)",
    response_class=Response,
    responses={
        200: {
            **ARROW_RESPONSE[200],
            "headers": _header_docs(rows="rows answered", truncated="true when more rows were cut off"),
        }
    },
)
async def sql(query: SqlQuery, api: EngineAPI = Depends(engine)) -> Response:
    result = await run_in_threadpool(api.data.sql, query.sql, query.limit)
    return arrow_response(result["frame"], _headers(rows=result["rows"], truncated=result["truncated"]))


@router.get(
    "/objects/{name}/export",
    summary="A whole table or view as a file to download (CSV, Parquet or Excel)",
    response_class=FileResponse,
    responses={
        200: {"content": {m: {"schema": {"type": "string", "format": "binary"}} for m in MEDIA.values()}}
    },
)
async def export_object(
    name: str = ObjectName,
    format: ExportFormat = Query(ExportFormat.csv, description="csv, parquet or xlsx"),
    api: EngineAPI = Depends(engine),
) -> FileResponse:
    fmt = format.value
    folder = Path(tempfile.mkdtemp(prefix="export-"))
    target = folder / f"export.{fmt}"
    try:
        job = api.data.export_object(name, target, fmt)
        await run_in_threadpool(job.result, EXPORT_TIMEOUT_S)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    filename = "".join(c if c.isalnum() or c in "._-" else "_" for c in name) + f".{fmt}"
    return FileResponse(
        target,
        media_type=MEDIA[fmt],
        filename=filename,
        background=BackgroundTask(shutil.rmtree, folder, True),
    )


__all__ = ["ARROW_STREAM", "router"]
