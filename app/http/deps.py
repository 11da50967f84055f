"""What every route reads from the app: the engine behind it, as the caller may use it."""

from __future__ import annotations

from fastapi import Request

from engine.api.protocol import EngineAPI


def guarded(request: Request) -> EngineAPI:
    """The engine as the request's principal may use it (engine/auth/guard.py): every call checked
    against the roles, changes and denials audited. A route reached without a principal (the open
    ones: /health, /metrics) reads through the engine itself."""
    api = request.app.state.engine
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return api
    as_principal = getattr(api, "as_principal", None)
    if as_principal is None:  # an engine without users (a stand-in): checked, not audited here
        from engine.api.auth import GuardedEngine

        return GuardedEngine(api, principal)
    return as_principal(principal)


async def engine(request: Request) -> EngineAPI:
    """A coroutine: FastAPI would run a plain function dependency on the thread pool."""
    return guarded(request)
