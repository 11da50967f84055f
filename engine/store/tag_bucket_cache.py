"""Closed buckets of raw-row historian queries, remembered (`TagHistorian.query`, buckets that are
not whole minutes: those read every raw row of their window, ~23 ms of CPU per million rows).

The API's time series asks again and again for the same tags, bucket width and statistics over a
window that slides with the clock ("the last 5 min in 10 s buckets"). Every bucket but the newest
ones is the same answer as a second ago, unless a value for it came in since. So for each such
query (tags, width, statistics, bad values or not) the buckets computed once are kept, and a later
query reads from raw rows only what the cache cannot answer: the bucket its start cuts through, and
the buckets from the cache's horizon to its end. What it computed whole is added to the cache.

What makes a cached bucket wrong is a row written for its time after it was computed (a late value,
a back-fill) or a row deleted (retention). Every write to the `tags` table goes through
`TagHistorian.insert` or `apply_retention` in this process (the historian file belongs to one
process), and each tells this module (`note_write`): a sequence number and the earliest timestamp it
wrote (retention: "everything"). A cache entry remembers the sequence number it had seen; when read,
every write noted since lowers its horizon to the bucket of that write's earliest timestamp.

A write is noted when its rows are inserted, before its transaction commits, and a reader's
snapshot may not see it yet. So each insert also adds its sequence number to `_tag_writes` in the
same transaction, and a query that fills the cache asks its own snapshot which of the noted writes
it can see: its horizon stays below the earliest timestamp of any it cannot. A write rolled back
(a failed sink) is never seen and keeps caches below its earliest timestamp until the process
restarts; more than `MAX_UNSEEN` such writes turn the cache off for that historian.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from engine.lazy import lazy_module

pl = lazy_module("polars")


WRITES_TABLE = "_tag_writes"  # seq BIGINT: the writes committed (one row per insert)
MAX_ENTRIES = 64  # queries remembered per process (least recently used dropped)
MAX_NOTES = 20_000  # writes remembered; an entry older than all of them is dropped
MAX_UNSEEN = 256
KEEP_WRITE_ROWS = 50_000  # rows `_tag_writes` keeps (older ones deleted by the writer)
EVERYTHING = -(2**62)  # "earliest timestamp" of a retention delete


def create_sql() -> str:
    return f"CREATE TABLE IF NOT EXISTS {WRITES_TABLE} (seq BIGINT)"


@dataclass
class _Entry:
    seq: int  # the last write noted when it was (re)computed
    lo: int  # first bucket number held
    hi: int  # buckets before this number are held (the horizon); every bucket in [lo, hi)
    frame: pl.DataFrame  # the rows of buckets [lo, hi) (buckets with no row have none)


@dataclass
class _Historian:
    """What one historian file's writers told: (seq, earliest µs) of the newest writes."""

    key: tuple[str, int]
    # sequence numbers go into `_tag_writes`, which outlives the process: start past any earlier one
    seq: int = field(default_factory=time.time_ns)
    forgotten: int = 0  # the newest write pushed out of `notes`
    notes: collections.deque = field(default_factory=lambda: collections.deque(maxlen=MAX_NOTES))
    unseen: dict[int, int] = field(default_factory=dict)  # seq -> earliest µs, not yet seen committed
    entries: collections.OrderedDict = field(default_factory=collections.OrderedDict)


_lock = threading.Lock()
_historians: dict[str, _Historian] = {}


def _file_key(path: str) -> tuple[str, int]:
    try:
        return path, os.stat(path).st_ino
    except OSError:
        return path, -1


def _state(path: str) -> _Historian:
    """Under `_lock`. A file replaced at the same path (a new inode) starts afresh."""
    key = _file_key(path)
    state = _historians.get(path)
    if state is None or state.key != key:
        state = _historians[path] = _Historian(key)
    return state


