"""What every route reads from the app: the engine behind it."""

from __future__ import annotations

from fastapi import Request

from engine.api.protocol import EngineAPI


def engine(request: Request) -> EngineAPI:
    return request.app.state.engine
