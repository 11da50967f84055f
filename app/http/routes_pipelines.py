"""`/pipelines`: the pipeline documents of the data directory, and running them.

A pipeline's `id` is its file name without the suffix for the user's own pipelines
(`<data dir>/pipelines/<id>.json`), and `example:<name>` / `template:<name>` for the shipped ones
(read-only). GET answers the document in graph form; POST and PUT take either form, as JSON or YAML.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from app.http.deps import engine
from app.http.documents import document_body, read_document
from app.http.errors import ApiError, NotFound, refuse_invalid_document
from app.http.routes_runs import RunStatus, run_filter
from engine.api.events import RunStarted, as_event
from engine.api.protocol import EngineAPI

router = APIRouter(prefix="/pipelines", tags=["pipelines"])
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(:[A-Za-z0-9][A-Za-z0-9_.-]{0,99})?$"
PipelineId = PathParam(
    pattern=ID_PATTERN, description="`name` of a file of yours, `example:name` of a shipped one"
)
RUN_ID_WAIT_S = 10.0  # how long `execute` waits for the run to be recorded (it answers its id)


def pipeline_id(entry: dict[str, Any]) -> str:
    stem = Path(entry["path"]).stem
    return stem if entry.get("origin") == "mine" else f"{entry.get('origin')}:{stem}"


def slug(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-.")
    return text[:100] or "pipeline"


def _item(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": pipeline_id(entry),
        "name": entry.get("name"),
        "description": entry.get("description", ""),
        "mode": entry.get("mode", ""),
        "origin": entry.get("origin"),
        "read_only": entry.get("origin") != "mine",
        "modified": entry.get("modified"),
        "error": entry.get("error") or None,
        "last_run": entry.get("last_run"),
        "path": entry.get("path"),
    }


def _find(api: EngineAPI, pid: str) -> dict[str, Any]:
    for entry in api.pipelines.list():
        if pipeline_id(entry) == pid:
            return entry
    raise NotFound(f"pipeline '{pid}' not found (GET /pipelines lists them)")


def _valid(api: EngineAPI, doc: dict[str, Any]) -> None:
    refuse_invalid_document(api.pipelines.validate(doc))


@router.get("", summary="Every pipeline: yours, the shipped examples and templates")
def list_pipelines(api: EngineAPI = Depends(engine)) -> list[dict[str, Any]]:
    return [_item(entry) for entry in api.pipelines.list()]


@router.post(
    "",
    status_code=201,
    summary="Store a new pipeline (linear or graph form)",
    openapi_extra=document_body(),
)
async def create_pipeline(
    request: Request,
    id: str | None = Query(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", description="default: from its name"
    ),
    api: EngineAPI = Depends(engine),
) -> dict[str, Any]:
    doc = await read_document(request)
    return await run_in_threadpool(_create, api, doc, id)


def _create(api: EngineAPI, doc: dict[str, Any], pid: str | None) -> dict[str, Any]:
    _valid(api, doc)
    pid = pid or slug(str(doc.get("name") or ""))
    if any(pipeline_id(e) == pid for e in api.pipelines.list()):
        raise ApiError(f"pipeline '{pid}' exists already (PUT /pipelines/{pid} replaces it)", 409)
    path = api.pipelines.folder() / f"{pid}.json"
    version = api.pipelines.save(path, doc)
    return {"id": pid, "name": doc.get("name"), "version": version, "path": str(path)}


@router.get("/{id}", summary="One pipeline, its document in graph form")
def get_pipeline(id: str = PipelineId, api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    entry = _find(api, id)
    read = api.pipelines.read(entry["path"])
    return {**_item(entry), "form": read["form"], "document": read["document"]}


@router.put(
    "/{id}", summary="Replace one of your pipelines (linear or graph form)", openapi_extra=document_body()
)
async def put_pipeline(
    request: Request, id: str = PipelineId, api: EngineAPI = Depends(engine)
) -> dict[str, Any]:
    doc = await read_document(request)
    return await run_in_threadpool(_replace, api, id, doc)


def _replace(api: EngineAPI, pid: str, doc: dict[str, Any]) -> dict[str, Any]:
    entry = _find(api, pid)
    if entry.get("origin") != "mine":
        raise PermissionError(f"pipeline '{pid}' is shipped with the app and read-only (POST a copy)")
    _valid(api, doc)
    version = api.pipelines.save(entry["path"], doc)
    return {"id": pid, "name": doc.get("name"), "version": version, "path": entry["path"]}


@router.delete("/{id}", status_code=204, summary="Delete one of your pipelines")
def delete_pipeline(id: str = PipelineId, api: EngineAPI = Depends(engine)) -> Response:
    entry = _find(api, id)
    if entry.get("origin") != "mine":
        raise PermissionError(f"pipeline '{id}' is shipped with the app and cannot be deleted")
    api.pipelines.delete(entry["path"])
    return Response(status_code=204)


@router.post("/{id}/execute", status_code=202, summary="Run a pipeline now; answers its job and run id")
def execute_pipeline(id: str = PipelineId, api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    entry = _find(api, id)
    doc = api.pipelines.read(entry["path"])["document"]
    return start_run(api, doc, spec_path=entry["path"], trigger="api")


def start_run(api: EngineAPI, doc: dict[str, Any], *, spec_path: str | None, trigger: str) -> dict[str, Any]:
    """Start a run and wait (briefly) until it is recorded, to answer its run id. A pipeline that
    fails before its run starts (invalid, a secret missing) raises its error here: a 4xx."""
    started: dict[str, str] = {}
    seen = threading.Event()

    def note(event: Any) -> None:
        record = as_event(event)
        if isinstance(record, RunStarted) and record.job:
            started.setdefault(record.job, record.run_id)
            seen.set()

    unsubscribe = api.subscribe(note)
    try:
        job = api.runs.start(doc, spec_path=spec_path, trigger=trigger)
        deadline = time.monotonic() + RUN_ID_WAIT_S
        while job.id not in started and not job.done() and time.monotonic() < deadline:
            seen.wait(0.05)
            seen.clear()
    finally:
        unsubscribe()
    run_id = started.get(job.id)
    if run_id is None and job.done():
        record = job.result()  # an error before the run started is raised here
        run_id = (record or {}).get("run_id")
    return {
        "job_id": job.id,
        "run_id": run_id,
        "status_url": f"/runs/{run_id}" if run_id else None,
    }


@router.get("/{id}/runs", summary="The runs of one pipeline, newest first")
def pipeline_runs(
    id: str = PipelineId,
    status: RunStatus | None = Query(None),
    limit: int = Query(50, ge=1, le=10_000),
    api: EngineAPI = Depends(engine),
) -> list[dict[str, Any]]:
    entry = _find(api, id)
    return api.runs.list(run_filter(entry.get("name"), status, limit))
