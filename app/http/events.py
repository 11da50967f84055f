"""`GET /events`: the engine's events as Server-Sent Events, one `data:` line of JSON per event.

Each line is a typed event record's `to_dict()` (engine/api/events.py: `{"event": kind, ...}`), so
a client (the GUI's RemoteEngine) turns it back into the same record with `event_from_dict`. Besides
the engine's own events (run progress, stream statistics, source states, alarms), the stream
carries `tag_values` every `tag_interval` seconds: the live tags whose value changed since the last
one (`engine.live.tags()`; the first one has them all).

A slow client never holds the engine up: each client has a bounded queue, and what does not fit is
counted and said in an `events_dropped` event. A comment line every 15 s keeps proxies from closing
an idle stream. `close_streams(app)` ends every stream at once (a server shutting down does not wait
for clients that would never hang up).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.http.deps import engine
from app.http.shape import safe_json
from engine.api.events import as_event
from engine.api.protocol import EngineAPI

router = APIRouter(tags=["events"])
QUEUE_SIZE = 2000
HEARTBEAT_S = 15.0
POLL_S = 0.5  # how often a stream looks at its stop flag and the tag values while idle
KIND = r"^[a-z_]{1,50}(,[a-z_]{1,50}){0,50}$"


def close_streams(app: FastAPI) -> None:
    """End every open event stream (from any thread)."""
    app.state.streams_closing.set()


def _line(payload: dict[str, Any]) -> str:
    return "data: " + safe_json(payload) + "\n\n"


@router.get(
    "/events",
    summary="Server-Sent Events: run progress, stream statistics, source states, alarms, tag values",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def events(
    request: Request,
    kinds: str | None = Query(None, pattern=KIND, description="only these kinds, comma-separated"),
    job: str | None = Query(None, max_length=200, description="only the events of this job"),
    tag_interval: float = Query(1.0, ge=0, le=3600, description="seconds between tag_values (0: none)"),
    api: EngineAPI = Depends(engine),
) -> StreamingResponse:
    wanted = set(kinds.split(",")) if kinds else None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
    dropped = [0]

    def put(payload: dict[str, Any]) -> None:  # on the event loop
        try:
            queue.put_nowait(payload)
        except asyncio.QueueFull:
            dropped[0] += 1

    def on_event(event: Any) -> None:  # on an engine thread
        payload = as_event(event).to_dict()
        if wanted is not None and payload.get("event") not in wanted:
            return
        if job is not None and payload.get("job") != job:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: the stream is gone
            loop.call_soon_threadsafe(put, payload)

    unsubscribe = api.subscribe(on_event)
    send_tags = tag_interval > 0 and (wanted is None or "tag_values" in wanted) and job is None
    closing: threading.Event = request.app.state.streams_closing
    stream = _stream(api, queue, dropped, closing, unsubscribe, tag_interval if send_tags else 0.0)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    api: EngineAPI,
    queue: asyncio.Queue,
    dropped: list[int],
    closing: threading.Event,
    unsubscribe,
    tag_interval: float,
) -> AsyncIterator[str]:
    last_tags: dict[str, tuple] = {}
    next_tags = time.monotonic()
    last_sent = time.monotonic()
    try:
        yield "retry: 2000\n\n"
        while not closing.is_set():
            now = time.monotonic()
            if tag_interval and now >= next_tags:
                changed = await run_in_threadpool(_changed_tags, api, last_tags)
                next_tags = now + tag_interval
                if changed:
                    yield _line({"event": "tag_values", "tags": changed})
                    last_sent = time.monotonic()
            if dropped[0]:
                count, dropped[0] = dropped[0], 0
                yield _line({"event": "events_dropped", "count": count})
            wait = POLL_S if not tag_interval else max(0.0, min(POLL_S, next_tags - time.monotonic()))
            try:
                payload = await asyncio.wait_for(queue.get(), timeout=wait)
            except TimeoutError:
                if time.monotonic() - last_sent >= HEARTBEAT_S:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
                continue
            chunk = [_line(payload)]
            while not queue.empty() and len(chunk) < 200:  # a burst goes out in one write
                chunk.append(_line(queue.get_nowait()))
            yield "".join(chunk)
            last_sent = time.monotonic()
    finally:
        unsubscribe()


def _changed_tags(api: EngineAPI, last: dict[str, tuple]) -> list[dict[str, Any]]:
    """The live tags whose value, quality or time changed since `last` (updated in place)."""
    changed = []
    for row in api.live.tags():
        key = (row.get("value"), row.get("quality"), row.get("timestamp_us"))
        if last.get(row["tag"]) != key:
            last[row["tag"]] = key
            changed.append(row)
    return changed


def install(app: FastAPI, dependencies: list) -> None:
    app.state.streams_closing = threading.Event()
    app.include_router(router, dependencies=dependencies)


__all__ = ["close_streams", "install"]
