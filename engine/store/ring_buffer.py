"""Live values in memory: a fixed-capacity ring per tag, for charts that must not wait on DuckDB.

Each tag keeps its newest `capacity` points in numpy arrays: timestamps (int64 microseconds since
the epoch, UTC), values (float64; NaN for text or missing values) and quality codes (uint8:
0 good, 1 uncertain, 2 bad). A batch is grouped by tag once (one sort) and copied in with at most
two slice assignments per tag; no Python loop runs over rows.

Memory is bounded by a budget for all tags together (`budget_bytes`, default 16 MiB, the
environment's `AGGREGATOR_LIVE_BUFFER_MB` if set; 17 bytes a point): each tag keeps
`budget / tags` points, at least `floor` (300) and at most `capacity` (3,600: an hour at 1 Hz).
10 tags keep an hour at 1 Hz; 1,000 tags at 10 Hz keep ~99 s each (16 MiB); 10,000 tags keep their
floor (51 MB, the most it can take). When new tags arrive and the share per tag falls, every ring is
cut to its newest points at once. Charts of a longer window read the older part from the historian
(`engine/api/live.py`, `chart_series`). Arrays grow by doubling up to the share and then wrap,
overwriting the oldest points (counted in `counters["overwritten"]`); at most `max_tags` tags are
kept, and points of further tags are counted in `counters["dropped"]` (never silently lost).
Thread-safe: writers (sinks) and readers (charts) share one lock, held only for array copies.

`ring_buffers(data_dir)` is the process-wide registry: the historian sink of a data directory
feeds the same buffers that the GUI of that directory reads.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl

from engine.errors import UsageError

QUALITY_CODES = {"good": 0, "uncertain": 1, "bad": 2}
DEFAULT_CAPACITY = 3_600  # the most a tag keeps: one hour at 1 Hz
DEFAULT_MAX_TAGS = 10_000
DEFAULT_BUDGET_MB = 16.0  # all tags together
DEFAULT_FLOOR = 300  # the least a tag keeps, whatever the budget (30 s at 10 Hz)
BUDGET_ENV = "AGGREGATOR_LIVE_BUFFER_MB"
POINT_BYTES = 17  # 8 (timestamp) + 8 (value) + 1 (quality)
_FIRST_SIZE = 64


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


class _Ring:
    __slots__ = ("quality", "size", "start", "timestamps", "values")

    def __init__(self, size: int):
        self.timestamps = np.empty(size, dtype=np.int64)
        self.values = np.empty(size, dtype=np.float64)
        self.quality = np.empty(size, dtype=np.uint8)
        self.start = 0  # index of the oldest point
        self.size = 0  # points held

    @property
    def room(self) -> int:
        return len(self.timestamps)

    def ordered(self, array: np.ndarray) -> np.ndarray:
        """A copy of the held points, oldest first."""
        end = self.start + self.size
        if end <= self.room:
            return array[self.start : end].copy()
        return np.concatenate((array[self.start :], array[: end - self.room]))

    def grow(self, wanted: int, capacity: int) -> None:
        """Room for `wanted` points (up to capacity); the held points move to the front, in order."""
        room = self.room
        while room < wanted and room < capacity:
            room = min(capacity, room * 2)
        if room == self.room:
            return
        arrays = [self.ordered(a) for a in (self.timestamps, self.values, self.quality)]
        self.timestamps = np.empty(room, dtype=np.int64)
        self.values = np.empty(room, dtype=np.float64)
        self.quality = np.empty(room, dtype=np.uint8)
        for target, held in zip((self.timestamps, self.values, self.quality), arrays, strict=True):
            target[: self.size] = held
        self.start = 0

    def shrink(self, room: int) -> None:
        """At most `room` places; only the newest points that fit are kept."""
        if self.room <= room:
            return
        arrays = [self.ordered(a)[-room:] for a in (self.timestamps, self.values, self.quality)]
        self.timestamps, self.values, self.quality = (a.copy() for a in arrays)  # own, right-sized
        self.size = len(self.timestamps)
        self.start = 0
        if self.size < room:  # fewer points than places: the free places after them
            self.timestamps, self.values, self.quality = (
                np.concatenate((a, np.empty(room - self.size, a.dtype)))
                for a in (self.timestamps, self.values, self.quality)
            )

    def put(self, ts: np.ndarray, values: np.ndarray, quality: np.ndarray) -> int:
        """Append points (already at most `room` of them); returns how many old points were overwritten."""
        n = len(ts)
        room = self.room
        at = (self.start + self.size) % room
        first = min(n, room - at)
        for target, source in ((self.timestamps, ts), (self.values, values), (self.quality, quality)):
            target[at : at + first] = source[:first]
            target[: n - first] = source[first:]
        overwritten = max(0, self.size + n - room)
        self.size = min(room, self.size + n)
        self.start = (self.start + overwritten) % room
        return overwritten


class TagRingBuffer:
    """The newest points of every tag, bounded in memory. See the module doc."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        max_tags: int = DEFAULT_MAX_TAGS,
        budget_bytes: int | None = None,
        floor: int = DEFAULT_FLOOR,
    ):
        """`capacity`: the most points a tag keeps; `budget_bytes`: all tags together (None: the
        default, `default_budget_bytes()`; 0: no budget, every tag keeps `capacity`); `floor`: the
        least a tag keeps whatever the budget (never above `capacity`)."""
        if capacity < 1 or max_tags < 1 or floor < 1:
            raise ValueError("capacity, max_tags and floor must be at least 1")
        self.capacity, self.max_tags, self.floor = capacity, max_tags, floor
        self.budget_bytes = default_budget_bytes() if budget_bytes is None else budget_bytes
        self.tag_capacity = capacity  # points each tag keeps now (the budget's share, see _share)
        self._rings: dict[str, _Ring] = {}
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()

    def append(self, batch: pl.DataFrame) -> None:
        """Add a TAG_SCHEMA batch (rows of a tag in batch order, which should be time order)."""
        if batch.height == 0:
            return
        columns = batch.select(
            pl.col("tag"),
            pl.col("timestamp").dt.epoch("us").fill_null(0).alias("ts"),
            pl.col("value").cast(pl.Float64).fill_null(float("nan")),
            pl.col("quality").replace_strict(QUALITY_CODES, default=2, return_dtype=pl.UInt8),
        ).sort("tag", maintain_order=True)
        runs = columns.get_column("tag").rle()  # one run per tag after the sort
        names = runs.struct.field("value").to_list()
        lengths = runs.struct.field("len").to_numpy()
        ends = np.cumsum(lengths)
        ts = columns.get_column("ts").to_numpy()
        values = columns.get_column("value").to_numpy()
        quality = columns.get_column("quality").to_numpy()
        with self._lock:
            new = sum(1 for name in names if name not in self._rings)
            if new:
                self._reshare(min(self.max_tags, len(self._rings) + new))
            capacity = self.tag_capacity
            for name, end, length in zip(names, ends.tolist(), lengths.tolist(), strict=True):
                ring = self._rings.get(name)
                if ring is None:
                    if len(self._rings) >= self.max_tags:
                        self.counters["dropped"] += length
                        continue
                    ring = self._rings[name] = _Ring(min(capacity, _FIRST_SIZE))
                # A run longer than the capacity keeps only its newest points.
                kept = min(length, capacity)
                first = end - kept
                ring.grow(ring.size + kept, capacity)
                overwritten = ring.put(ts[first:end], values[first:end], quality[first:end])
                self.counters["overwritten"] += overwritten + (length - kept)
            self.counters["points"] += batch.height

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
        if share < self.tag_capacity:
            for ring in self._rings.values():
                if ring.room > share:
                    self.counters["overwritten"] += max(0, ring.size - share)
                    ring.shrink(share)
        self.tag_capacity = share

    def window(self, tag: str, since_us: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(timestamps, values, quality) of `tag`, oldest first, from `since_us` (epoch
        microseconds) on; copies, so the caller may keep them while writers go on."""
        with self._lock:
            ring = self._rings.get(tag)
            if ring is None:
                return (np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.uint8))
            ts, values, quality = (ring.ordered(a) for a in (ring.timestamps, ring.values, ring.quality))
        if since_us is not None:
            keep = ts >= since_us
            ts, values, quality = ts[keep], values[keep], quality[keep]
        return ts, values, quality

    def last(self, tag: str) -> tuple[int, float, int] | None:
        """(timestamp_us, value, quality code) of the newest point of `tag`, or None."""
        with self._lock:
            ring = self._rings.get(tag)
            if ring is None or ring.size == 0:
                return None
            i = (ring.start + ring.size - 1) % ring.room
            return int(ring.timestamps[i]), float(ring.values[i]), int(ring.quality[i])

    def tags(self) -> list[str]:
        with self._lock:
            return sorted(self._rings)

    def memory_bytes(self) -> int:
        with self._lock:
            return sum(r.room * POINT_BYTES for r in self._rings.values())


_REGISTRY: dict[Path, TagRingBuffer] = {}
_REGISTRY_LOCK = threading.Lock()


def ring_buffers(
    data_dir: Path | str,
    capacity: int = DEFAULT_CAPACITY,
    max_tags: int = DEFAULT_MAX_TAGS,
    budget_bytes: int | None = None,
    floor: int = DEFAULT_FLOOR,
) -> TagRingBuffer:
    """The process-wide ring buffer of a data directory (made on first use with these limits;
    `budget_bytes` None: `AGGREGATOR_LIVE_BUFFER_MB`, else 16 MiB)."""
    key = Path(data_dir).expanduser().resolve()
    with _REGISTRY_LOCK:
        buffer = _REGISTRY.get(key)
        if buffer is None:
            buffer = _REGISTRY[key] = TagRingBuffer(capacity, max_tags, budget_bytes, floor)
        return buffer


def forget_ring_buffers(data_dir: Path | str | None = None) -> None:
    """Drop the registry's buffer of a data directory, or all of them (tests, closing a workspace)."""
    with _REGISTRY_LOCK:
        if data_dir is None:
            _REGISTRY.clear()
        else:
            _REGISTRY.pop(Path(data_dir).expanduser().resolve(), None)
