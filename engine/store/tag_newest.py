"""The newest record of every tag, kept in the memory of the process that writes the historian.

Issue 12: folding every batch's newest rows into the keyed table `tag_last` (an upsert of every
value) was the largest cost of a 100,000 values/s Modbus stream (~1.8 CPU-µs a value, the log
append ~0.6 more). Instead the writer keeps the rows it committed and has not yet written to
`tag_last` (`NewestRows`, one per `Historian` object), and writes them every `WRITE_EVERY` seconds,
upserting each changed tag once (`TagHistorian.write_last`). Per batch the cost is keeping a view of
its columns; every so often the views are compacted to one row per tag by one sort and one
`unique` (vectorised, no Python loop per tag).

What `tag_last` promises (docs/architecture.md, "Storage"):
- readers in the writer's process (`TagHistorian.last_values`, `Historian.newest_tag_rows`: the
  engine's API, so also the service's HTTP API, its clients and `aggregator query` through a
  service) get the newest committed row of every tag: the table merged with the rows kept here;
- the table itself is at most `WRITE_EVERY` seconds (plus one write) behind the committed rows while
  a writer runs: the first commit `WRITE_EVERY` s after the last write writes it, or a timer when
  no commit comes (`write_later`); and exact after a clean stop (a sink's close writes it);
- after a crash (SIGKILL) the next open of the historian rebuilds it: every batch that adds rows
  not yet written marks, in its own transaction, the earliest timestamp among them
  (`PENDING_TABLE`), and the open folds the rows of `tags` from that timestamp on into `tag_last`.

The rule for "newest" is the one of `engine.store.tag_last`: the latest timestamp wins, a NULL
timestamp is older than any, and among equal timestamps the later arrival wins.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from datetime import datetime

import polars as pl

from engine.store.tag_last import LAST_COLUMNS, LAST_TABLE
from engine.tags import TAG_SCHEMA

# How often the writer writes its newest rows to `tag_last` (seconds): the staleness readers in
# other processes may see; each write upserts every tag that changed (at 100,000 tags ~0.27 CPU-s).
WRITE_EVERY = 5.0
# Views of batches kept before they are compacted to one row per tag (memory: ~60 bytes a row).
COMPACT_AFTER = 100_000
# The crash marker: the earliest timestamp of rows committed to `tags` and not yet to `tag_last`.
PENDING_TABLE = "tag_last_pending"
LAST_SCHEMA = pl.Schema({c: TAG_SCHEMA[c] for c in LAST_COLUMNS})


def create_sql() -> list[str]:
    return [f"CREATE TABLE IF NOT EXISTS {PENDING_TABLE} (since TIMESTAMPTZ, nulls BOOLEAN)"]


def upsert_sql(source: str) -> str:
    """Rows of `source` (one per tag) into `tag_last`, where not older than the row there."""
    names = ", ".join(LAST_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in LAST_COLUMNS[1:])
    return (
        f"INSERT INTO {LAST_TABLE} ({names}) SELECT {names} FROM {source} ON CONFLICT (tag) DO UPDATE"
        f" SET {updates} WHERE excluded.timestamp >= {LAST_TABLE}.timestamp OR {LAST_TABLE}.timestamp IS NULL"
    )


def newest(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """One row per tag of `frames` (LAST_SCHEMA, in arrival order) by the rule above: a stable sort
    by timestamp (NULL first) keeps arrival order among ties, and the last row of each tag wins."""
    frames = [f for f in frames if f.height]
    if not frames:
        return LAST_SCHEMA.to_frame()
    joined = frames[0] if len(frames) == 1 else pl.concat(frames, rechunk=False)
    return joined.sort("timestamp", nulls_last=False, maintain_order=True).unique(
        "tag", keep="last", maintain_order=False
    )


class NewestRows:
    """The committed rows of one historian not yet written to `tag_last` (see the module doc).

    `write_lock` serialises the historian's writers (a sink's micro-batch, `TagHistorian.append`,
    the write to `tag_last`): a batch's marker and the write that clears it must not interleave.
    Readers take a snapshot under the short `_lock` and never wait for a write."""

    def __init__(self) -> None:
        self.write_lock = threading.RLock()
        self._lock = threading.Lock()
        self._parts: list[pl.DataFrame] = []  # views of committed batches, arrival order
        self._part_rows = 0
        self._compact: pl.DataFrame | None = None  # one row per tag (arrived before the parts)
        self.marked: tuple[datetime | None, bool] | None = None  # what PENDING_TABLE holds (None: nothing)
        self.last_write = time.monotonic()
        self.recovered = False  # the crash marker was looked at (once per process and historian)
        self._timer: threading.Timer | None = None

    def write_later(self, delay: float, write) -> None:
        """Call `write()` in `delay` seconds on a timer thread, unless one is pending already: rows
        committed by a stream that then commits nothing for a while still reach the table."""
        with self._lock:
            if self._timer is not None and self._timer.is_alive():
                return

            def due() -> None:
                with self._lock:
                    self._timer = None  # the write may ask for the next one
                write()

            # Not a daemon: one stopped inside Polars or DuckDB at the interpreter's finalization
            # aborts the process; `_at_exit` cancels it before threads are joined.
            self._timer = threading.Timer(max(0.0, delay), due)
            self._timer.daemon = False
            self._timer.start()

    def add(self, frames: list[pl.DataFrame], marked: tuple[datetime | None, bool] | None) -> None:
        """Committed batches (LAST_SCHEMA, arrival order) and the marker their transaction left."""
        with self._lock:
            self._parts.extend(frames)
            self._part_rows += sum(f.height for f in frames)
            if marked is not None:
                self.marked = marked
            compact = self._part_rows >= max(
                COMPACT_AFTER, 0 if self._compact is None else self._compact.height
            )
        if compact:
            self.rows()

    def rows(self) -> pl.DataFrame:
        """One row per tag of everything kept (compacts the views)."""
        with self._lock:  # held while compacting (tens of ms at 100,000 tags): one compaction at a time
            if self._parts:
                older = [] if self._compact is None else [self._compact]
                self._compact = newest(older + self._parts)
                self._parts, self._part_rows = [], 0
            return LAST_SCHEMA.to_frame() if self._compact is None else self._compact

    def written(self, rows: pl.DataFrame | None) -> None:
        """`rows` (from `rows()`) are in `tag_last` now and the marker cleared (under `write_lock`,
        which every writer holds when it hands its batches over: nothing came in meanwhile)."""
        with self._lock:
            if rows is not None and self._compact is rows:
                self._compact = None
            if not self._parts:
                self.marked = None
            self.last_write = time.monotonic()

    @property
    def empty(self) -> bool:
        with self._lock:
            return not self._parts and (self._compact is None or self._compact.height == 0)


_REGISTRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


_EXITING = threading.Event()


def _at_exit() -> None:
    """At interpreter exit, before threads are joined: the timers are cancelled (so exit does not
    wait for them), no timer's write starts any more, and one under way finishes first."""
    _EXITING.set()
    with _REGISTRY_LOCK:
        kept = list(_REGISTRY.values())
    for rows in kept:
        with rows._lock:
            timer, rows._timer = rows._timer, None
        if timer is not None:
            timer.cancel()
        if rows.write_lock.acquire(timeout=10):  # the timer's write holds it while it writes
            rows.write_lock.release()


# Run before non-daemon threads are joined (as concurrent.futures does); atexit would run after.
getattr(threading, "_register_atexit", atexit.register)(_at_exit)


def exiting() -> bool:
    return _EXITING.is_set()


def of(historian) -> NewestRows:
    """The rows kept for this `Historian` object (its writers and readers share them)."""
    with _REGISTRY_LOCK:
        found = _REGISTRY.get(historian)
        if found is None:
            found = _REGISTRY[historian] = NewestRows()
        return found
