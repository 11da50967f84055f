"""What every route reads from the app: the engine behind it."""

from __future__ import annotations

from fastapi import Request

from engine.api.protocol import EngineAPI


async def engine(request: Request) -> EngineAPI:
    """A coroutine: FastAPI would run a plain function dependency on the thread pool."""
    return request.app.state.engine
