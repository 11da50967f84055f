"""`/dashboard/summary`: the desktop app's dashboard cards and health in one read (engine.health.
summary), for a desktop app attached to the service. "Today" starts at midnight in the time zone of
`now` as the client sends it (its own), not the service's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query

from app.http.deps import engine
from app.http.routes_runs import TIME_PATTERN, parse_time
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
    moment = None
    if now is not None:
        parse_time(now)  # a one-line 422 for what is no time
        moment = datetime.fromisoformat(now.replace("Z", "+00:00").replace(" ", "T", 1))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        # kept in the client's own offset: "today" starts at its midnight, not UTC's
    return api.health.summary(moment, recent)
