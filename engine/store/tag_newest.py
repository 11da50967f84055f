"""The newest record of every tag, kept in the memory of the process that writes the historian.

Issue 12: folding every batch's newest rows into the keyed table `tag_last` (an upsert of every
value) was the largest cost of a 100,000 values/s Modbus stream (~1.8 CPU-µs a value, the log
append ~0.6 more). Instead the writer keeps the rows it committed and has not yet written to
`tag_last` (`NewestRows`, one per `Historian` object), and writes them every `WRITE_EVERY` seconds
(longer after a write that held the batches' lock long: `TagHistorian.every`),
upserting each changed tag once (`TagHistorian.write_last`). Per batch the cost is keeping a view of
its columns; every so often the views are compacted to one row per tag by one sort and one
`unique` (vectorised, no Python loop per tag).

What `tag_last` promises (docs/architecture.md, "Storage"):
- readers in the writer's process (`TagHistorian.last_values`, `Historian.newest_tag_rows`: the
  engine's API, so also the service's HTTP API, its clients and `aggregator query` through a
  service) get the newest committed row of every tag: the table merged with the rows kept here;
- the table itself is at most one interval (`TagHistorian.every`: `WRITE_EVERY`, up to
  `WRITE_EVERY_MAX`) plus one write behind the committed rows while
  a writer runs: a timer thread writes it `WRITE_EVERY` s after the last write (`write_later`; a
  stream's commit that finds it due hands the write to that thread, and `TagHistorian.append`
  writes it itself), and exact after a clean stop (a sink's close writes it);
- after a crash (SIGKILL) the next open of the historian rebuilds it: every batch that adds rows
  not yet written marks, in its own transaction, the earliest timestamp among them
  (`PENDING_TABLE`, one row per write generation and marking batch), and the open folds the rows
  of `tags` from the earliest mark on into `tag_last`.

The write does not stop the batches for long (issue 12: a write of 100,000 tags inside the commit
that came due held the micro-batches queued behind it 0.2 - 1.5 s every 5 s, the p99 latency of a
Modbus stream). It runs on the timer thread, on its own cursor, and upserts slices of
`tag_historian.WRITE_SLICE` tags, each under the batches' lock for that slice only: it takes the
rows kept so far, and batches committed between its slices are kept apart and marked in the next
write generation, whose marker rows this write does not clear (`NewestRows`).

The rule for "newest" is the one of `engine.store.tag_last`: the latest timestamp wins, a NULL
timestamp is older than any, and among equal timestamps the later arrival wins.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
import time
import weakref
from datetime import datetime

from engine.lazy import lazy_module
from engine.store.tag_last import LAST_COLUMNS, LAST_TABLE
from engine.tags import TagBatch, as_frame, tag_schema

pl = lazy_module("polars")

# How often the writer writes its newest rows to `tag_last` (seconds): the staleness of the table
# itself; each write upserts every tag that changed (at 100,000 tags ~0.16-0.4 CPU-s). No reader sees
# that staleness: readers in the writer's process merge the rows kept here, no other process can open
# the file while the writer has it, and after a crash the next open folds what the table missed. So
# the interval is what a write costs against how much a crash leaves to fold: 5 s made the writes a
# third of an idle one-tag stream's CPU (~7 CPU-ms each: a thread, a cursor, upsert, marker delete,
# commit; issue 12), 30 s leaves a crash ~30 s of rows to fold at the next open.
WRITE_EVERY = 30.0
# ... at least: a write's slices hold the batches' lock, and may hold it WRITE_DUTY of the time at
# most, so the interval grows with what the last write took (issue 12: at 100,000 changing tags a
# write took ~0.57 s, every 5 s that was ~11% of the time and of a core; now every ~28 s), up to
# WRITE_EVERY_MAX.
WRITE_DUTY = 0.02
WRITE_EVERY_MAX = 60.0
# Views of batches kept before they are compacted to one row per tag (memory: ~60 bytes a row)...
COMPACT_AFTER = 100_000
# ... and at least this many times the rows of the last compaction: a compaction's cost is mostly
# building its one row per tag (at 100,000 tags ~15 ms of a 200,000-row compaction, Polars'
# `unique` with its gather), so fewer, larger ones cost less (issue 12, every second's 100,000
# rows: 2.6% of a core at 1x, 1.7% at 2x; docs/performance.md) for ~12 MB more views held.
COMPACT_RATIO = 2
# The crash marker: per write generation, the earliest timestamp of rows committed to `tags` and
# not yet to `tag_last` (and whether some had none).
PENDING_TABLE = "tag_last_pending"


@functools.cache
def last_schema() -> pl.Schema:
    """The kept rows' columns (Polars' schema: made when first asked for)."""
    return pl.Schema({c: tag_schema()[c] for c in LAST_COLUMNS})


def _no_rows() -> TagBatch:
    return TagBatch({c: [] for c in LAST_COLUMNS})


def create_sql() -> list[str]:
    return [f"CREATE TABLE IF NOT EXISTS {PENDING_TABLE} (since TIMESTAMPTZ, nulls BOOLEAN, gen BIGINT)"]


def upgrade_sql(columns: set[str]) -> list[str]:
    """A marker table of an earlier version (no write generation) gets its column."""
    return [] if "gen" in columns else [f"ALTER TABLE {PENDING_TABLE} ADD COLUMN gen BIGINT"]


def upsert_sql(source: str) -> str:
    """Rows of `source` (one per tag) into `tag_last`, where not older than the row there."""
    names = ", ".join(LAST_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in LAST_COLUMNS[1:])
    return (
        f"INSERT INTO {LAST_TABLE} ({names}) SELECT {names} FROM {source} ON CONFLICT (tag) DO UPDATE"
        f" SET {updates} WHERE excluded.timestamp >= {LAST_TABLE}.timestamp OR {LAST_TABLE}.timestamp IS NULL"
    )


def newest(frames: list[pl.DataFrame | TagBatch]) -> pl.DataFrame | TagBatch:
    """One row per tag of `frames` (the LAST_COLUMNS, in arrival order) by the rule above: a stable
    sort by timestamp (NULL first) keeps arrival order among ties, and the last row of each tag
    wins. `TagBatch`es only (a stream's few rows): the same rule in Python, and a `TagBatch`."""
    frames = [f for f in frames if f.height]
    if not frames:
        return _no_rows()
    if all(isinstance(f, TagBatch) for f in frames):
        return _newest_rows(frames)  # type: ignore[arg-type]
    frames = [as_frame(f) for f in frames]
    joined = frames[0] if len(frames) == 1 else pl.concat(frames, rechunk=False)
    return joined.sort("timestamp", nulls_last=False, maintain_order=True).unique(
        "tag", keep="last", maintain_order=False
    )


def _newest_rows(batches: list[TagBatch]) -> TagBatch:
    """`newest` of tag batches: per tag the row with the latest timestamp (any beats NULL), the
    later arrival on a tie."""
    rows = TagBatch.concat(batches) if len(batches) > 1 else batches[0]
    best: dict[str, tuple[tuple[bool, int], int]] = {}
    for i, (tag, at) in enumerate(zip(rows.column("tag"), rows.column("timestamp"), strict=True)):
        key = (at is not None, at or 0)
        kept = best.get(tag)
        if kept is None or key >= kept[0]:
            best[tag] = (key, i)
    keep = [i for _, i in best.values()]
    columns = {c: rows.column(c) for c in LAST_COLUMNS}
    return TagBatch({c: [v[i] for i in keep] for c, v in columns.items()})


class GaveWay(Exception):
    """A write of `tag_last` stopped between two slices for another that must write now."""


class NewestRows:
    """The committed rows of one historian not yet written to `tag_last` (see the module doc).

    Locks: `write_lock` serialises the historian's batches (a stream's micro-batch,
    `TagHistorian.append`, retention); `last_lock` serialises the writes of `tag_last` (the timer's,
    a sink's close, retention's). The timer's write holds `write_lock` for one slice at a time only
    (`between_batches`): batches commit between its slices, and wait for one slice at most. A write
    that must finish (a sink's close, `append`, retention) holds `write_lock` throughout, taken
    before `last_lock`, the one order of the two. (Run
    beside the batches, on a cursor of its own without `write_lock`, the write cost more CPU per
    value and one Modbus run of three ran out of the 32 MB memory_limit: two transactions open at
    once.) Whoever must write now while holding `write_lock` (`taking_last`) makes a write under
    way give way between its slices, so neither waits for the other. Readers take a snapshot under
    the short `_lock` and never wait for a write.

    Write generations: every transaction that stores rows belongs to the generation current at its
    first batch (`begin`), and its crash marker row carries that number. A write takes the rows
    kept so far (`take`), moves on to the next generation, and clears only the marker rows of the
    generations below every open transaction's (`clear_below`): a batch that committed (or is
    still open) while the write ran keeps its marker until a later write has its rows."""

    def __init__(self) -> None:
        self.write_lock = threading.RLock()
        self.last_lock = threading.RLock()
        self._lock = threading.Lock()
        self._parts: list[pl.DataFrame] = []  # views of committed batches, arrival order
        self._part_rows = 0
        self._compact: pl.DataFrame | None = None  # one row per tag (arrived before the parts)
        self._writing: pl.DataFrame | None = None  # one row per tag, being written (arrived first)
        self.generation = 1  # of the transactions that begin now
        self.marks: dict[int, tuple[datetime | None, bool]] = {}  # committed marker rows per generation
        self._open: dict[int, int] = {}  # open transactions per generation
        self.last_write = time.monotonic()
        self.recovered = False  # the crash marker was looked at (once per process and historian)
        self._timers: dict[str, threading.Timer] = {}  # the timer thread of each kind of work
        # ... and those whose work runs after it left `_timers` (`again_while_running`): `settle`
        # waits for them too
        self._running: dict[str, set[threading.Timer]] = {}
        self._give_way = threading.Event()  # someone waits for `last_lock`: a write stops between slices
        # checkpoints between the batches (`TagHistorian._checkpoint_soon`): the timer's checkpoints
        # so far, the last one's refusal
        # the rollup's advance between the batches (`TagHistorian.advance_rollup`): the minute the
        # batches asked for and about how many tags, the advance under way (`tag_rollup.Advance`,
        # changed under `write_lock`), one advancing thread at a time, its last failure
        self.rollup_due: int | None = None
        self.rollup_tags = 0
        self.advance = None
        self.rollup_lock = threading.Lock()
        self.rollup_error: str | None = None
        self.checkpoints = 0
        self.checkpoint_error: str | None = None

    # ---- locks ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def taking_last(self):
        """`last_lock` for a write that must happen now (a sink's close, `append`, retention: these
        may hold `write_lock` already). A write under way that waits for `write_lock` between its
        slices gives way (`GaveWay`), so the two never wait for each other; this one writes all."""
        if not self.last_lock.acquire(blocking=False):
            self._give_way.set()
            try:
                self.last_lock.acquire()
            finally:
                self._give_way.clear()
        try:
            yield
        finally:
            self.last_lock.release()

    @contextlib.contextmanager
    def between_batches(self, may_give_way: bool = False):
        """`write_lock` for one slice of a write, which holds `last_lock`: waits for the batch under
        way to end, or (`may_give_way`: the timer's write, which need not finish) gives way
        (`GaveWay`) to someone who waits for `last_lock` meanwhile."""
        while not self.write_lock.acquire(timeout=0.02 if may_give_way else -1):
            if self._give_way.is_set():
                raise GaveWay
        try:
            if may_give_way and self._give_way.is_set():
                raise GaveWay
            yield
        finally:
            self.write_lock.release()

    def write_later(self, delay: float, write) -> None:
        """Call `write()` in `delay` seconds on a timer thread, unless one is pending already: rows
        committed by a stream that then commits nothing for a while still reach the table, and a
        commit that finds the table due hands its write to this thread (the batches go on)."""
        self.later("last", delay, write, again_while_running=True)

    def later(self, kind: str, delay: float, work, again_while_running: bool = False) -> None:
        """Call `work()` in `delay` seconds on a timer thread of its own, unless one of this `kind`
        is pending already, or running (unless `again_while_running`: the write of `tag_last` asks
        for the next one itself). The write of `tag_last`, a checkpoint, the rollup's advance: each
        is work between the batches, off the stream's thread."""
        with self._lock:
            pending = self._timers.get(kind)
            if pending is not None and pending.is_alive() and not pending.finished.is_set():
                return

            def due() -> None:
                if again_while_running:
                    with self._lock:
                        if self._timers.get(kind) is timer:
                            del self._timers[kind]  # the work may ask for the next one
                        self._running.setdefault(kind, set()).add(timer)
                try:
                    work()
                finally:
                    if again_while_running:
                        with self._lock:
                            self._running[kind].discard(timer)

            # Not a daemon: one stopped inside Polars or DuckDB at the interpreter's finalization
            # aborts the process; `_at_exit` cancels it before threads are joined.
            timer = threading.Timer(max(0.0, delay), due)
            timer.daemon = False
            self._timers[kind] = timer
            timer.start()

    def settle(self, kinds: tuple[str, ...], timeout: float = 120.0) -> None:
        """Timers of these kinds that have not started are cancelled, and one running is waited for
        (a sink's close: the historian may be closed next, and DuckDB refuses to close a connection
        while a cursor of it runs a statement), also a write of `tag_last` that had left `_timers`
        to let its work ask for the next (it once ran on while `Historian.close` closed the
        connection: "connection is busy"). Not while holding `write_lock`, which they wait for."""
        deadline = time.monotonic() + timeout
        while True:  # again: a running write may have asked for the next one meanwhile
            with self._lock:
                timers = [self._timers.pop(k) for k in kinds if k in self._timers]
                timers += [t for k in kinds for t in self._running.get(k, ())]
            timers = [t for t in timers if t is not threading.current_thread()]
            if not timers or time.monotonic() >= deadline:
                return
            for timer in timers:
                timer.cancel()
                timer.join(max(0.0, deadline - time.monotonic()))

    @contextlib.contextmanager
    def one_batch_gap(self):
        """`write_lock` for work between two batches that may wait (a checkpoint, a slice of the
        rollup's advance), taken in short waits so that interpreter exit does not wait for it:
        yields False (lock not held) once the process is exiting."""
        while not self.write_lock.acquire(timeout=0.05):
            if _EXITING.is_set():
                yield False
                return
        try:
            yield True
        finally:
            self.write_lock.release()

    def want_rollup(self, minute: int, tags: int) -> None:
        """A batch asks for the rollup up to `minute` (of about `tags` tags)."""
        with self._lock:
            self.rollup_due = minute if self.rollup_due is None else max(self.rollup_due, minute)
            self.rollup_tags = max(self.rollup_tags, tags)

    def rollup_done(self, minute: int) -> None:
        """The rollup reached `minute`: nothing is due unless a batch asked for more meanwhile."""
        with self._lock:
            if self.rollup_due is not None and self.rollup_due <= minute:
                self.rollup_due = None

    # ---- the writers' transactions ----------------------------------------------------------------
    def begin(self) -> int:
        """A transaction stores its first batch: its generation (counted open until `add`/`abandon`)."""
        with self._lock:
            generation = self.generation
            self._open[generation] = self._open.get(generation, 0) + 1
            return generation

    def mark_of(self, generation: int) -> tuple[datetime | None, bool] | None:
        """The committed marker of this generation (what its rows in PENDING_TABLE say), if any."""
        with self._lock:
            return self.marks.get(generation)

    def _close(self, generation: int) -> None:
        left = self._open.get(generation, 0) - 1
        if left > 0:
            self._open[generation] = left
        else:
            self._open.pop(generation, None)

    def abandon(self, generation: int) -> None:
        """The transaction of `begin` rolled back: nothing of it is kept or marked."""
        with self._lock:
            self._close(generation)

    def add(
        self, frames: list[pl.DataFrame], generation: int, marked: tuple[datetime | None, bool] | None
    ) -> None:
        """The transaction of `begin` committed these batches (LAST_SCHEMA, arrival order), and
        the marker (since, nulls) it added for its generation, if it added one."""
        with self._lock:
            self._parts.extend(frames)
            self._part_rows += sum(f.height for f in frames)
            if marked is not None:
                self.marks[generation] = merge_marks(self.marks.get(generation), marked)
            self._close(generation)
            compact = self._part_rows >= max(
                COMPACT_AFTER, 0 if self._compact is None else COMPACT_RATIO * self._compact.height
            )
        if compact:
            self._compacted()

    # ---- the writes of `tag_last` -------------------------------------------------------------------
    def take(self) -> tuple[pl.DataFrame, int]:
        """For a write (under `last_lock`): one row per tag of everything kept, and the generation
        below which its marker rows may be cleared once the rows are in the table. Batches that
        commit from now on belong to the next generation and are kept apart."""
        with self._lock:
            assert self._writing is None, "one write at a time (last_lock)"
            self._compact_parts()
            rows = _no_rows() if self._compact is None else self._compact
            self._writing, self._compact = rows, None
            clear_below = min([self.generation + 1, *self._open])
            self.generation += 1
            return rows, clear_below

    def to_clear(self, clear_below: int) -> bool:
        with self._lock:
            return any(g < clear_below for g in self.marks)

    def written(self, clear_below: int) -> None:
        """The rows of `take` are in `tag_last` now, and the marker rows below `clear_below` gone."""
        with self._lock:
            self._writing = None
            self.marks = {g: m for g, m in self.marks.items() if g >= clear_below}
            self.last_write = time.monotonic()

    def not_written(self) -> None:
        """The write of `take`'s rows failed: they are kept again (before everything that came
        since), and their marker rows were not cleared."""
        with self._lock:
            if self._writing is not None and self._writing.height:  # arrival order: these came first
                older = [self._writing] + ([] if self._compact is None else [self._compact])
                self._parts = older + self._parts
                self._compact = None
                self._part_rows = sum(f.height for f in self._parts)
            self._writing = None

    # ---- readers ------------------------------------------------------------------------------------
    def _compacted(self) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
        """(rows being written, the rest compacted to one row per tag)."""
        with self._lock:  # held while compacting (tens of ms at 100,000 tags): one compaction at a time
            self._compact_parts()
            return self._writing, self._compact

    def _compact_parts(self) -> None:
        """The views kept so far, folded into the compacted rows: one row per tag (`_lock` held)."""
        if self._parts:
            older = [] if self._compact is None else [self._compact]
            self._compact = newest(older + self._parts)
            self._parts, self._part_rows = [], 0

    def rows(self) -> pl.DataFrame:
        """One row per tag of everything kept, the rows of a write under way included (compacts the
        views): a frame of `last_schema()`."""
        writing, compact = self._compacted()
        if writing is None:
            kept = last_schema().to_frame() if compact is None else compact
        else:
            kept = writing if compact is None else newest([writing, compact])
        return as_frame(kept).select(LAST_COLUMNS) if kept.height else last_schema().to_frame()

    @property
    def empty(self) -> bool:
        with self._lock:
            return (
                not self._parts
                and (self._compact is None or self._compact.height == 0)
                and (self._writing is None or self._writing.height == 0)
            )

    @property
    def marked(self) -> bool:
        """Whether the crash marker holds a committed row of this process."""
        with self._lock:
            return bool(self.marks)


def merge_marks(
    a: tuple[datetime | None, bool] | None, b: tuple[datetime | None, bool] | None
) -> tuple[datetime | None, bool] | None:
    """One marker covering both: the earlier `since` (None: no timestamped row), either's NULLs."""
    if a is None or b is None:
        return a if b is None else b
    since = a[0] if b[0] is None else b[0] if a[0] is None else min(a[0], b[0])
    return since, a[1] or b[1]


def covers(mark: tuple[datetime | None, bool] | None, earliest: datetime | None, nulls: bool) -> bool:
    """Whether a marker covers rows from `earliest` on (and NULL timestamps, if `nulls`)."""
    if mark is None:
        return False
    since, had_nulls = mark
    if nulls and not had_nulls:
        return False
    return earliest is None or (since is not None and since <= earliest)


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
            timers, rows._timers = list(rows._timers.values()), {}
        for timer in timers:
            timer.cancel()
        rows._give_way.set()  # a timer's write stops at its next slice
        if rows.last_lock.acquire(timeout=10):  # the timer's write holds it while it writes
            rows.last_lock.release()


# Run before non-daemon threads are joined (as concurrent.futures does); atexit would run after.
getattr(threading, "_register_atexit", atexit.register)(_at_exit)


def exiting() -> bool:
    return _EXITING.is_set()


def settle_before_close(historian) -> None:
    """Before this `Historian` object closes: its timers that have not started are cancelled and
    one running is waited for (DuckDB refuses to close a connection while a cursor of it runs a
    statement). Nothing is lost: rows a cancelled write would have written are kept, and folded
    from the tag table at the next open (see the module's docstring)."""
    with _REGISTRY_LOCK:
        rows = _REGISTRY.get(historian)
    if rows is not None:
        rows.settle(("last", "rollup", "checkpoint"))


def shared(registry: weakref.WeakKeyDictionary, historian, make):
    """What `registry` keeps for this `Historian` object (made by `make()` at the first ask): the
    state its writers and readers share, gone with the object."""
    with _REGISTRY_LOCK:
        found = registry.get(historian)
        if found is None:
            found = registry[historian] = make()
        return found


def of(historian) -> NewestRows:
    """The rows kept for this `Historian` object (its writers and readers share them)."""
    return shared(_REGISTRY, historian, NewestRows)
