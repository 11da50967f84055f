"""Who calls: the bearer token of every request, and the principal it stands for.

Every route needs `Authorization: Bearer <token>` except `GET /health` and `GET /metrics`, which
answer a loopback client without it (a monitoring agent on the box needs no secret, while a client
on the network must send a token there too), and the login routes. The token is either
- the service's own API token (`aggregator token`; compared in constant time): admin, for
  automation and for the CLI next to the service, or
- a user's access token from `POST /auth/login` (a short-lived JWT, engine/auth/tokens.py): that
  user with the role the user has now.
A missing, wrong, tampered or expired token is 401. The principal is kept on the request; the routes
reach the engine through a view bound to it (app/http/deps.py), where the roles are checked.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.http.errors import ApiError
from engine.api.auth import LoginFailed, Principal

SERVICE_USER = "service-token"
CLIENT_SOURCES = (
    "cli",
    "gui",
)  # what a client may call itself in the X-Aggregator-Source header  # the name the audit trail gives to calls made with the API token

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="The service's API token: `aggregator token --data-dir D` prints it.",
)


class Unauthorized(ApiError):
    status_code = 401
    headers = {"WWW-Authenticate": 'Bearer realm="aggregator"'}


def _token_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is None or credentials.scheme.lower() != "bearer":
        return None
    return credentials.credentials


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison (of UTF-8 bytes: compare_digest refuses non-ASCII text)."""
    if not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "surrogateescape"))


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this machine (127.0.0.0/8, ::1, an IPv4-mapped loopback)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host == "localhost"
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


async def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """The dependency of every protected route: 401 without the token or with a wrong one. A
    coroutine: it never blocks, and FastAPI runs a plain function dependency on the thread pool
    (a thread hop per request)."""
    check_token(request, credentials)


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def client_source(request: Request) -> str:
    """What the client says it is (the CLI, the GUI), else "api": a label for the audit trail,
    never a right (the token says who calls)."""
    source = request.headers.get("x-aggregator-source", "")
    return source if source in CLIENT_SOURCES else "api"


def check_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The principal of the request's token (kept as `request.state.principal`); 401 otherwise."""
    given = _token_of(request, credentials)
    if given is None:
        raise Unauthorized("missing token: send the header 'Authorization: Bearer <token>'")
    client = client_address(request)
    source = client_source(request)
    if token_matches(request.app.state.token, given):
        principal = Principal(SERVICE_USER, "admin", source, client)
    else:
        users = getattr(request.app.state.engine, "users", None)
        if users is None or given.count(".") != 2:  # not a JWT: a wrong service token
            raise Unauthorized("wrong token (`aggregator token --data-dir D` prints the right one)")
        try:
            principal = users.authenticate(given, client=client, source=source)
        except LoginFailed as exc:
            raise Unauthorized(exc.one_line()) from None
    request.state.principal = principal
    return principal


async def loopback_or_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """`/health` and `/metrics`: open to this machine, the token for anyone else."""
    if is_loopback(request.client.host if request.client else None):
        return
    check_token(request, credentials)


DOC_PATHS = ("/docs", "/redoc", "/openapi.json", "/static-offline-docs/")


def guard_docs(app) -> None:
    """The API's description (`/docs`, `/openapi.json` and Swagger UI's files) follows the rule of
    `/health`: open to this machine (a browser cannot send a bearer token for them), the token for
    anyone else. A plain ASGI middleware: Starlette's BaseHTTPMiddleware would run every response,
    the event stream too, through a task of its own that cancels streams early."""
    app.add_middleware(DocsGuard, token=app.state.token)


class DocsGuard:
    def __init__(self, app, token: str):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(DOC_PATHS):
            client = scope.get("client")
            if not is_loopback(client[0] if client else None):
                header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
                scheme, _, given = header.partition(" ")
                if scheme.lower() != "bearer" or not token_matches(self.token, given.strip()):
                    from app.http.errors import error_response

                    response = error_response(
                        401,
                        "the API description is open to this machine only: send the token",
                        Unauthorized.headers,
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
