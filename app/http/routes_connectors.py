"""`/connectors`: saved connector configurations (secrets only as `{"secret": NAME}` references)."""

from __future__ import annotations

import concurrent.futures
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from app.http.deps import engine
from app.http.errors import ApiError, NotFound
from engine.api.protocol import EngineAPI

router = APIRouter(prefix="/connectors", tags=["connectors"])
NAME = r"^\S(.{0,198}\S)?$"  # no leading or trailing blanks: the engine strips them
ConnectorName = PathParam(pattern=NAME, max_length=200)
TEST_TIMEOUT_S = 30.0


class ConnectorIn(BaseModel):
    """A saved connector: its type, role and config (secrets as `{"secret": NAME}`)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME, max_length=200)
    connector_type: str = Field(min_length=1, max_length=100)
    role: Literal["source", "destination"]
    config: dict[str, Any] = Field(default_factory=dict)


class ConnectorUpdate(BaseModel):
    """A connector's new type, role and config; `name` renames it."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, pattern=NAME, max_length=200)
    connector_type: str = Field(min_length=1, max_length=100)
    role: Literal["source", "destination"]
    config: dict[str, Any] = Field(default_factory=dict)


def _existing(api: EngineAPI, name: str) -> dict[str, Any]:
    found = api.connectors.get(name)
    if found is None:
        raise NotFound(f"connector '{name}' not found (GET /connectors lists them)")
    return found


def _checked(api: EngineAPI, body: ConnectorIn | ConnectorUpdate) -> None:
    """What is wrong with the config, every field at once, before anything is stored."""
    known = [t.get("connector_type") for t in api.connectors.types()]
    if body.connector_type not in known:
        raise ApiError(
            f"body.connector_type: unknown type '{body.connector_type}' (allowed: {', '.join(map(str, known))})",
            422,
        )
    issues = api.connectors.check(body.connector_type, body.role, body.config)
    if issues:
        first = issues[0]
        where = f"body.config.{first['path']}" if first.get("path") else "body.config"
        more = f" (+{len(issues) - 1} more)" if len(issues) > 1 else ""
        raise ApiError(f"{where}: {first['message']}{more}", 422, issues=issues)


@router.get("", summary="Saved connectors")
def list_connectors(api: EngineAPI = Depends(engine)) -> list[dict[str, Any]]:
    return [{"id": c["name"], **c} for c in api.connectors.list()]


@router.post("", status_code=201, summary="Save a new connector")
def create_connector(body: ConnectorIn, api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    if api.connectors.get(body.name) is not None:
        raise ApiError(
            f"connector '{body.name}' exists already (PUT /connectors/{body.name} replaces it)", 409
        )
    _checked(api, body)
    saved = api.connectors.save(body.name, body.connector_type, body.role, body.config)
    return {"id": saved.get("name", body.name), **saved}


@router.get("/{name}", summary="One saved connector")
def get_connector(name: str = ConnectorName, api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    found = _existing(api, name)
    return {"id": found["name"], **found}


@router.put("/{name}", summary="Replace a saved connector (and rename it with `name`)")
def put_connector(
    body: ConnectorUpdate, name: str = ConnectorName, api: EngineAPI = Depends(engine)
) -> dict[str, Any]:
    _existing(api, name)
    new_name = body.name or name
    if new_name != name and api.connectors.get(new_name) is not None:
        raise ApiError(f"body.name: connector '{new_name}' exists already", 409)
    _checked(api, body)
    saved = api.connectors.save(new_name, body.connector_type, body.role, body.config, previous_name=name)
    return {"id": saved.get("name", new_name), **saved}


@router.delete("/{name}", status_code=204, summary="Delete a saved connector")
def delete_connector(name: str = ConnectorName, api: EngineAPI = Depends(engine)) -> Response:
    if not api.connectors.delete(name):
        raise NotFound(f"connector '{name}' not found (GET /connectors lists them)")
    return Response(status_code=204)


@router.post("/{name}/test", summary="Test a saved connector's connection: {ok, error, detail, seconds}")
def test_connector(
    name: str = ConnectorName,
    timeout: float = Query(TEST_TIMEOUT_S, gt=0, le=300, description="seconds to wait for the answer"),
    api: EngineAPI = Depends(engine),
) -> dict[str, Any]:
    found = _existing(api, name)
    job = api.connectors.test(found["connector_type"], found["role"], found["config"], name=name)
    try:
        return {"name": name, **job.result(timeout)}
    except concurrent.futures.TimeoutError:
        job.cancel()
        return {
            "name": name,
            "ok": False,
            "error": f"no answer within {timeout:g} s",
            "detail": None,
            "seconds": timeout,
        }
