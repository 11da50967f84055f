"""`engine.live` of a `RemoteEngine`: the service's tags, ring buffers and historian over `/live/*`.

Most calls are blocking HTTP reads that a GUI runs through `engine.call`, as it does a local
engine's historian reads. Two calls the Live page makes on its own thread, because in process they
are memory reads, stay memory reads here:

- `windows(tags, since_us)` answers from a local copy of the service's ring buffers for the tags
  charted now, and asks a client thread to bring it up to date: one `GET /live/windows` per refresh
  for all the tags, from the newest point held (only new points cross the wire, as Arrow). A chart
  therefore shows the service's points one refresh late (the page refreshes several times a second).
- `throughput()` answers the last `GET /live/throughput` and starts the next one in the background.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from engine.api.remote.client import ServiceClient
from engine.api.remote.wire import get_frame, when

KEEP_S = 3600.0  # the local copy keeps at most this much of each tag's window...
FORGET_S = 60.0  # ...and forgets a tag no chart asked for within this long
MAX_POINTS = 200_000  # per tag (a ring buffer holds fewer)


def _empty():
    import numpy as np

    return np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.uint8)


def series_of(frame) -> dict[str, tuple[Any, Any, Any]]:
    """The wire's long frame (tag, timestamp_us, value, quality) as {tag: (ts, values, quality)}."""
    import numpy as np

    result: dict[str, tuple[Any, Any, Any]] = {}
    if frame.height == 0:
        return result
    for (tag,), part in frame.group_by("tag", maintain_order=True):
        result[str(tag)] = (
            part["timestamp_us"].to_numpy().astype(np.int64, copy=False),
            part["value"].to_numpy().astype(np.float64, copy=False),
            part["quality"].to_numpy().astype(np.uint8, copy=False),
        )
    return result