def note_write(path: str, earliest_us: int | None) -> int:
    """A write to the `tags` table of the historian at `path` is about to be committed; its sequence
    number (the caller writes it to `_tag_writes` in the same transaction). `earliest_us` None: rows
    without a timestamp only (no bucket of a bounded query changes)."""
    with _lock:
        state = _state(path)
        state.seq += 1
        if earliest_us is not None:
            if len(state.notes) == state.notes.maxlen:
                state.forgotten = state.notes[0][0]
            state.notes.append((state.seq, earliest_us))
            state.unseen[state.seq] = earliest_us
        return state.seq


def note_delete(path: str) -> None:
    """Rows were deleted (retention): every cached bucket may be wrong."""
    with _lock:
        state = _state(path)
        state.seq += 1
        if len(state.notes) == state.notes.maxlen:
            state.forgotten = state.notes[0][0]
        state.notes.append((state.seq, EVERYTHING))
        state.entries.clear()


def mark_seen(path: str, seen: set[int]) -> None:
    with _lock:
        state = _state(path)
        for seq in seen:
            state.unseen.pop(seq, None)


def unseen(path: str) -> list[int]:
    with _lock:
        return list(_state(path).unseen)


def current_seq(path: str) -> int:
    with _lock:
        return _state(path).seq


def _floor(value: int, width: int) -> int:
    return value // width


def lookup(path: str, key: Any, width: int) -> _Entry | None:
    """The entry for `key`, its horizon lowered by every write noted since it was computed (those
    writes' rows are then read raw); None when there is none."""
    with _lock:
        state = _state(path)
        entry = state.entries.get(key)
        if entry is None:
            return None
        if entry.seq < state.forgotten:
            del state.entries[key]  # writes since then were forgotten: nothing to trust
            return None
        if entry.seq < state.seq:
            for seq, earliest in reversed(state.notes):
                if seq <= entry.seq:
                    break
                entry.hi = min(entry.hi, _floor(earliest, width))
            entry.seq = state.seq
            if entry.hi <= entry.lo:
                del state.entries[key]
                return None
            entry.frame = entry.frame.filter(pl.col("_n") < entry.hi)
        state.entries.move_to_end(key)
        return _Entry(entry.seq, entry.lo, entry.hi, entry.frame)


def horizon_limit(path: str, invisible: set[int], width: int) -> int | None:
    """The bucket below which a snapshot that cannot see the writes `invisible` may be cached."""
    with _lock:
        state = _state(path)
        if len(state.unseen) > MAX_UNSEEN:
            return EVERYTHING
        lows = [state.unseen[s] for s in invisible if s in state.unseen]
    return _floor(min(lows), width) if lows else None


def store(path: str, key: Any, seq: int, lo: int, hi: int, frame: pl.DataFrame, keep_from: int) -> None:
    """Remember buckets [lo, hi) (`frame`, with the bucket number in `_n`), computed from a snapshot
    taken after write `seq` was noted (writes noted later lower its horizon at the next lookup).
    Joined to the entry held when the two ranges touch: the new buckets replace the old ones."""
    if hi <= lo:
        return
    with _lock:
        state = _state(path)
        old = state.entries.get(key)
        if old is not None and lo <= old.hi and old.lo <= hi:
            keep = old.frame.filter((pl.col("_n") < lo) | (pl.col("_n") >= hi))
            frame = pl.concat([keep, frame], how="vertical_relaxed")
            lo, hi, seq = min(old.lo, lo), max(old.hi, hi), min(old.seq, seq)
        if lo < keep_from < hi:  # buckets the window has left
            frame, lo = frame.filter(pl.col("_n") >= keep_from), keep_from
        state.entries[key] = _Entry(seq, lo, hi, frame)
        state.entries.move_to_end(key)
        while len(state.entries) > MAX_ENTRIES:
            state.entries.popitem(last=False)


def clear() -> None:
    """Forget everything (tests)."""
    with _lock:
        _historians.clear()
