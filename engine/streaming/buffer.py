"""A source's bounded queue: back-pressure first, then drop-oldest, every dropped row counted.

`put` runs on the source's thread (its `emit`), `take` on the runner's. The queue never holds
more than `max_rows` rows or `max_bytes` bytes: a full queue makes `put` wait up to
`block_timeout_s` for the runner to take rows, and then the oldest rows make room, counted in
`dropped` and reported through `on_drop` (the runner logs and alarms it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.lazy import lazy_module

pl = lazy_module("polars")


@dataclass
class Queued:
    frame: pl.DataFrame
    size: int  # estimated bytes
    arrived: float  # time.monotonic(), for the latency trigger
    arrived_us: int  # epoch microseconds, for latency figures when rows carry no `received_at`
    ack: Any = None  # the source's ack token (message queues): goes with the batch's last rows


class BatchQueue:
    def __init__(
        self,
        name: str,
        *,
        max_rows: int,
        max_bytes: int,
        block_timeout_s: float,
        on_arrival: Callable[[], None] = lambda: None,
        on_drop: Callable[[str, int, str], None] = lambda name, rows, why: None,
    ):
        self.name, self.max_rows, self.max_bytes = name, max_rows, max_bytes
        self.block_timeout_s = block_timeout_s
        self.on_arrival, self.on_drop = on_arrival, on_drop
        self._items: deque[Queued] = deque()
        self._cond = threading.Condition()
        self.rows = self.bytes = 0
        self.peak_rows = self.peak_bytes = 0
        self.received = self.dropped = self.taken = 0
        self.no_wait = False  # shutting down: never block a source that is being stopped

    # ---- the source's side -------------------------------------------------------------------
    def put(self, frame: pl.DataFrame, ack: Any = None) -> None:
        if frame.height == 0:
            return
        size = max(1, frame.estimated_size())
        dropped = 0
        with self._cond:
            self.received += frame.height
            frame, size, dropped = self._fit_alone(frame, size)
            deadline = time.monotonic() + (0.0 if self.no_wait else self.block_timeout_s)
            while self._over(frame.height, size) and not self.no_wait:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            while self._over(frame.height, size) and self._items:
                dropped += self._drop_oldest(frame.height, size)
            self._items.append(Queued(frame, size, time.monotonic(), time.time_ns() // 1000, ack))
            self.rows += frame.height
            self.bytes += size
            self.peak_rows = max(self.peak_rows, self.rows)
            self.peak_bytes = max(self.peak_bytes, self.bytes)
            self.dropped += dropped
        if dropped:
            self.on_drop(self.name, dropped, "queue full")
        self.on_arrival()

    def _over(self, rows: int, size: int) -> bool:
        return self.rows + rows > self.max_rows or self.bytes + size > self.max_bytes

    def _fit_alone(self, frame: pl.DataFrame, size: int) -> tuple[pl.DataFrame, int, int]:
        """A batch bigger than the whole queue keeps its newest rows only."""
        per_row = size / frame.height
        keep = min(frame.height, self.max_rows, max(1, int(self.max_bytes / per_row)))
        if keep == frame.height:
            return frame, size, 0
        return frame.tail(keep), max(1, int(per_row * keep)), frame.height - keep

    def _drop_oldest(self, rows: int, size: int) -> int:
        """Drop the oldest rows until `rows`/`size` more fit; a partly needed batch is sliced."""
        first = self._items[0]
        need_rows = self.rows + rows - self.max_rows
        need_bytes = self.bytes + size - self.max_bytes
        per_row = first.size / first.frame.height
        cut = max(need_rows, int(need_bytes / per_row) + 1 if need_bytes > 0 else 0, 1)
        if cut >= first.frame.height:
            self._items.popleft()
            self.rows -= first.frame.height
            self.bytes -= first.size
            return first.frame.height
        kept = first.frame.slice(cut)
        kept_size = max(1, int(per_row * kept.height))
        self._items[0] = Queued(kept, kept_size, first.arrived, first.arrived_us, first.ack)
        self.rows -= cut
        self.bytes -= first.size - kept_size
        return cut

    # ---- the runner's side -------------------------------------------------------------------
    def oldest(self) -> float | None:
        """When the oldest waiting batch arrived (monotonic), or None when empty."""
        with self._cond:
            return self._items[0].arrived if self._items else None

    def take(self, max_rows: int) -> list[Queued]:
        """Up to `max_rows` of the oldest rows (the last batch sliced when needed)."""
        out: list[Queued] = []
        with self._cond:
            want = max_rows
            while self._items and want > 0:
                item = self._items[0]
                if item.frame.height <= want:
                    self._items.popleft()
                    out.append(item)
                    self.rows -= item.frame.height
                    self.bytes -= item.size
                    want -= item.frame.height
                else:
                    per_row = item.size / item.frame.height
                    head_size = max(1, int(per_row * want))
                    out.append(Queued(item.frame.head(want), head_size, item.arrived, item.arrived_us))
                    self._items[0] = Queued(  # the ack token stays with the rows it ends with
                        item.frame.slice(want), item.size - head_size, item.arrived, item.arrived_us, item.ack
                    )
                    self.rows -= want
                    self.bytes -= head_size
                    want = 0
            self.taken += max_rows - want
            self._cond.notify_all()  # room for a waiting put
        return out

    def discard(self, why: str) -> int:
        """Throw away what is queued (a failed run): counted as dropped like any other loss."""
        with self._cond:
            rows = self.rows
            self._items.clear()
            self.rows = self.bytes = 0
            self.dropped += rows
            self._cond.notify_all()
        if rows:
            self.on_drop(self.name, rows, why)
        return rows

    def lost(self, rows: int, why: str) -> None:
        """Rows already taken that will never be committed (their micro-batch failed)."""
        with self._cond:
            self.taken -= rows
            self.dropped += rows
        if rows:
            self.on_drop(self.name, rows, why)

    def release(self) -> None:
        """Shutting down: waiting and future puts no longer block (they drop-oldest at once)."""
        with self._cond:
            self.no_wait = True
            self._cond.notify_all()
