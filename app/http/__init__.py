"""The service's local HTTP API (FastAPI): thin routes over `EngineAPI`.

`create_app(engine, token=..., listen_host=...)` builds it; `aggregator serve` (app/serve.py) runs it
with uvicorn. Every route parses its request, calls one EngineAPI method and shapes the answer: no
SQL, no store, no runner here. The OpenAPI document is at `/openapi.json`, Swagger UI at `/docs`
(served from the installed fastapi-offline package: no CDN, the box may have no internet).

Security: a bearer token on every route except `GET /health` and `GET /metrics`, which are open to
loopback clients only, and the login routes (app/http/auth.py): the service's token (admin) or a
user's access token from `POST /auth/login`. Roles are checked in the engine's view of the caller
(app/http/deps.py, engine/auth/), not in the routes. Errors: one line of JSON, never a 5xx for anything a
client sends (app/http/errors.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from app.http import auth, errors, events
from app.http.auth import require_token
from app.http.errors import ERROR_RESPONSES
from app.http.routes_admin import router as admin_router
from app.http.routes_alerts import router as alerts_router
from app.http.routes_auth import open_router as login_router
from app.http.routes_auth import router as users_router
from app.http.routes_connectors import router as connectors_router
from app.http.routes_dashboard import router as dashboard_router
from app.http.routes_data import router as data_router
from app.http.routes_live import router as live_router
from app.http.routes_monitoring import router as monitoring_router
from app.http.routes_outbox import router as outbox_router
from app.http.routes_pipelines import router as pipelines_router
from app.http.routes_runs import router as runs_router
from app.http.routes_system import open_router, version
from app.http.routes_system import router as system_router
from app.http.shape import SafeJSONResponse
from engine.api.protocol import EngineAPI

API_TITLE = "Data Aggregator service"


def default_metrics() -> tuple[bytes, str]:
    """The metrics registry of the service (engine/service/metrics.py), else prometheus-client's
    default one (process metrics)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def create_app(
    engine: EngineAPI,
    *,
    token: str,
    listen_host: str = "127.0.0.1",
    metrics: Callable[[], tuple[bytes, str]] | None = None,
) -> FastAPI:
    """The API over `engine`. `token` is the bearer token (engine/service/token.py); `listen_host` the
    address the server listens on (shown by /health); `metrics` answers `/metrics` with (body,
    content type)."""
    if not token:
        raise ValueError("the API needs a token")
    app = FastAPIOffline(
        title=API_TITLE,
        version=version(),
        description=(
            "The local API of `aggregator serve`. Send `Authorization: Bearer <token>`: the service's "
            "token (`aggregator token` prints it; admin) or a user's access token from `POST /auth/login`"
            " (the user's role); `/health` and `/metrics` are open to this machine only."
        ),
        default_response_class=SafeJSONResponse,
        swagger_ui_parameters={"validatorUrl": None},  # Swagger UI would ask validator.swagger.io
        responses=ERROR_RESPONSES,
    )
    app.state.engine = engine
    app.state.token = token
    app.state.listen_host = listen_host
    app.state.started = time.monotonic()
    app.state.metrics = metrics or default_metrics
    errors.install(app)
    auth.guard_docs(app)
    protected = [Depends(require_token)]
    app.include_router(open_router)
    app.include_router(system_router)
    for router in (
        pipelines_router,
        runs_router,
        connectors_router,
        monitoring_router,
        live_router,
        data_router,
        dashboard_router,
        outbox_router,
    ):
        app.include_router(router, dependencies=protected)
    app.include_router(admin_router, dependencies=protected)  # secrets, demo, rerun (routes_admin.py)
    app.include_router(alerts_router, dependencies=protected)  # /alerts (routes_alerts.py)
    app.include_router(login_router)  # /auth/login, /auth/refresh: open, rate limited (routes_auth.py)
    app.include_router(users_router, dependencies=protected)  # /auth/me, /users, /audit
    events.install(app, protected)
    return app


__all__ = ["create_app", "events"]
