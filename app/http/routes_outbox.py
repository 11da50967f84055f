"""`/outbox`: the store-and-forward outboxes of the remote destinations (docs/delivery.md).

The same figures as `aggregator outbox status` and `/metrics` (per destination: pending, appended,
forwarded, dropped, quarantined, the oldest pending record's age and the link state), and the
quarantine of records the upstream refused for good: list, export as JSON, retry, delete. Thin
routes over `EngineAPI.outbox` (engine/api/outbox.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from app.http.deps import engine
from app.http.errors import ApiError, NotFound
from engine.api.protocol import EngineAPI
from engine.errors import DataError

router = APIRouter(tags=["outbox"])
MAX_NAME = 500
MAX_IDS = 1000
MAX_ID = 2**62  # SQLite's integers are 64-bit: a larger id can name no entry
EntryId = Annotated[int, Field(ge=1, le=MAX_ID)]


class OutboxStatus(BaseModel):
    """One destination's outbox. `link_state`: idle, connecting, up, down, stopped, or corrupt (the
    file could not be read: `link_detail` says why); the figures are absent for a corrupt one."""

    pipeline: str
    destination: str
    link_state: str
    link_detail: str | None = None
    connector_type: str | None = None
    pending_batches: int | None = None
    pending_records: int | None = Field(None, description="records waiting to be delivered")
    pending_bytes: int | None = Field(None, description="their size in the outbox")
    appended_records: int | None = Field(None, description="all records ever accepted (survives restarts)")
    forwarded_records: int | None = Field(None, description="records the upstream acknowledged")
    dropped_records: int | None = Field(None, description="records dropped by the byte cap (drop_oldest)")
    quarantined_records: int | None = Field(None, description="records ever sent to the quarantine")
    quarantine_entries: int | None = Field(None, description="entries in the quarantine now")
    quarantine_records_held: int | None = Field(None, description="records in the quarantine now")
    oldest_pending_age_s: float | None = Field(
        None, description="age of the oldest pending record; null: none"
    )
    cursor: int | None = None
    forwarder: str | None = Field(None, description="running or stopped")
    corrupt_set_aside: int | None = Field(None, description="corrupt outbox files set aside so far")
    last_set_aside: str | None = None
    file: str | None = None
    file_bytes: int | None = None


class QuarantineEntry(BaseModel):
    """A batch of records the upstream refused with a non-retryable error, after `tries` tries."""

    id: int
    pipeline: str
    destination: str
    created_at: str
    reason: str | None = None
    tries: int
    records: int
    bytes: int


class QuarantineAction(BaseModel):
    """Which entries of one destination's quarantine: `ids`, or every one with `all: true`."""

    model_config = ConfigDict(extra="forbid")
    pipeline: str = Field(min_length=1, max_length=MAX_NAME)
    destination: str = Field(min_length=1, max_length=MAX_NAME)
    ids: list[EntryId] | None = Field(None, max_length=MAX_IDS, description="quarantine entry ids")
    all: bool = Field(False, description="every entry of the destination")


class QuarantineResult(BaseModel):
    pipeline: str
    destination: str
    records: int = Field(description="records put back in the outbox (retry) or deleted (delete)")


class EdgeId(BaseModel):
    model_config = ConfigDict(extra="forbid")
    edge_id: str = Field(min_length=1, max_length=200, description="this box's id, in every idempotency key")


def _chosen(ids: list[int] | None, every: bool, action: str) -> list[int] | None:
    if every:
        if ids:
            raise ApiError(f"{action}: give ids or all, not both")
        return None
    if not ids:
        raise ApiError(f"{action}: name the entries (ids) or say all=true")
    return ids


def _call(fn, *args: Any) -> Any:
    """The engine's "no outbox for destination ..." is a 404 here."""
    try:
        return fn(*args)
    except DataError as exc:
        if str(exc).startswith("no outbox for"):
            raise NotFound(str(exc)) from None
        raise


@router.get("/outbox", summary="Per destination: pending, forwarded, dropped, quarantined, link state")
def outbox_status(api: EngineAPI = Depends(engine)) -> list[OutboxStatus]:
    return [OutboxStatus(**row) for row in api.outbox.status()]


@router.get("/outbox/quarantine", summary="The quarantined entries (optionally of one pipeline/destination)")
def quarantine_list(
    pipeline: str | None = Query(None, max_length=MAX_NAME),
    destination: str | None = Query(None, max_length=MAX_NAME),
    api: EngineAPI = Depends(engine),
) -> list[QuarantineEntry]:
    return [QuarantineEntry(**e) for e in api.outbox.quarantine(pipeline or None, destination or None)]


@router.get("/outbox/quarantine/export", summary="The quarantined records themselves, as JSON")
def quarantine_export(
    pipeline: str = Query(..., min_length=1, max_length=MAX_NAME),
    destination: str = Query(..., min_length=1, max_length=MAX_NAME),
    id: list[EntryId] | None = Query(None, max_length=MAX_IDS, description="entries (default: all)"),
    api: EngineAPI = Depends(engine),
) -> list[dict[str, Any]]:
    return _call(api.outbox.quarantine_records, pipeline, destination, id or None)


@router.post("/outbox/quarantine/retry", summary="Put quarantined records back in the outbox")
def quarantine_retry(body: QuarantineAction, api: EngineAPI = Depends(engine)) -> QuarantineResult:
    ids = _chosen(body.ids, body.all, "retry")
    n = _call(api.outbox.quarantine_retry, body.pipeline, body.destination, ids)
    return QuarantineResult(pipeline=body.pipeline, destination=body.destination, records=n)


@router.delete("/outbox/quarantine", summary="Delete quarantined records for good")
def quarantine_delete(
    pipeline: str = Query(..., min_length=1, max_length=MAX_NAME),
    destination: str = Query(..., min_length=1, max_length=MAX_NAME),
    id: list[EntryId] | None = Query(None, max_length=MAX_IDS, description="entries to delete"),
    all: bool = Query(False, description="every entry of the destination"),
    api: EngineAPI = Depends(engine),
) -> QuarantineResult:
    ids = _chosen(id, all, "delete")
    n = _call(api.outbox.quarantine_delete, pipeline, destination, ids)
    return QuarantineResult(pipeline=pipeline, destination=destination, records=n)


@router.get("/outbox/edge-id", summary="This box's id (part of every idempotency key)")
def get_edge_id(api: EngineAPI = Depends(engine)) -> EdgeId:
    return EdgeId(edge_id=api.outbox.edge_id())


@router.put("/outbox/edge-id", summary="Set this box's id (before the first delivery)")
def put_edge_id(body: EdgeId, api: EngineAPI = Depends(engine)) -> EdgeId:
    return EdgeId(edge_id=api.outbox.set_edge_id(body.edge_id))
