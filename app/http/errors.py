"""One-line JSON errors: every 4xx and 5xx answer is `{"error": "<one line saying where and what>"}`.

A request the client got wrong is always a 4xx, never a 5xx:
- a request that does not fit the route (body, query, path): 422, `body.nodes[2].type: ...`;
- the engine's own errors (`AggregatorError`) by kind: an invalid pipeline (`SpecError`) 422 with
  every issue in `issues`, something that does not exist 404, a conflict 409, a usage error 400,
  a refused operation (`PermissionError`, e.g. deleting a shipped example, and `PermissionDenied`:
  the caller's role may not) 403, a refused login or token 401, anything else the engine refuses
  on purpose 422;
- only a real fault of the server (an exception nobody raised on purpose) is a 500: its traceback is
  logged (masked), the client gets one line and no traceback.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine import errors as engine_errors
from engine.limits import shorten
from engine.secrets import mask

log = logging.getLogger("aggregator.http")
MAX_ERROR_CHARS = 500
_NOT_FOUND = re.compile(r"\bnot found\b")


class ErrorBody(BaseModel):
    """Every error answer: one line saying where and what (`issues`: each problem, when several)."""

    error: str
    issues: list[dict[str, Any]] | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "the request is wrong: one line says where and what"},
}


class ApiError(Exception):
    """An error of the HTTP layer itself, with its status code (and headers)."""

    status_code = 400
    headers: dict[str, str] | None = None

    def __init__(self, message: str, status_code: int | None = None, **more: Any):
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.more = more  # more keys of the answer (a validation's `issues`)


class NotFound(ApiError):
    status_code = 404


def refuse_invalid_document(issues: list[dict[str, Any]]) -> None:
    """A pipeline document with issues (`api.pipelines.validate`) is refused with 422: the first
    issue on one line, as `aggregator validate` says it, `(+N more)`, every issue in `issues`."""
    if not issues:
        return
    first = issues[0]
    line = f"{first['path']}: {first['message']}" if first.get("path") else first["message"]
    if first.get("allowed"):
        line += f" (allowed: {first['allowed']})"
    more = f" (+{len(issues) - 1} more)" if len(issues) > 1 else ""
    raise ApiError(f"body: {line}{more}", 422, issues=issues)


def one_line(text: Any) -> str:
    """`text` on one line, secrets masked, cut to a readable length."""
    line = " ".join(str(text).split()) or "error"
    return shorten(mask(line), MAX_ERROR_CHARS)


def error_response(status: int, message: Any, headers: dict | None = None, **more: Any) -> JSONResponse:
    return JSONResponse({"error": one_line(message), **more}, status_code=status, headers=headers)


def json_path(loc: tuple | list) -> str:
    """A pydantic location as a JSON path: ('body', 'nodes', 2, 'type') -> body.nodes[2].type."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "request"


def _validation_line(error: dict) -> str:
    where = json_path(error.get("loc") or ())
    message = str(error.get("msg") or "invalid").removeprefix("Value error, ")
    expected = (error.get("ctx") or {}).get("expected")
    if expected and "expected" not in message and "should be" not in message:
        message += f" (allowed: {expected})"
    return f"{where}: {message}"


def _status_of(exc: Exception) -> int:
    """The HTTP status of an engine error, by its kind."""
    from engine.api.auth import LoginFailed, PermissionDenied

    if isinstance(exc, PermissionDenied):  # the role may not (engine/auth/permissions.py)
        return 403
    if isinstance(exc, LoginFailed):
        return 401
    named = {"UserNotFound": 404, "UserExists": 409}.get(type(exc).__name__)
    if named:
        return named
    by_name = (
        ("NotFoundError", 404),
        ("ConflictError", 409),
        ("UsageError", 400),
        ("SpecError", 422),
        ("RunCancelled", 409),
    )
    for name, status in by_name:
        cls = getattr(engine_errors, name, None)
        if cls is not None and isinstance(exc, cls):
            return status
    # The engine says "run 'x' not found" with a DataError (engine/api/protocol.py) until it has a
    # NotFoundError of its own (looked up above by name).
    if isinstance(exc, engine_errors.DataError) and _NOT_FOUND.search(str(exc)):
        return 404
    return 422


def install(app: FastAPI) -> None:
    """The exception handlers of the API."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        lines = [_validation_line(e) for e in errors] or ["request: invalid"]
        more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        issues = [{"path": line.split(": ", 1)[0], "message": line.split(": ", 1)[-1]} for line in lines]
        return error_response(422, lines[0] + more, issues=issues[:50])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc, headers=exc.headers, **exc.more)

    @app.exception_handler(engine_errors.AggregatorError)
    async def engine_error(request: Request, exc: engine_errors.AggregatorError) -> JSONResponse:
        status = _status_of(exc)
        if isinstance(exc, engine_errors.SpecError):
            issues = [issue.to_dict() for issue in exc.issues[:200]]
            return error_response(status, exc.one_line(), issues=issues)
        headers = {"WWW-Authenticate": 'Bearer realm="aggregator"'} if status == 401 else None
        return error_response(status, exc.one_line(), headers=headers)

    @app.exception_handler(PermissionError)
    async def refused(request: Request, exc: PermissionError) -> JSONResponse:
        return error_response(403, exc)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "internal error on %s %s: %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            mask(str(exc)),
            exc_info=exc,
        )
        return error_response(
            500, f"internal error: {type(exc).__name__} (the service's log has the details)"
        )
