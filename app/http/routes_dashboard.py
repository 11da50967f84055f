"""`/dashboard/summary`: the desktop app's dashboard cards and health in one read (engine.health.
summary), for a desktop app attached to the service. "Today" starts at midnight in the time zone of
`now` as the client sends it (its own), not the service's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from app.http.deps import engine
from app.http.routes_runs import TIME_PATTERN, parse_moment
from engine.api.protocol import EngineAPI

router = APIRouter(prefix="/dashboard", tags=["monitoring"])


@router.get("/summary", summary="The dashboard's cards (today's runs, rows, failures, streams) and health")
def summary(
    now: str | None = Query(
        None, pattern=TIME_PATTERN, description="the client's time with its offset: today is its day"
    ),
    recent: int = Query(0, ge=0, le=1000, description="the newest runs to include (recent_runs)"),
    api: EngineAPI = Depends(engine),
) -> dict[str, Any]:
    # kept in the client's own offset: "today" starts at its midnight, not UTC's
    moment = parse_moment(now) if now is not None else None
    return api.health.summary(moment, recent)
