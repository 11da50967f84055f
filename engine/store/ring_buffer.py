"""Live values in memory: the newest points of every tag, for charts that must not wait on DuckDB.

Every tag has a row in three numpy matrices: timestamps (int64 microseconds since the epoch, UTC),
values (float64; NaN for text or missing values) and quality codes (uint8: 0 good, 1 uncertain,
2 bad), each row a ring of `room` places with its own write position and fill. A batch goes in with
one scatter per matrix: its tags are mapped to rows by one join, each row's place in its ring is
worked out with numpy (a stable argsort by row), and no Python loop runs over tags or rows (issue 12:
the loop per tag measured 22% of a Modbus pipeline's CPU).

Memory is bounded by a budget for all tags together (`budget_bytes`, default 16 MiB, the
environment's `AGGREGATOR_LIVE_BUFFER_MB` if set; 17 bytes a point): each tag keeps
`budget / tags` points, at least `floor` (300) and at most `capacity` (3,600: an hour at 1 Hz).
10 tags keep an hour at 1 Hz; 1,000 tags at 10 Hz keep ~99 s each (16 MiB); 10,000 tags keep their
floor (51 MB, the most it can take). When new tags arrive and the share per tag falls, every ring is
cut to its newest points at once. Charts of a longer window read the older part from the historian
(`engine/api/live.py`, `chart_series`). Rings grow by doubling up to the share and then wrap,
overwriting the oldest points (counted in `counters["overwritten"]`); at most `max_tags` tags are
kept, and points of further tags are counted in `counters["dropped"]` (never silently lost).
Thread-safe: writers (sinks) and readers (charts) share one lock, held only for array copies.

Nothing is kept when nobody looks (`on_demand`, the registry's buffers): a buffer keeps points
while it has a subscriber (`subscribe()`/`unsubscribe()`, counted per name) or a lease, and every
read (`window`, `last`, `tags`) renews a lease of `lease_s` (30 s), so the GUI's Live page, the API's
event stream and HTTP pollers, and the alert evaluator's tag thresholds keep it alive by reading it.
A new buffer starts with one lease (a viewer opened right after a pipeline starts sees its first
points), unless its process has no viewer of its own and said so (`set_start_lease(0)`). When the last lease lapses the matrices are freed at the next write, and writes cost
nothing until someone reads again (counted in `counters["not_kept"]`); what was not kept is in the
historian, which charts read for the part of a window the buffer does not hold. A headless run
with nobody watching holds no ring memory and spends no CPU on it.

`ring_buffers(data_dir)` is the process-wide registry: the historian sink of a data directory
feeds the same buffers that the GUI of that directory reads.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import UsageError
from engine.lazy import lazy_module
from engine.tags import TagBatch, as_frame

if TYPE_CHECKING:  # numpy is imported when a buffer keeps or reads points: an idle process never does
    import numpy as np

pl = lazy_module("polars")  # the same for Polars

QUALITY_CODES = {"good": 0, "uncertain": 1, "bad": 2}
DEFAULT_CAPACITY = 3_600  # the most a tag keeps: one hour at 1 Hz
DEFAULT_MAX_TAGS = 10_000
DEFAULT_BUDGET_MB = 16.0  # all tags together
DEFAULT_FLOOR = 300  # the least a tag keeps, whatever the budget (30 s at 10 Hz)
BUDGET_ENV = "AGGREGATOR_LIVE_BUFFER_MB"
POINT_BYTES = 17  # 8 (timestamp) + 8 (value) + 1 (quality)
_FIRST_SIZE = 64
DEFAULT_LEASE_S = 30.0  # a read keeps the buffer filling this long (on-demand buffers)


def default_budget_bytes() -> int:
    """The memory budget of a data directory's ring buffers: `AGGREGATOR_LIVE_BUFFER_MB` (a number
    of MiB, > 0) if set, else 16 MiB."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if not text:
        return int(DEFAULT_BUDGET_MB * 2**20)
    try:
        mb = float(text)
    except ValueError:
        mb = float("nan")
    if not 0 < mb < float("inf"):
        raise UsageError(
            f"{BUDGET_ENV}: '{text}' is not a number of MiB above 0 (e.g. {DEFAULT_BUDGET_MB:g})"
        )
    return int(mb * 2**20)


