"""`/auth/login`, `/auth/refresh` (open, rate limited per client address), `/auth/me` and
`/auth/status`; `/users` (admin) and `/audit` (admin). Every call goes through the engine's view of
the caller (app/http/deps.py): the roles are checked there, not here."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.http.auth import client_address, client_source
from app.http.deps import engine
from app.http.errors import NotFound
from app.http.ratelimit import RateLimiter
from app.http.routes_runs import _utc
from engine.api.protocol import EngineAPI

open_router = APIRouter(tags=["auth"])  # no token: this is how one gets one
router = APIRouter(tags=["users"])
USER_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$"
UserName = PathParam(pattern=USER_NAME, description="the user's name")
Role = Field(pattern="^(viewer|editor|admin)$", description="viewer, editor or admin")
Password = Field(min_length=1, max_length=1024, description="write-only; never answered or logged")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Password


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=1, max_length=512)


class Tokens(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str
    user: str
    role: str


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=USER_NAME)
    role: str = Role
    password: str = Password


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Role


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Password


def _limiter(request: Request) -> RateLimiter:
    limiter = getattr(request.app.state, "login_limiter", None)
    if limiter is None:
        limiter = request.app.state.login_limiter = RateLimiter()
    return limiter


@open_router.post(
    "/auth/login", summary="Log in: an access token (15 min) and a refresh token", response_model=Tokens
)
async def login(body: LoginIn, request: Request) -> dict[str, Any]:
    client = client_address(request)
    _limiter(request).check(client)
    users = request.app.state.engine.users
    return await run_in_threadpool(users.login, body.username, body.password, client, client_source(request))


@open_router.post(
    "/auth/refresh", summary="A new token pair for a refresh token (which is spent)", response_model=Tokens
)
async def refresh(body: RefreshIn, request: Request) -> dict[str, Any]:
    client = client_address(request)
    _limiter(request).check(client, "refresh attempts")
    users = request.app.state.engine.users
    return await run_in_threadpool(users.refresh, body.refresh_token, client, client_source(request))


@open_router.get("/auth/status", summary="Whether the service has users (a client then asks for a login)")
def status(request: Request) -> dict[str, Any]:
    return {"users": request.app.state.engine.users.has_users()}


@router.get(
    "/auth/me", summary="Who the token stands for: user, role, source, client, and what the role may do"
)
def me(api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    from engine.api.auth import rules_for

    who = api.users.me()
    return {**who, "permissions": rules_for(who["role"])}


@router.get("/users", summary="The users (admin): name, role, created, locked until; never a password")
def list_users(api: EngineAPI = Depends(engine)) -> list[dict[str, Any]]:
    return api.users.list()


@router.post("/users", status_code=201, summary="Add a user (admin)")
def add_user(body: UserIn, api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    return api.users.add(body.name, body.role, body.password)


@router.put("/users/{name}/role", summary="Change a user's role (admin)")
def set_role(body: RoleIn, name: str = UserName, api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    return api.users.set_role(name, body.role)


@router.put("/users/{name}/password", status_code=204, summary="Set a user's password (admin, or the user)")
def set_password(body: PasswordIn, name: str = UserName, api: EngineAPI = Depends(engine)) -> Response:
    api.users.set_password(name, body.password)
    return Response(status_code=204)


@router.delete("/users/{name}", status_code=204, summary="Delete a user (admin)")
def delete_user(name: str = UserName, api: EngineAPI = Depends(engine)) -> Response:
    if not api.users.delete(name):
        raise NotFound(f"user '{name}' not found (GET /users lists them)")
    return Response(status_code=204)


@router.get(
    "/audit",
    summary="The audit trail (admin), newest first; `format=csv` for a CSV file",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def audit(
    user: str | None = Query(None, max_length=64),
    action: str | None = Query(
        None, max_length=100, description="an action or its prefix: users, runs.start"
    ),
    since: str | None = Query(None, max_length=40, description="ISO 8601 time or date, inclusive"),
    until: str | None = Query(None, max_length=40, description="ISO 8601 time or date, exclusive"),
    outcome: str | None = Query(None, pattern="^(ok|denied|failed)$"),
    limit: int = Query(1000, ge=1, le=100_000),
    format: str = Query("json", pattern="^(json|csv)$"),
    api: EngineAPI = Depends(engine),
) -> Any:
    entries = api.audit.list(user, action, _utc(since), _utc(until), outcome, limit)
    if format == "csv":
        from engine.api.auth import to_csv

        return Response(
            to_csv(entries),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
        )
    return entries


@router.get("/audit/verify", summary="Check the audit trail's hash chain (admin): ok, entries, head hash")
def verify(api: EngineAPI = Depends(engine)) -> dict[str, Any]:
    return api.audit.verify()
