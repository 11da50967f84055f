"""`/secrets`, `/demo` and `/runs/{id}/rerun`: what `RemoteEngine` needs besides the other routes.

Secrets: a value is write-only. It can be set (`PUT /secrets/{name}`), deleted and listed by name,
and a client can ask whether one is set; no route answers a value. A value sent is remembered for
masking (engine/secrets.py) before it is stored, so the service's log never shows it. The API
token's own secret is refused here: `aggregator token` manages it, and the running service keeps
the token it started with.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.http.deps import engine
from app.http.errors import ApiError, NotFound
from app.http.routes_runs import _kept_jobs
from engine.api.protocol import EngineAPI
from engine.errors import SecretError
from engine.secrets import remember
from engine.service.token import TOKEN_SECRET

router = APIRouter(tags=["admin"])
SECRET_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,127}$"
SecretName = PathParam(pattern=SECRET_NAME, description='the name pipelines use: {"secret": NAME}')
MAX_SECRET_CHARS = 65536


class SecretIn(BaseModel):
    """A secret's value (never answered back) and where to keep it."""

    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1, max_length=MAX_SECRET_CHARS, description="the value (write-only)")
    use_keyring: bool = Field(True, description="the OS keyring when there is one, else the encrypted file")


def _not_the_token(name: str) -> None:
    if name == TOKEN_SECRET:
        raise ApiError(
            f"secret '{name}' is the service's API token: `aggregator token` manages it, not the API", 403
        )


@router.get("/secrets", summary="The names of the secrets a config can refer to (never their values)")
def list_secrets(api: EngineAPI = Depends(engine)) -> list[dict[str, str]]:
    return [{"name": name} for name in api.connectors.secret_names()]


@router.get("/secrets/{name}", summary="Whether a secret has a value: {name, set, error} (never the value)")
def check_secret(name: str = SecretName, api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    try:
        api.connectors.check_secret(name)
    except SecretError as exc:
        return {"name": name, "set": False, "error": exc.one_line()}
    return {"name": name, "set": True, "error": None}


@router.put("/secrets/{name}", summary="Store a secret's value; answers where it went, not the value")
def set_secret(body: SecretIn, name: str = SecretName, api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    _not_the_token(name)
    remember(body.value)  # masked in every log line from now on
    stored_in = api.connectors.set_secret(name, body.value, use_keyring=body.use_keyring)
    return {"name": name, "stored_in": stored_in}


@router.delete("/secrets/{name}", status_code=204, summary="Delete a stored secret")
def delete_secret(name: str = SecretName, api: EngineAPI = Depends(engine)) -> Response:
    _not_the_token(name)
    if not api.connectors.delete_secret(name):
        raise NotFound(f"secret '{name}' is not stored (GET /secrets lists the names)")
    return Response(status_code=204)


@router.post("/demo", summary="Install the e-commerce example: {document, spec_path} to run")
def install_demo(api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    return api.pipelines.install_demo()


@router.post(
    "/runs/{run_id}/rerun",
    status_code=202,
    summary="Run again the pipeline version a run ran; answers the new job's id",
)
async def rerun(
    request: Request,
    run_id: str = PathParam(max_length=200),
    base_dir: str | None = Query(None, max_length=4096, description="folder relative paths resolve from"),
    api: EngineAPI = Depends(engine),
) -> dict[str, Any]:
    """As `POST /runs`: `GET /jobs/{id}/result` answers the new run's record when it ends."""
    if base_dir is not None and "\x00" in base_dir:
        raise ApiError("query.base_dir: a NUL character (allowed: a file path)", 422)
    if not run_id.strip():
        raise NotFound("run '' not found")
    await run_in_threadpool(api.runs.detail, run_id)  # an unknown run: 404 here, not a failed job
    job = api.runs.rerun(run_id, base_dir=base_dir)
    _kept_jobs(request)[job.id] = job
    return {"job_id": job.id, "kind": job.kind, "result_url": f"/jobs/{job.id}/result"}