class RemoteLive:
    """The live part of a `RemoteEngine` (`engine.live`)."""

    def __init__(self, client: ServiceClient):
        self._client = client
        self._lock = threading.Lock()
        self._held: dict[str, tuple[Any, Any, Any]] = {}  # tag -> the local copy of its window
        self._asked: dict[str, float] = {}  # tag -> monotonic time a chart last asked for it
        self._since: dict[str, int] = {}  # tag -> the oldest moment asked for (µs)
        self._fetching = False
        self._throughput: dict[str, float] = {}
        self._throughput_busy = False

    # ---- blocking reads (run them through engine.call) ---------------------------------------
    def tags(self, wait: bool = False) -> list[dict[str, Any]]:
        """Every tag with its newest value (the service's `engine.live.tags()`)."""
        return self._client.get("/live/tags")

    def window(self, tag: str, since_us: int | None = None) -> tuple[Any, Any, Any]:
        """(timestamps µs, values, quality) of `tag` from the service's ring buffer (blocking)."""
        return self.fetch_windows([tag], since_us).get(tag) or _empty()

    def fetch_windows(
        self, tags: Sequence[str], since_us: int | None = None
    ) -> dict[str, tuple[Any, Any, Any]]:
        """`windows` read from the service now (blocking): every tag asked has an entry."""
        return self._series("/live/windows", tags, since_us=since_us)

    def history(
        self,
        tags: str | Sequence[str],
        start: datetime | None,
        end: datetime | None,
        bucket: str | timedelta = "1s",
        statistics: Sequence[str] = ("avg", "min", "max", "count"),
        include_bad: bool = False,
    ):
        """The historian's bucketed query on the service: one row per tag and bucket."""
        names = [tags] if isinstance(tags, str) else list(tags)
        if isinstance(bucket, timedelta):
            bucket = f"{max(1, int(bucket.total_seconds()))}s"
        frame, _ = get_frame(
            self._client,
            "/live/history",
            tags=names,
            start=when(start),
            end=when(end),
            bucket=bucket,
            stats=list(statistics),
            include_bad="true" if include_bad else None,
        )
        return frame

    def last_values(self, tags: str | Sequence[str]):
        """The newest stored value of each tag on the service."""
        names = [tags] if isinstance(tags, str) else list(tags)
        frame, _ = get_frame(self._client, "/live/last-values", tags=names)
        return frame

    def chart_series(
        self, tags: Sequence[str], seconds: float, now_us: int | None = None
    ) -> dict[str, tuple[Any, Any, Any]]:
        """{tag: (timestamps µs, values, quality)} over the last `seconds` (ring buffer and historian
        buckets, as the service's engine puts them together)."""
        return self._series("/live/chart-series", tags, seconds=seconds, now_us=now_us)

    def _series(self, path: str, tags: Sequence[str], **params: Any) -> dict[str, tuple[Any, Any, Any]]:
        """{tag: (timestamps µs, values, quality)} of a series answer: every tag asked has an entry."""
        tags = list(dict.fromkeys(tags))
        if not tags:
            return {}
        frame, _ = get_frame(self._client, path, tags=tags, **params)
        got = series_of(frame)
        return {tag: got.get(tag) or _empty() for tag in tags}

    # ---- memory reads (safe on a GUI thread) -------------------------------------------------
    def windows(self, tags: Sequence[str], since_us: int | None = None) -> dict[str, tuple[Any, Any, Any]]:
        """`window` of each tag from the local copy (no I/O here); a refresh of the copy is started
        in the background, so the next call has what the service gathered meanwhile."""
        now = time.monotonic()
        result = {}
        with self._lock:
            for tag in tags:
                self._asked[tag] = now
                if since_us is not None:
                    self._since[tag] = min(self._since.get(tag, since_us), since_us)
                ts, values, quality = self._held.get(tag) or _empty()
                if since_us is not None and len(ts):
                    first = int(ts.searchsorted(since_us, "left"))
                    ts, values, quality = ts[first:], values[first:], quality[first:]
                result[tag] = (ts.copy(), values.copy(), quality.copy())
            start = not self._fetching and bool(self._asked)
            if start:
                self._fetching = True
        if start:
            try:
                self._client.call(self._refresh_held)
            except RuntimeError:  # the client is closing: its pool takes no more work
                with self._lock:
                    self._fetching = False
        return result

    def _refresh_held(self) -> None:
        import numpy as np

        try:
            now = time.monotonic()
            with self._lock:
                for tag in [t for t, at in self._asked.items() if now - at > FORGET_S]:
                    self._asked.pop(tag, None)
                    self._held.pop(tag, None)
                    self._since.pop(tag, None)
                tags = sorted(self._asked)
                newest = [
                    int(self._held[t][0][-1]) for t in tags if t in self._held and len(self._held[t][0])
                ]
                complete = all(t in self._held for t in tags)
                oldest_asked = min((self._since[t] for t in tags if t in self._since), default=None)
            if not tags:
                return
            # From the newest point every tag holds (a tag new to the copy: from what was asked).
            since = (min(newest) + 1) if newest and complete else oldest_asked
            got = self.fetch_windows(tags, since)
            floor_us = time.time_ns() // 1000 - int(KEEP_S * 1e6)
            with self._lock:
                for tag, (ts, values, quality) in got.items():
                    old = self._held.get(tag)
                    if old is not None and len(old[0]) and len(ts):
                        keep = ts > old[0][-1]
                        ts = np.concatenate((old[0], ts[keep]))
                        values = np.concatenate((old[1], values[keep]))
                        quality = np.concatenate((old[2], quality[keep]))
                    elif old is not None and not len(ts):
                        ts, values, quality = old
                    cut = max(int(ts.searchsorted(floor_us, "left")), len(ts) - MAX_POINTS)
                    if cut > 0:
                        ts, values, quality = ts[cut:], values[cut:], quality[cut:]
                    self._held[tag] = (ts, values, quality)
        finally:
            with self._lock:
                self._fetching = False

    def throughput(self) -> dict[str, float]:
        """Rows/s of each running streaming pipeline, as last read (no I/O here; the next read is
        started in the background)."""
        with self._lock:
            value = dict(self._throughput)
            start = not self._throughput_busy
            if start:
                self._throughput_busy = True
        if start:
            with contextlib.suppress(RuntimeError):  # the client is closing
                self._client.call(self._refresh_throughput)
        return value

    def _refresh_throughput(self) -> None:
        try:
            value = self._client.get("/live/throughput")
            with self._lock:
                self._throughput = {str(k): float(v) for k, v in (value or {}).items()}
        finally:
            with self._lock:
                self._throughput_busy = False