def _ordered_columns(head: np.ndarray, keep: np.ndarray, room: int, width: int) -> np.ndarray:
    import numpy as np

    """Per row, the places of its `keep` newest points, oldest first, padded to `width` columns
    (the padding repeats places; callers use only the first `keep`)."""
    start = (head - keep) % max(room, 1)
    return (start[:, None] + np.arange(width)[None, :]) % max(room, 1)


class TagRingBuffer:
    """The newest points of every tag, bounded in memory. See the module doc."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        max_tags: int = DEFAULT_MAX_TAGS,
        budget_bytes: int | None = None,
        floor: int = DEFAULT_FLOOR,
        on_demand: bool = False,
        lease_s: float = DEFAULT_LEASE_S,
        clock=time.monotonic,
        start_lease_s: float | None = None,
    ):
        """`capacity`: the most points a tag keeps; `budget_bytes`: all tags together (None: the
        default, `default_budget_bytes()`; 0: no budget, every tag keeps `capacity`); `floor`: the
        least a tag keeps whatever the budget (never above `capacity`); `on_demand`: keep points only
        while subscribed or leased (see the module doc), else always."""
        if capacity < 1 or max_tags < 1 or floor < 1:
            raise ValueError("capacity, max_tags and floor must be at least 1")
        self.capacity, self.max_tags, self.floor = capacity, max_tags, floor
        self.budget_bytes = default_budget_bytes() if budget_bytes is None else budget_bytes
        self.tag_capacity = capacity  # points each tag keeps now (the budget's share, see _share)
        self.on_demand, self.lease_s = on_demand, lease_s
        self._subscribers: Counter[str] = Counter()
        self._clock = clock
        # the first lease (see the module doc): `start_lease_s`, else `lease_s`
        self._lease_until = clock() + (lease_s if start_lease_s is None else start_lease_s)
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self._clear()

    def _clear(self) -> None:
        self._index: dict[str, int] = {}  # tag -> row
        self._names: pl.DataFrame | None = None  # the same as a frame, to join (first kept write)
        self.room = 0  # places per row now (grows by doubling up to tag_capacity)
        # The matrices, and per row where its next point goes and how many it holds: made by the
        # first kept write (`_add_rows`), so that a buffer nobody reads never imports numpy.
        self._ts: np.ndarray | None = None
        self._values: np.ndarray | None = None
        self._quality: np.ndarray | None = None
        self._head: np.ndarray | None = None
        self._size: np.ndarray | None = None

    # ---- who is looking ------------------------------------------------------------------------
    def subscribe(self, name: str = "viewer") -> None:
        """Keep points from now on, until as many `unsubscribe(name)` calls."""
        with self._lock:
            self._subscribers[name] += 1

    def unsubscribe(self, name: str = "viewer") -> None:
        with self._lock:
            if self._subscribers[name] > 0:
                self._subscribers[name] -= 1
            if self._subscribers[name] <= 0:
                del self._subscribers[name]

    def lease(self, seconds: float | None = None) -> None:
        """Keep points for `seconds` (default `lease_s`) from now; every read does this."""
        until = self._clock() + (self.lease_s if seconds is None else seconds)
        self._lease_until = max(self._lease_until, until)

    @property
    def keeping(self) -> bool:
        """Whether writes are kept now (always, unless `on_demand` and nobody subscribed or leased)."""
        return not self.on_demand or bool(self._subscribers) or self._clock() < self._lease_until

    # ---- writing -------------------------------------------------------------------------------
    def append(self, batch: pl.DataFrame | TagBatch) -> None:
        """Add a TAG_SCHEMA batch (a frame or a `TagBatch`; rows of a tag in batch order, which should be time order)."""
        if batch.height == 0:
            return
        if not self.keeping:
            with self._lock:
                if self._index:  # the last lease lapsed: free everything now
                    self._clear()
                    self.counters["released"] += 1
                self.counters["not_kept"] += batch.height
            return
        import numpy as np

        batch = as_frame(batch)
        columns = batch.select(
            pl.col("tag"),
            pl.col("timestamp").dt.epoch("us").fill_null(0).alias("ts"),
            pl.col("value").cast(pl.Float64).fill_null(float("nan")),
            pl.col("quality").replace_strict(QUALITY_CODES, default=2, return_dtype=pl.UInt8),
        )
        with self._lock:
            rows = self._rows_of(columns)  # -1: a tag beyond max_tags
            kept = rows >= 0
            dropped = int(len(rows) - np.count_nonzero(kept))
            if dropped:
                self.counters["dropped"] += dropped
            ts = columns.get_column("ts").to_numpy()
            values = columns.get_column("value").to_numpy()
            quality = columns.get_column("quality").to_numpy()
            if dropped:
                rows, ts, values, quality = rows[kept], ts[kept], values[kept], quality[kept]
            if len(rows) and self._head is not None:
                self._scatter(rows, ts, values, quality)
            self.counters["points"] += batch.height

    def _rows_of(self, columns: pl.DataFrame) -> np.ndarray:
        """Each row's ring (int64, -1 for tags beyond `max_tags`); new tags get rings (one join)."""
        import numpy as np

        if self._names is None:
            self._names = pl.DataFrame(schema={"tag": pl.String, "row": pl.Int64})
        found = columns.select("tag").join(self._names, on="tag", how="left", maintain_order="left")
        row = found.get_column("row")
        if row.null_count():
            new = found.filter(pl.col("row").is_null()).get_column("tag").unique(maintain_order=True)
            room_left = max(0, self.max_tags - len(self._index))
            new = new.head(room_left)
            if len(new):
                first = len(self._index)
                self._index.update(zip(new.to_list(), range(first, first + len(new)), strict=True))
                added = pl.DataFrame({"tag": new, "row": pl.int_range(first, first + len(new), eager=True)})
                self._names = pl.concat([self._names, added.cast(self._names.schema)])
                self._reshare(len(self._index))
                self._add_rows(len(new))
                row = columns.select("tag").join(self._names, on="tag", how="left", maintain_order="left")[
                    "row"
                ]
        return row.fill_null(-1).to_numpy().astype(np.int64, copy=False)

    def _add_rows(self, count: int) -> None:
        import numpy as np

        if self._head is None:
            self._ts = np.empty((0, self.room), np.int64)
            self._values = np.empty((0, self.room), np.float64)
            self._quality = np.empty((0, self.room), np.uint8)
            self._head, self._size = np.zeros(0, np.int64), np.zeros(0, np.int64)
        for name in ("_ts", "_values", "_quality"):
            held = getattr(self, name)
            grown = np.empty((held.shape[0] + count, self.room), held.dtype)
            grown[: held.shape[0]] = held
            setattr(self, name, grown)
        self._head = np.concatenate((self._head, np.zeros(count, np.int64)))
        self._size = np.concatenate((self._size, np.zeros(count, np.int64)))

    def _scatter(self, rows: np.ndarray, ts: np.ndarray, values: np.ndarray, quality: np.ndarray) -> None:
        import numpy as np

        tags = len(self._head)
        counts = np.bincount(rows, minlength=tags)
        wanted = int((self._size + counts).max())
        if wanted > self.room and self.room < self.tag_capacity:
            room = max(self.room, min(_FIRST_SIZE, self.tag_capacity))
            while room < wanted and room < self.tag_capacity:
                room = min(self.tag_capacity, room * 2)
            self._relayout(room)
        room = self.room
        order = np.argsort(rows, kind="stable")  # each tag's rows together, in batch order
        starts = np.cumsum(counts) - counts
        rank = np.empty(len(rows), np.int64)
        rank[order] = np.arange(len(rows)) - starts[rows[order]]  # a row's place among its tag's
        kept_n = np.minimum(counts, room)
        skipped = counts - kept_n  # a run longer than the ring keeps only its newest points
        rank -= skipped[rows]
        keep = rank >= 0
        if not keep.all():
            rows, rank, ts, values, quality = rows[keep], rank[keep], ts[keep], values[keep], quality[keep]
        places = (self._head[rows] + rank) % room
        self._ts[rows, places] = ts
        self._values[rows, places] = values
        self._quality[rows, places] = quality
        overwritten = np.maximum(0, self._size + kept_n - room)
        self.counters["overwritten"] += int(overwritten.sum() + skipped.sum())
        self._head = (self._head + kept_n) % room
        self._size = np.minimum(room, self._size + kept_n)

    def _relayout(self, room: int) -> None:
        """`room` places per row from now on, every row's newest points first in it, in order."""
        if self._head is None:  # no rows yet: `_add_rows` makes them this wide
            self.room = room
            return
        import numpy as np

        keep = np.minimum(self._size, room)
        if self.room and len(self._head):
            columns = _ordered_columns(self._head, keep, self.room, room)
            lines = np.arange(len(self._head))[:, None]
            self._ts, self._values, self._quality = (
                np.ascontiguousarray(a[lines, columns]) for a in (self._ts, self._values, self._quality)
            )
        else:
            self._ts = np.empty((len(self._head), room), np.int64)
            self._values = np.empty((len(self._head), room), np.float64)
            self._quality = np.empty((len(self._head), room), np.uint8)
        self.counters["overwritten"] += int((self._size - keep).sum())
        self._size = keep
        self._head = keep % room
        self.room = room

    def _share(self, tags: int) -> int:
        """Points a tag keeps when `tags` tags share the budget."""
        if not self.budget_bytes:
            return self.capacity
        share = self.budget_bytes // (POINT_BYTES * max(1, tags))
        return max(1, min(self.capacity, max(self.floor, share)))

    def _reshare(self, tags: int) -> None:
        """`tags` tags from now on: a smaller share cuts every ring to its newest points now
        (under the lock), so that the budget holds before the new tags' points come in."""
        share = self._share(tags)
        if share < self.room:
            self._relayout(share)
        self.tag_capacity = share

    # ---- reading -------------------------------------------------------------------------------
    def window(self, tag: str, since_us: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(timestamps, values, quality) of `tag`, oldest first, from `since_us` (epoch
        microseconds) on; copies, so the caller may keep them while writers go on."""
        import numpy as np

        self.lease()
        with self._lock:
            row = self._index.get(tag)
            if row is None or not self.room:
                return (np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.uint8))
            size = int(self._size[row])
            places = (int(self._head[row]) - size + np.arange(size)) % self.room
            ts, values, quality = self._ts[row, places], self._values[row, places], self._quality[row, places]
        if since_us is not None:
            keep = ts >= since_us
            ts, values, quality = ts[keep], values[keep], quality[keep]
        return ts, values, quality

    def last(self, tag: str) -> tuple[int, float, int] | None:
        """(timestamp_us, value, quality code) of the newest point of `tag`, or None."""
        self.lease()
        with self._lock:
            row = self._index.get(tag)
            if row is None or not self._size[row]:
                return None
            i = (int(self._head[row]) - 1) % self.room
            return int(self._ts[row, i]), float(self._values[row, i]), int(self._quality[row, i])

    def tags(self) -> list[str]:
        self.lease()
        with self._lock:
            return sorted(self._index)

    def memory_bytes(self) -> int:
        with self._lock:
            return sum(a.nbytes for a in (self._ts, self._values, self._quality) if a is not None)


_REGISTRY: dict[Path, TagRingBuffer] = {}
_REGISTRY_LOCK = threading.Lock()
_start_lease_s = DEFAULT_LEASE_S  # the first lease of the registry's buffers (`set_start_lease`)


def set_start_lease(seconds: float) -> None:
    """The first lease of the registry's buffers made from now on (default `DEFAULT_LEASE_S`). A
    process with no viewer of its own (a foreground `aggregator run`: no GUI, no API) sets 0: its
    buffers keep nothing until something reads them, and numpy is never imported for them."""
    global _start_lease_s
    _start_lease_s = max(0.0, float(seconds))


def ring_buffers(
    data_dir: Path | str,
    capacity: int = DEFAULT_CAPACITY,
    max_tags: int = DEFAULT_MAX_TAGS,
    budget_bytes: int | None = None,
    floor: int = DEFAULT_FLOOR,
) -> TagRingBuffer:
    """The process-wide ring buffer of a data directory (made on first use with these limits;
    `budget_bytes` None: `AGGREGATOR_LIVE_BUFFER_MB`, else 16 MiB). It keeps points on demand
    only: while subscribed or read (see the module doc)."""
    key = Path(data_dir).expanduser().resolve()
    with _REGISTRY_LOCK:
        buffer = _REGISTRY.get(key)
        if buffer is None:
            buffer = _REGISTRY[key] = TagRingBuffer(
                capacity, max_tags, budget_bytes, floor, on_demand=True, start_lease_s=_start_lease_s
            )
        return buffer


def forget_ring_buffers(data_dir: Path | str | None = None) -> None:
    """Drop the registry's buffer of a data directory, or all of them (tests, closing a workspace)."""
    with _REGISTRY_LOCK:
        if data_dir is None:
            _REGISTRY.clear()
        else:
            _REGISTRY.pop(Path(data_dir).expanduser().resolve(), None)
