"""`/alerts`: the alerts of the pipelines' `error_handling.alerts` rules (docs/alerts.md).

List (open ones, or all; by severity or pipeline), one alert, the open ones counted by severity,
the notification figures, and `POST /alerts/{id}/acknowledge` (who and a note). Thin routes over
`EngineAPI.alerts` (engine/api/alerts.py); `/monitoring/alerts` shows the open ones too.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from app.http.deps import engine
from app.http.errors import ApiError, NotFound
from engine.api.protocol import EngineAPI
from engine.errors import DataError

router = APIRouter(tags=["alerts"])
MAX_ID = 2**62


class Alert(BaseModel):
    """One alert. `state`: active, acknowledged (still open) or cleared (closed)."""

    model_config = ConfigDict(extra="allow")

    id: int
    pipeline: str
    subject: str = Field(description="what it is about: the pipeline, a source, a tag, an outbox")
    kind: str = Field(description="the condition's type (pipeline_failed, source_lost, tag, ...)")
    condition: str
    severity: Literal["info", "warning", "critical"]
    state: Literal["active", "acknowledged", "cleared"]
    message: str | None = None
    value: float | None = None
    raised_at: str
    acknowledged_at: str | None = None
    acknowledged_by: str | None = None
    ack_note: str | None = None
    cleared_at: str | None = None


class Acknowledge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str | None = Field(None, max_length=200, description="who acknowledges (default: 'api')")
    note: str | None = Field(None, max_length=2000)


def _known(exc: DataError) -> Exception:
    text = str(exc)
    if "no alert with id" in text:
        return NotFound(text)
    return ApiError(text, 409)


@router.get("/alerts", summary="Alerts, newest first: the open ones, or all")
def list_alerts(
    all: bool = Query(False, description="cleared ones too"),
    severity: Literal["info", "warning", "critical"] | None = Query(None),
    pipeline: str | None = Query(None, max_length=500),
    limit: int = Query(500, ge=1, le=10_000),
    api: EngineAPI = Depends(engine),
) -> list[Alert]:
    return [Alert(**a) for a in api.alerts.list(not all, severity, pipeline, limit)]


@router.get("/alerts/counts", summary="Open alerts by severity")
def alert_counts(api: EngineAPI = Depends(engine)) -> dict[str, int]:
    return api.alerts.counts()


@router.get("/alerts/notifications", summary="Notifications delivered and failed per channel, and pending")
def alert_notifications(api: EngineAPI = Depends(engine)) -> dict[str, int]:
    return api.alerts.notifications()


@router.get("/alerts/{alert_id}", summary="One alert")
def get_alert(alert_id: int = Path(ge=1, le=MAX_ID), api: EngineAPI = Depends(engine)) -> Alert:
    try:
        return Alert(**api.alerts.get(alert_id))
    except DataError as exc:
        raise _known(exc) from None


@router.post("/alerts/{alert_id}/acknowledge", summary="Acknowledge an open alert (who, a note)")
def acknowledge(
    body: Acknowledge | None = None,
    alert_id: int = Path(ge=1, le=MAX_ID),
    api: EngineAPI = Depends(engine),
) -> Alert:
    body = body or Acknowledge()
    try:
        return Alert(**api.alerts.acknowledge(alert_id, body.by or "api", body.note))
    except DataError as exc:
        raise _known(exc) from None


__all__ = ["router"]
