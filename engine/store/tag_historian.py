"""The tag historian: every protocol value in one long DuckDB table, with retention and trends.

Tables (in the historian file of the data directory):
- `tags`: one row per value, the columns of `engine.tags.TAG_SCHEMA`. Batches go in as Arrow
  (no copies), one INSERT per batch, never row by row.
- `tag_last`: the newest record of each tag, so "what is every tag now" never scans the long
  table. The writer keeps the newest committed rows in memory and writes them to `tag_last` every
  few seconds, each changed tag once (`engine.store.tag_newest`: what readers in this and in other
  processes see, and how a start after a crash rebuilds it). (`tag_last_log`, the per-batch log
  of earlier versions, is folded in once at the first open.)
- `tag_minutes` (+ `tag_minutes_state`): the 1-minute rollup (`engine.store.tag_rollup`), per tag
  per minute the partial statistics of every raw row older than `rolled_up_to` (a minute behind the
  newest value), moved on between the batches, one slice of tags a transaction, once a batch
  committed a new minute (`TagHistorian.advance_rollup`).
- Checkpoints: a stream's commits do not checkpoint; a timer thread does, between two batches, once
  the WAL holds `CHECKPOINT_WAL` bytes (`TagHistorian._checkpoint_soon`).

Query rule: buckets of whole minutes (1m, 5m, 1h, 1d...) read the rollup for whole minutes before
`rolled_up_to`, and raw rows for the newest minutes and for the partial minutes where `start` or
`end` cut through a minute; finer buckets (10s, 90s...) read raw rows only. Both paths give the raw
computation's result (`sum` and `avg` up to floating-point rounding); `use_rollup=False` forces raw.
Raw-row queries with a start and an end keep the buckets they computed whole
(`engine.store.tag_bucket_cache`), so a window that slides with the clock reads raw rows only at
its edges; a write for a kept bucket's time (late, back-filled, not yet committed when it was kept)
or a retention delete makes it read raw again. `use_cache=False` reads everything raw.

Queries bucket values from the Unix epoch (as Polars' `dt.truncate` and DuckDB's `time_bucket` with
the epoch as origin do), one row per tag per bucket. Values of quality `bad` are left out of the value
statistics by default (a comm-lost gap must not pull an average to zero) and counted in `bad_count`.

Tag selectors, used by queries and retention: an exact name, a glob (`turbine01.*`, `*.power`) or,
with the prefix `re:`, a regular expression matched against the whole name.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import re
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from engine.errors import UsageError
from engine.lazy import lazy_module
from engine.store import tag_bucket_cache, tag_last, tag_newest, tag_rollup, tag_rollup_memory
from engine.store.historian import Historian, arrow_stream
from engine.store.tag_last import LAST_TABLE
from engine.store.tag_rollup import MINUTE_US, MINUTES_TABLE, STATE_TABLE, floor_div
from engine.tags import TAG_COLUMNS, TIME_COLUMNS, TagBatch, conform, from_epoch_us, tag_schema

pl = lazy_module("polars")

TAGS_TABLE = "tags"
STATISTICS = ("avg", "min", "max", "first", "last", "sum", "count")
DEFAULT_STATISTICS = ("avg", "min", "max", "last", "count")
_BATCH = "_tag_batch"
# Late partial rows appended to the rollup before a compaction merges them (a merge of that many
# small rows takes tens of ms).
COMPACT_AFTER = 100_000
# The rollup moves up to LAG_MINUTES before the newest value's minute: only that minute stays raw
# (at most 60k rows at 1,000 tags a second for a query to aggregate; a lag of 1 doubled that and
# measured +90 ms on an all-tags query under load). Values that come in after their minute was
# rolled up cost one late partial row per tag and batch, merged by the next compaction.
LAG_MINUTES = 0
# Rows of `tag_last` written per statement and transaction: an upsert of 100,000 tags at once ran
# out of the historian's 32 MB memory_limit (issue 12, docs/performance.md).
LAST_SLICE = 20_000
# Rows of `tag_last` a write upserts between two batches (under the batches' lock, so a micro-batch
# waits for one slice at most, ~15 - 40 ms, not for the whole write of 100,000 tags).
WRITE_SLICE = 10_000
_LAST_ROWS = "_tag_last_rows"
# The rollup's advance writes the minutes the writer kept in memory when it kept them whole
# (`engine.store.tag_rollup_memory`), and reads raw rows only for the rest.
KEEP_MINUTES = True
_KEPT_ROWS = "_tag_kept_minutes"
# Checkpoints (issue 12): DuckDB checkpoints by itself in the COMMIT that takes the WAL past
# `checkpoint_threshold` (16 MiB by default), and a batch's INSERT waits for a checkpoint under
# way. At 100,000 values/s such COMMITs took 0.25 - 2.4 s at load 9 (the Modbus p99). A stream's
# historian instead checkpoints on a timer thread between two batches once the WAL holds
# CHECKPOINT_WAL bytes (docs/performance.md, round 4: a stream's write + COMMIT p99 1.5 - 2.1 s ->
# 0.26 - 0.43 s at load 5 - 6). As much WAL as DuckDB's default: checkpoints at 8 MiB were twice
# as many, shorter, and cost more CPU (31% of the pipeline's py-spy samples). DuckDB's own threshold
# is raised to CHECKPOINT_THRESHOLD for the connection, so that a stream's COMMIT does not checkpoint
# while the timer keeps up; it still bounds the WAL of every writer of the connection when the timer
# does not (or no stream runs).
CHECKPOINT_WAL = 16 * 2**20
CHECKPOINT_THRESHOLD = "64MiB"

# The bucket answers are small: DuckDB's copy to Arrow of a DB-API result costs less than binding
# the statement twice as a relation (`TagHistorian._buckets`).
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)

_UNITS_US = {
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "min": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}
_DURATION = re.compile(r"\s*(\d+)\s*(ms|s|min|m|h|d|w)\s*")


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """`"500ms"`, `"10s"`, `"1m"`, `"2h"`, `"30d"`, `"1w"` as a timedelta (> 0)."""
    match = _DURATION.fullmatch(str(text))
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"{what} '{text}': give a positive number with a unit ms, s, m, h, d or w (e.g. 1m)")
    return timedelta(microseconds=int(match.group(1)) * _UNITS_US[match.group(2)])


def _is_pattern(selector: str) -> bool:
    return selector.startswith("re:") or any(ch in selector for ch in "*?[")


def selector_matcher(selector: str):
    """A predicate `name -> bool` for one tag selector (exact, glob, or `re:` regex)."""
    if selector.startswith("re:"):
        try:
            regex = re.compile(selector[3:])
        except re.error as exc:
            raise UsageError(f"tag pattern '{selector}': bad regular expression ({exc})") from None
        return lambda name: regex.fullmatch(name) is not None
    if _is_pattern(selector):
        return lambda name: fnmatch.fnmatchcase(name, selector)
    return lambda name: name == selector


@dataclass(frozen=True)
class RetentionRule:
    """Tags matching `pattern` keep `keep` (e.g. "30d") of history; the first matching rule wins."""

    pattern: str
    keep: timedelta

    @classmethod
    def of(cls, rule: RetentionRule | dict) -> RetentionRule:
        if isinstance(rule, RetentionRule):
            return rule
        keep = rule["keep"]
        keep = keep if isinstance(keep, timedelta) else parse_duration(keep, "retention keep")
        selector_matcher(rule["pattern"])  # a bad regex fails here, not at the first clean-up
        return cls(pattern=rule["pattern"], keep=keep)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_us(value: datetime) -> int:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return (value - _EPOCH) // timedelta(microseconds=1)


def _from_epoch_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _in_transaction(cur: duckdb.DuckDBPyConnection, work, own: bool = True) -> None:
    """`work` (a list of statements or a callable) in a transaction of its own, or (`own=False`) in
    the caller's, who commits or rolls back. (DuckDB has no "is a transaction open" question: a
    second BEGIN is an error that aborts the open transaction, so callers say which it is.)"""
    if own:
        cur.execute("BEGIN TRANSACTION")
    try:
        if callable(work):
            work()
        else:
            for statement in work:
                cur.execute(statement)
        if own:
            cur.execute("COMMIT")
    except BaseException:
        if own:
            cur.execute("ROLLBACK")
        raise


def _unregister(cur: duckdb.DuckDBPyConnection, name: str) -> None:
    """Unregister a view without masking the error that aborted the transaction (DuckDB refuses
    the unregister then with "Current transaction is aborted", which hid an out-of-memory)."""
    with contextlib.suppress(duckdb.Error):
        cur.unregister(name)


@contextlib.contextmanager
def _scan(cur: duckdb.DuckDBPyConnection, name: str, batch: pl.DataFrame | TagBatch):
    """(relation, parameters) a statement reads `batch` from: a frame is registered as `name` (the
    Arrow C stream, no copy), a `TagBatch`'s few rows are a VALUES list of statement parameters,
    typed as the tag columns (no Polars: issue 12 item 4)."""
    if isinstance(batch, TagBatch):
        names = batch.columns
        cells = "(" + ", ".join("?" * len(names)) + ")"
        typed = ", ".join(f"c{i}::{_SQL_TYPES.get(n, 'VARCHAR')} AS {n}" for i, n in enumerate(names))
        aliases = ", ".join(f"c{i}" for i in range(len(names)))
        values = ", ".join([cells] * batch.height)
        yield (
            f"(SELECT {typed} FROM (VALUES {values}) AS _v({aliases}))",
            [x for r in batch.rows() for x in r],
        )
        return
    cur.register(name, arrow_stream(batch))
    try:
        yield name, []
    finally:
        _unregister(cur, name)


_SQL_TYPES = {"value": "DOUBLE", **dict.fromkeys(TIME_COLUMNS, "TIMESTAMPTZ")}


def _values_insert_sql(batch: TagBatch) -> str:
    """`INSERT INTO tags (its columns) VALUES (?, ...), ...` for `_scan`'s parameters of `batch`:
    DuckDB types each parameter as its column (measured: 0.75 against 1.15 CPU-ms a one-row batch
    through `_scan`'s typed VALUES relation)."""
    row = "(" + ", ".join("?" * batch.width) + ")"
    return f"INSERT INTO {TAGS_TABLE} ({', '.join(batch.columns)}) VALUES {', '.join([row] * batch.height)}"


def _to_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class TagHistorian:
    """Tag storage on a `Historian` (its shared DuckDB connection; a cursor per call/thread)."""

    def __init__(
        self,
        historian: Historian,
        retention: Iterable[RetentionRule | dict] = (),
        default_retention: str | timedelta | None = None,
        compact_after: int = COMPACT_AFTER,
    ):
        self.historian = historian
        self.compact_after = compact_after
        self._pending_rows = 0  # rollup rows appended since the last compaction...
        self._pending_from: int | None = None  # ...and the earliest minute among them
        self.newest = tag_newest.of(historian)  # committed rows not yet in `tag_last` (shared)
        # the open minutes' rollup partials, kept as batches commit (shared; None: the advance
        # always reads raw rows, as the tests' reference does)
        self.kept = tag_rollup_memory.of(historian) if KEEP_MINUTES else None
        self._keep_from: int | None = None  # minutes this transaction's rows are kept from
        self.last_every = tag_newest.WRITE_EVERY  # seconds between writes of `tag_last`, at least
        self.last_took = 0.0  # seconds the last write of `tag_last` held the batches' lock (`every`)
        self.write_slice = WRITE_SLICE  # rows of `tag_last` upserted between two batches
        self.checkpoint_wal = CHECKPOINT_WAL  # WAL bytes at which the timer checkpoints (streams)
        self._uncommitted: list[pl.DataFrame] = []  # this writer's batches in its open transaction
        self._marking: tuple[datetime | None, bool] | None = None  # the crash marker it set there
        self._generation: int | None = None  # the write generation of its open transaction
        self._known_tags = 0  # rows of `tag_last` at the last write (slices the rollup's advance)
        self.retention = [RetentionRule.of(r) for r in retention]
        if isinstance(default_retention, str):
            default_retention = parse_duration(default_retention, "default retention")
        self.default_retention = default_retention
        self._ready = False

    # ---- schema ---------------------------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self.historian.cursor()
        cur.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ comes out in UTC whatever the machine's zone
        if not self._ready:
            self.ensure_tables(cur)
        return cur

    def ensure_tables(self, cur: duckdb.DuckDBPyConnection, in_transaction: bool = False) -> None:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {TAGS_TABLE} (timestamp TIMESTAMPTZ, tag VARCHAR, value DOUBLE,"
            " value_text VARCHAR, quality VARCHAR, reason VARCHAR, source VARCHAR,"
            " server_timestamp TIMESTAMPTZ, received_at TIMESTAMPTZ)"
        )
        cur.execute(tag_bucket_cache.create_sql())
        for statement in (*tag_last.create_sql(), *tag_newest.create_sql()):
            cur.execute(statement)
        present = {
            r[0]
            for r in cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_name IN (?, ?)",
                [MINUTES_TABLE, STATE_TABLE],
            ).fetchall()
        }
        if MINUTES_TABLE not in present or STATE_TABLE not in present:
            # A historian written before the rollup existed: build it once from every raw row, and
            # call all of it rolled up (later values of its newest minute come in as late rows).
            work = [tag_rollup.create_sql(), *tag_rollup.state_sql()]
            if MINUTES_TABLE not in present:
                work.append(tag_rollup.insert_sql(TAGS_TABLE))
            work.append(
                f"UPDATE {STATE_TABLE} SET rolled_up_to = (SELECT max(minute) + 1 FROM {MINUTES_TABLE})"
            )
            _in_transaction(cur, work, own=not in_transaction)
        if not self.newest.recovered:
            with self.newest.write_lock:
                if not self.newest.recovered:
                    _in_transaction(cur, lambda: self._recover_last(cur), own=not in_transaction)
                    self.newest.recovered = True
        self._ready = True

    def _recover_last(self, cur: duckdb.DuckDBPyConnection) -> None:
        """At the first open in this process: rows a writer committed to `tags` and did not write
        to `tag_last` before it died (the crash marker, `engine.store.tag_newest`) are folded into
        `tag_last`, and what the per-batch log of earlier versions holds."""
        marker = cur.execute(
            f"SELECT min(since), bool_or(nulls), count(*) FROM {tag_newest.PENDING_TABLE}"
        ).fetchall()[0]
        since, nulls, marks = marker
        columns = {
            r[0]
            for r in cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                [tag_newest.PENDING_TABLE],
            ).fetchall()
        }
        for statement in tag_newest.upgrade_sql(columns):
            cur.execute(statement)
        if since is not None or nulls:
            clauses = ([] if since is None else ["timestamp >= ?"]) + (["timestamp IS NULL"] if nulls else [])
            where, params = "(" + " OR ".join(clauses) + ")", ([] if since is None else [since])
            rows = cur.execute(f"SELECT count(*) FROM {TAGS_TABLE} WHERE {where}", params).fetchall()[0][0]
            parts = max(1, -(-rows // LAST_SLICE))  # slices by hash of the tag: the upsert's memory
            names = ", ".join(tag_last.LAST_COLUMNS)
            for part in range(parts):
                cur.execute(
                    tag_newest.upsert_sql(
                        f"(SELECT {names} FROM {TAGS_TABLE} WHERE {where} AND hash(tag) % {parts} = {part}"
                        " QUALIFY row_number() OVER (PARTITION BY tag ORDER BY timestamp DESC NULLS LAST,"
                        " rowid DESC) = 1)"
                    ),
                    params,
                )
        if marks:
            cur.execute(f"DELETE FROM {tag_newest.PENDING_TABLE}")
        # an advance of the rollup stopped between its slices (see `tag_rollup.Advance`)
        upto = cur.execute(tag_rollup.rolled_up_to_sql()).fetchall()
        upto = upto[0][0] if upto else None
        where = "minute IS NOT NULL" if upto is None else f"minute >= {upto}"
        if cur.execute(f"SELECT count(*) FROM {MINUTES_TABLE} WHERE {where}").fetchall()[0][0]:
            cur.execute(tag_rollup.unfinished_sql(upto))
        if cur.execute(f"SELECT count(*) FROM {tag_last.LOG_TABLE}").fetchall()[0][0]:
            for statement in tag_last.fold_sql():
                cur.execute(statement)

    # ---- writing --------------------------------------------------------------------------------
    def append(self, batch: pl.DataFrame | TagBatch, cur: duckdb.DuckDBPyConnection | None = None) -> int:
        """Store one TAG_SCHEMA batch (a frame, or a `TagBatch` of every tag column): its rows, its
        rollup partials and its newest row per tag. With `cur` the caller owns the transaction (a
        sink); without, the batch commits on its own."""
        if batch.height == 0:
            return 0
        if isinstance(batch, TagBatch) and batch.columns != TAG_COLUMNS:
            batch = batch.frame()
        if not isinstance(batch, TagBatch) and batch.schema != tag_schema():
            batch = conform(batch)
        if cur is not None:  # the caller commits, then calls committed() (or rolled_back())
            self.insert(cur, batch)
            return batch.height
        with self.newest.write_lock:
            cur = self.cursor()
            try:
                try:
                    _in_transaction(cur, lambda: self.insert(cur, batch))
                except BaseException:
                    self.rolled_back()
                    raise
                self.committed(cur, write_now=True)
            finally:
                cur.close()
        return batch.height

    def insert(self, cur: duckdb.DuckDBPyConnection, batch: pl.DataFrame | TagBatch) -> None:
        """`append` in the caller's open transaction (no conforming: `batch` is TAG_SCHEMA, or a
        `TagBatch` of every tag column)."""
        if not self._ready:
            self.ensure_tables(cur, in_transaction=True)
        if isinstance(batch, TagBatch):
            known = [t for t in batch.column("timestamp") if t is not None]
            nulls = len(known) < batch.height
            earliest, latest = (
                (from_epoch_us(min(known)), from_epoch_us(max(known))) if known else (None, None)
            )
        else:
            stamps = batch.get_column("timestamp")
            earliest, latest, nulls = stamps.min(), stamps.max(), stamps.null_count() > 0
        self._mark_pending(cur, earliest, nulls)  # type: ignore[arg-type]
        # cached query buckets from `earliest` on are read again (engine/store/tag_bucket_cache.py)
        path = str(self.historian.path)
        seq = tag_bucket_cache.note_write(path, None if earliest is None else _epoch_us(earliest))  # type: ignore[arg-type]
        cur.execute(f"INSERT INTO {tag_bucket_cache.WRITES_TABLE} VALUES (?)", [seq])
        if seq % 4096 == 0:
            cur.execute(
                f"DELETE FROM {tag_bucket_cache.WRITES_TABLE} WHERE seq < ?",
                [seq - tag_bucket_cache.KEEP_WRITE_ROWS],
            )
        if self.kept is not None and not self.kept.started:
            self.kept.start(self._newest_raw_minute(cur))
        with _scan(cur, _BATCH, batch) as (rows, params):
            if isinstance(batch, TagBatch):  # the parameters straight into the columns: ~30% less CPU
                cur.execute(_values_insert_sql(batch), params)
            else:
                cur.execute(f"INSERT INTO {TAGS_TABLE} BY NAME SELECT * FROM {rows}", params)
            upto = cur.execute(tag_rollup.rolled_up_to_sql()).fetchall()[0][0]
            late = ["timestamp IS NULL"] if nulls else []
            if upto is not None and earliest is not None and _epoch_us(earliest) < upto * MINUTE_US:  # type: ignore[arg-type]
                late.append(f"timestamp < {tag_rollup.minute_start(upto)}")
            advance = self.newest.advance  # one between its slices (read under `write_lock`)
            if advance is not None and earliest is not None and _epoch_us(earliest) < advance.new * MINUTE_US:  # type: ignore[arg-type]
                clause = advance.late_clause()
                if clause is not None:
                    late.append(clause)
            if late:
                statement = tag_rollup.insert_sql(rows, "WHERE " + " OR ".join(late))
                added = cur.execute(statement, params).fetchall()[0][0]
                self._note_pending(added, earliest)  # type: ignore[arg-type]
        if self.kept is not None and earliest is not None:
            # rows of minutes before the rollup's (or an advance's from raw rows) are late rows,
            # folded in above: not kept
            floor = max(
                tag_rollup_memory.NO_MINUTE if upto is None else upto,
                tag_rollup_memory.NO_MINUTE if advance is None else advance.new,
            )
            self._keep_from = floor if self._keep_from is None else max(self._keep_from, floor)
            if isinstance(batch, TagBatch):  # not kept (no Polars for a stream's few rows): not whole
                self.kept.lose({t // MINUTE_US for t in known})
        if latest is not None:
            # A clock running ahead must not drag the rollup into the future: it stops at now.
            newest_minute = min(_epoch_us(latest), _epoch_us(datetime.now(UTC))) // MINUTE_US  # type: ignore[arg-type]
            target = newest_minute - LAG_MINUTES
            if upto is None or target > upto:
                # Not in this transaction: slice by slice between the batches, once committed
                # (`advance_rollup`); a minute of 100,000 tags took 3 s inside a batch at load 11.
                self.newest.want_rollup(target, max(self._known_tags, batch.height))
        # The newest rows per tag are kept in memory once committed (`committed`): a view of
        # the batch's columns, no copy, no statement per batch.
        self._uncommitted.append(batch.select(tag_last.LAST_COLUMNS))
        if self._pending_rows >= self.compact_after:
            self.compact_rollup(cur)

    def _note_pending(self, rows: int, earliest: datetime | None) -> None:
        self._pending_rows += rows
        if earliest is not None:
            minute = _epoch_us(earliest) // MINUTE_US
            self._pending_from = minute if self._pending_from is None else min(self._pending_from, minute)

    def compact_rollup(self, cur: duckdb.DuckDBPyConnection | None = None) -> None:
        """Merge the late partial rows appended since the last compaction into one per tag, minute
        and `is_bad` (in the caller's transaction with `cur`). Runs by itself every `compact_after`
        late rows; rows left unmerged by a process that stopped early only cost a little query time."""
        if self._pending_from is not None:
            self._run(cur, tag_rollup.compact_sql(self._pending_from))
        self._pending_rows, self._pending_from = 0, None

    # ---- the newest row per tag (engine.store.tag_newest) ---------------------------------------
    def _mark_pending(self, cur: duckdb.DuckDBPyConnection, earliest: datetime | None, nulls: bool) -> None:
        """In the batch's transaction: the crash marker covers this batch's rows. A row of the
        transaction's write generation, added when neither that generation's committed marker nor
        this transaction's covers them (so about once per write of `tag_last`). Rows are only added
        here, never changed: a write of `tag_last` deletes older generations' rows meanwhile."""
        if self._generation is None:
            self._generation = self.newest.begin()
        mark = tag_newest.merge_marks(self.newest.mark_of(self._generation), self._marking)
        if tag_newest.covers(mark, earliest, nulls):
            return
        since, nulls = tag_newest.merge_marks(mark, (earliest, nulls))  # type: ignore[misc]
        cur.execute(
            f"INSERT INTO {tag_newest.PENDING_TABLE} (since, nulls, gen) VALUES (?, ?, ?)",
            [since, nulls, self._generation],
        )
        self._marking = (since, nulls)

    def committed(self, cur: duckdb.DuckDBPyConnection | None = None, write_now: bool = False) -> None:
        """The caller committed what `insert` wrote: its newest rows join the kept ones. When
        `last_every` seconds have passed since the last write of `tag_last`, the timer thread writes
        it now (the caller's next batches go on meanwhile), or, `write_now`, the caller does with
        `cur` (outside a transaction)."""
        frames, marking, generation = self._uncommitted, self._marking, self._generation
        self._uncommitted, self._marking, self._generation = [], None, None
        keep_from, self._keep_from = self._keep_from, None
        if keep_from is not None and self.kept is not None:
            self.kept.accepting_from(keep_from)
            kept = [f for f in frames if not isinstance(f, TagBatch)]  # a stream's TagBatch: lost in `insert`
            now_minute = _epoch_us(datetime.now(UTC)) // MINUTE_US if kept else 0
            for frame in kept:
                self.kept.keep(frame, now_minute)
        if generation is not None:
            self.newest.add(frames, generation, marking)
        if write_now:
            self._advance_now(cur)
        else:  # a sink's commit (a stream's): the rollup's advance and checkpoints go to the timer
            if self.newest.rollup_due is not None:
                self.newest.later("rollup", 0.0, self._advance_when_due)
            self._checkpoint_soon(cur)
        since, every = time.monotonic() - self.newest.last_write, self.every()
        if since >= every:
            if not write_now:
                self.newest.write_later(0.0, self._write_when_due)
                return
            try:
                self.write_last(cur)
            except duckdb.Error:
                # The batch is committed: failing it now would make a stream retry it (its rows
                # twice). The rows stay kept and marked; the timer tries again.
                self.newest.write_later(max(1.0, min(every, 60.0)), self._write_when_due)
        elif every != math.inf:
            self.newest.write_later(every - since, self._write_when_due)

    def every(self) -> float:
        """Seconds between two writes of `tag_last`: `last_every`, or longer when the last write
        held the batches' lock for long, so that writes hold it `tag_newest.WRITE_DUTY` of the time
        at most (up to `WRITE_EVERY_MAX`). 0 (a write at every commit) and inf (none) stay as set."""
        if not 0.0 < self.last_every < math.inf:
            return self.last_every
        stretched = min(tag_newest.WRITE_EVERY_MAX, self.last_took / tag_newest.WRITE_DUTY)
        return max(self.last_every, stretched)

    def _write_when_due(self) -> None:
        """The timer's write (`NewestRows.write_later`): only on a historian that is still open, and
        only what no other write wrote meanwhile; a failure is retried. It holds `last_lock`, not the
        batches' `write_lock`: batches commit while it writes."""
        with self.newest.last_lock:  # not `taking_last`: a timer gives way, it asks no one to
            if tag_newest.exiting() or (self.newest.empty and not self.newest.marked):
                return
            since, every = time.monotonic() - self.newest.last_write, self.every()
            if since < every:  # another write came first
                if every != math.inf:
                    self.newest.write_later(every - since, self._write_when_due)
                return
            cur = self.historian.cursor_if_open()
            if cur is None:  # closed: the rows stay marked, the next open folds them
                return
            try:
                cur.execute("SET TimeZone = 'UTC'")
                self.write_last(cur, may_give_way=True)
            except duckdb.Error:
                # kept and marked: the next commit's or this timer's write tries again
                self.newest.write_later(max(1.0, min(every, 60.0)), self._write_when_due)
            finally:
                cur.close()

    # ---- the rollup's advance between the batches ----------------------------------------------
    def advance_rollup(self, cur: duckdb.DuckDBPyConnection | None = None) -> None:
        """Roll the minutes the batches asked for up (`NewestRows.want_rollup`), one slice of
        TAGS_PER_SLICE tags a transaction, each between two batches (under `write_lock` for that
        slice only: a batch waits for one slice at most, not the whole minute of 100,000 tags).
        With `cur`: outside a transaction. When another thread's advance is under way this returns
        at once: that one goes on to the newest minute asked for (a write that must finish may hold
        `write_lock` here, which that advance waits for between its slices)."""
        newest = self.newest
        if newest.rollup_due is None and newest.advance is None:
            return
        if not newest.rollup_lock.acquire(blocking=False):
            return
        try:
            own = cur is None
            cur = cur or self.cursor()
            try:
                while True:
                    self._between_slices()
                    with newest.one_batch_gap() as held:
                        if not held or not self._advance_slice(cur):
                            return
            finally:
                if own:
                    cur.close()
        finally:
            newest.rollup_lock.release()

    def _advance_now(self, cur: duckdb.DuckDBPyConnection | None) -> None:
        """`advance_rollup` after a commit: the batches are committed, so a failure here fails no
        write (a caller would retry it: its rows twice); the timer tries again, and readers take
        the minutes not rolled up from raw rows meanwhile."""
        try:
            self.advance_rollup(cur)
        except duckdb.Error as exc:
            self.newest.rollup_error = str(exc).splitlines()[0]
            self.newest.later("rollup", 1.0, self._advance_when_due)

    def _between_slices(self) -> None:
        """Where an advance is between two slices, holding no lock of the batches (tests stop it here)."""

    def _advance_slice(self, cur: duckdb.DuckDBPyConnection) -> bool:
        """One slice of the advance under way, or the first of the next one (`write_lock` held);
        False when the rollup is where the batches asked for."""
        newest = self.newest
        advance = newest.advance
        if advance is None:
            due, tags = newest.rollup_due, newest.rollup_tags
            if due is None:
                return False
            upto = cur.execute(tag_rollup.rolled_up_to_sql()).fetchall()[0][0]
            if upto is not None and due <= upto:
                newest.rollup_done(due)
                return False
            if self.kept is not None and self.kept.whole(upto, due):
                self._advance_kept(cur, due)
                return True
            advance = tag_rollup.Advance(upto, due, tag_rollup.slices_for(max(tags, self._known_tags)))
            if self.kept is not None:  # rows of these minutes are read from the table: none kept
                self.kept.accepting_from(due)
        last = advance.done == advance.slices - 1
        work = [tag_rollup.slice_sql(TAGS_TABLE, advance.old, advance.new, advance.slices, advance.done)]
        _in_transaction(cur, [*work, tag_rollup.move_sql(advance.new)] if last else work)
        advance.done += 1
        newest.advance = None if last else advance
        if last:
            newest.rollup_done(advance.new)
        return True

    def _advance_kept(self, cur: duckdb.DuckDBPyConnection, due: int) -> None:
        """The advance to minute `due` from the partials kept in memory (`tag_rollup_memory`: the
        minutes were kept whole), one INSERT and the move of `rolled_up_to` in one transaction."""
        assert self.kept is not None
        partials = self.kept.partials(due)
        work = [tag_rollup.move_sql(due)]
        if partials is not None:
            cur.register(_KEPT_ROWS, arrow_stream(partials))
            work.insert(0, tag_rollup.append_sql(_KEPT_ROWS))
        try:
            _in_transaction(cur, work)
        finally:
            if partials is not None:
                _unregister(cur, _KEPT_ROWS)
        self.kept.accepting_from(due)
        self.kept.advances += 1
        self.newest.rollup_done(due)

    def _newest_raw_minute(self, cur: duckdb.DuckDBPyConnection) -> int | None:
        """The minute of the newest raw row not rolled up yet (None: none): rows this process's
        kept minutes never saw (`tag_rollup_memory.KeptMinutes.start`)."""
        upto = cur.execute(tag_rollup.rolled_up_to_sql()).fetchall()[0][0]
        where = "" if upto is None else f" WHERE timestamp >= {tag_rollup.minute_start(upto)}"
        newest = cur.execute(f"SELECT max(epoch_us(timestamp)) FROM {TAGS_TABLE}{where}").fetchall()[0][0]
        return None if newest is None else newest // MINUTE_US

    def _advance_when_due(self) -> None:
        """The timer's advance (`advance_rollup`) on a historian that is still open; a failure is
        retried (readers meanwhile take the minutes not rolled up from raw rows)."""
        if tag_newest.exiting():
            return
        cur = self.historian.cursor_if_open()
        if cur is None:  # closed: the next writer's batches ask again
            return
        try:
            self.advance_rollup(cur)
        except duckdb.Error as exc:
            self.newest.rollup_error = str(exc).splitlines()[0]
            self.newest.later("rollup", 1.0, self._advance_when_due)
        finally:
            cur.close()

    # ---- checkpoints between the batches ----------------------------------------------------------
    def wal_bytes(self) -> int:
        """The size of the historian's write-ahead log now (0: none)."""
        try:
            return os.stat(f"{self.historian.path}.wal").st_size
        except OSError:
            return 0

    def _checkpoint_soon(self, cur: duckdb.DuckDBPyConnection | None) -> None:
        """After a sink's commit: DuckDB's own checkpoint threshold raised once per connection
        (see CHECKPOINT_THRESHOLD), and a checkpoint handed to the timer thread once the WAL holds
        `checkpoint_wal` bytes."""
        if cur is not None:
            self.historian.set_global_once(cur, "checkpoint_threshold", CHECKPOINT_THRESHOLD)
        if self.wal_bytes() >= self.checkpoint_wal:
            self.newest.later("checkpoint", 0.0, self._checkpoint_when_due)

    def _checkpoint_when_due(self) -> None:
        """The timer's checkpoint: between two batches (under `write_lock`, so no batch of this
        historian has a transaction open and none waits inside DuckDB for it), if the WAL still
        holds `checkpoint_wal` bytes. DuckDB refuses a CHECKPOINT while another cursor's transaction
        has updated or deleted rows (one that only inserted does not stop it): then the next commit
        asks again, and DuckDB's own threshold bounds the WAL meanwhile."""
        if tag_newest.exiting():
            return
        cur = self.historian.cursor_if_open()
        if cur is None:  # closed: its close checkpointed
            return
        try:
            with self.newest.one_batch_gap() as held:
                if held and self.wal_bytes() >= self.checkpoint_wal:
                    cur.execute("CHECKPOINT")
                    self.newest.checkpoints += 1
        except duckdb.Error as exc:
            self.newest.checkpoint_error = str(exc).splitlines()[0]
        finally:
            cur.close()

    def rolled_back(self) -> None:
        """The caller rolled back what `insert` wrote: nothing of it is kept."""
        if self._generation is not None:
            self.newest.abandon(self._generation)
        self._uncommitted, self._marking, self._generation = [], None, None
        self._keep_from = None

    def write_last(self, cur: duckdb.DuckDBPyConnection | None = None, may_give_way: bool = False) -> None:
        """`_write_last`; a write that must finish (a sink's close, `append`, retention) also rolls
        up the minutes the batches asked for (`advance_rollup`), as a batch's commit did before."""
        self._write_last(cur, may_give_way)
        if not may_give_way:
            if not self.newest.write_lock._is_owned():  # type: ignore[attr-defined]  # a sink's close
                # the historian may be closed next: no statement of the timer's may run then
                self.newest.settle(("rollup", "checkpoint"))
            self._advance_now(cur)

    def _write_last(self, cur: duckdb.DuckDBPyConnection | None = None, may_give_way: bool = False) -> None:
        """Write the kept newest rows to `tag_last` now, each tag once, in slices of `write_slice`
        rows, each its own transaction between two batches (under `write_lock`); the last slice
        clears the crash marker of the generations written. With `cur`: outside a transaction.
        Batches commit between the slices (see `engine.store.tag_newest`). With `may_give_way` (the
        timer's write) it holds `write_lock` for one slice at a time and stops between slices when
        another write must happen now (`NewestRows.taking_last`), which then writes everything;
        without, it holds `write_lock` throughout (a sink's close, `append`, retention)."""
        # A write that must finish holds the batches' lock throughout (so the locks are always taken
        # in one order: `write_lock`, then `last_lock`); only the timer's holds it slice by slice.
        whole = contextlib.nullcontext() if may_give_way else self.newest.write_lock
        with whole, self.newest.taking_last():
            rows, clear_below = self.newest.take()
            if rows.height == 0 and not self.newest.to_clear(clear_below):
                self.newest.written(clear_below)
                return
            own = cur is None
            cur = cur or self.cursor()
            try:
                size = max(1, self.write_slice)
                starts = list(range(0, rows.height, size)) or [0]
                took = 0.0
                for offset in starts:
                    with self._between_batches(may_give_way):
                        began = time.monotonic()
                        self._write_slice(cur, rows.slice(offset, size), offset == starts[-1], clear_below)
                        took += time.monotonic() - began
                self._known_tags = max(self._known_tags, rows.height)
                self.last_took = took
            except tag_newest.GaveWay:  # kept again; the write that asked writes everything
                self.newest.not_written()
                return
            except BaseException:
                self.newest.not_written()
                raise
            finally:
                if own:
                    cur.close()
            self.newest.written(clear_below)

    def _between_batches(self, may_give_way: bool = False):
        """The batches' lock for one slice of a write (`NewestRows.between_batches`)."""
        return self.newest.between_batches(may_give_way)

    def _write_slice(
        self, cur: duckdb.DuckDBPyConnection, part: pl.DataFrame | TagBatch, last: bool, clear_below: int
    ) -> None:
        """One slice of `write_last`, in a transaction of its own; the last clears the marker rows
        of the generations below `clear_below`."""

        def work() -> None:
            if part.height:
                with _scan(cur, _LAST_ROWS, part) as (rows, params):
                    cur.execute(tag_newest.upsert_sql(rows), params)
            if last:
                cur.execute(
                    f"DELETE FROM {tag_newest.PENDING_TABLE} WHERE gen < ? OR gen IS NULL", [clear_below]
                )

        _in_transaction(cur, work)

    def fold_last(self, cur: duckdb.DuckDBPyConnection | None = None) -> None:
        """`write_last`: `tag_last` holds every committed newest row after it."""
        self.write_last(cur)

    def _run(self, cur: duckdb.DuckDBPyConnection | None, statements: list[str]) -> None:
        """Statements in the caller's transaction (`cur`), else in one of their own."""
        if cur is not None:
            _in_transaction(cur, statements, own=False)
            return
        own = self.cursor()
        try:
            _in_transaction(own, statements)
        finally:
            own.close()

    # ---- retention ------------------------------------------------------------------------------
    def keep_for(self, tag: str) -> timedelta | None:
        for rule in self.retention:
            if selector_matcher(rule.pattern)(tag):
                return rule.keep
        return self.default_retention

    def apply_retention(self, now: datetime | None = None) -> int:
        """Delete the rows each tag's rule no longer keeps; returns how many were deleted."""
        now = _to_utc(now) or datetime.now(UTC)
        cur = self.cursor()
        # No batch and no other write of `tag_last` between this write of it and the delete: every
        # newest row is in the table.
        locks = contextlib.ExitStack()
        locks.enter_context(self.newest.write_lock)
        locks.enter_context(self.newest.taking_last())
        try:
            self.write_last(cur)
            names = [r[0] for r in cur.execute(tag_last.known_tags_sql()).fetchall()]
            matchers = [(selector_matcher(r.pattern), r.keep) for r in self.retention]
            tags, cutoffs = [], []
            for name in names:
                keep = next((k for match, k in matchers if match(name)), self.default_retention)
                if keep is not None:
                    tags.append(name)
                    cutoffs.append(now - keep)
            if not tags:
                return 0
            frame = pl.DataFrame({"tag": tags, "cutoff": pl.Series(cutoffs, dtype=pl.Datetime("us", "UTC"))})
            cur.register("_cutoffs", arrow_stream(frame))
            path = str(self.historian.path)
            tag_bucket_cache.note_delete(path)  # before (snapshots that will see it) and after (the rest)
            try:
                cur.execute("BEGIN TRANSACTION")
                deleted = cur.execute(
                    f"DELETE FROM {TAGS_TABLE} t USING _cutoffs c WHERE t.tag = c.tag AND t.timestamp < c.cutoff"
                ).fetchall()[0][0]
                # A tag whose newest value has expired has no history left: it leaves the tag list too.
                cur.execute(
                    f"DELETE FROM {LAST_TABLE} t USING _cutoffs c WHERE t.tag = c.tag AND t.timestamp < c.cutoff"
                )
                # The rollup forgets every minute that began before the cutoff, then gets the minute
                # the cutoff cuts through back from the raw rows left of it (if it was rolled up).
                cut = floor_div("epoch_us(c.cutoff)", MINUTE_US)
                cur.execute(
                    f"DELETE FROM {MINUTES_TABLE} t USING _cutoffs c WHERE t.tag = c.tag AND t.minute <= {cut}"
                )
                upto = cur.execute(tag_rollup.rolled_up_to_sql()).fetchall()[0][0]
                unfinished = self.newest.advance is not None
                if unfinished:  # its slices done so far go: the re-insert below covers minutes < upto only
                    cur.execute(tag_rollup.unfinished_sql(upto))
                if upto is not None:
                    cur.execute(
                        tag_rollup.insert_sql(
                            f"(SELECT t.* FROM {TAGS_TABLE} t JOIN _cutoffs c ON t.tag = c.tag"
                            f" WHERE t.timestamp >= make_timestamptz({cut} * {MINUTE_US})"
                            f" AND t.timestamp < make_timestamptz(least({cut} + 1, {upto}) * {MINUTE_US}))"
                        )
                    )
                cur.execute("COMMIT")
                if self.kept is not None:  # raw rows of the minutes kept may be gone
                    self.kept.forget()
                if unfinished:
                    self.newest.advance = None  # the next advance starts from `upto` again
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            finally:
                cur.unregister("_cutoffs")
                tag_bucket_cache.note_delete(path)
            return int(deleted)
        finally:
            locks.close()
            cur.close()

    # ---- reading --------------------------------------------------------------------------------
    def resolve(self, selectors: str | Sequence[str], cur: duckdb.DuckDBPyConnection) -> list[str] | None:
        """Tag names for the selectors; None means every tag (no filter needed)."""
        if isinstance(selectors, str):
            selectors = [selectors]
        if not any(_is_pattern(s) for s in selectors):
            return list(dict.fromkeys(selectors))
        stored = {r[0] for r in cur.execute(tag_last.known_tags_sql()).fetchall()}
        known = sorted(stored.union(self.newest.rows().get_column("tag").to_list()))
        matchers = [selector_matcher(s) for s in selectors]
        chosen = [name for name in known if any(m(name) for m in matchers)]
        exact = [s for s in selectors if not _is_pattern(s) and s not in chosen]
        if not exact and len(chosen) == len(known):
            return None
        return chosen + exact

    def query(
        self,
        tags: str | Sequence[str],
        start: datetime | None = None,
        end: datetime | None = None,
        bucket: str | timedelta = "1m",
        statistics: Sequence[str] = DEFAULT_STATISTICS,
        include_bad: bool = False,
        use_rollup: bool = True,
        use_cache: bool = True,
    ) -> pl.DataFrame:
        """One row per tag per bucket in [start, end): `tag`, `bucket` (its start), the statistics
        asked for, and `bad_count`. Buckets without a row do not appear.

        Buckets of whole minutes come from the 1-minute rollup, plus raw rows for the partial minutes
        where `start`/`end` cut through a minute; other buckets, or `use_rollup=False` (checks and
        benchmarks), read raw rows only. Both give the same result. Raw-row queries with a start
        and an end take the buckets an earlier query computed from `tag_bucket_cache` unless
        `use_cache=False`; the answer is the same."""
        width = bucket if isinstance(bucket, timedelta) else parse_duration(bucket, "bucket")
        unknown = [s for s in statistics if s not in STATISTICS]
        if unknown:
            raise UsageError(f"statistic '{unknown[0]}' is not known (allowed: {', '.join(STATISTICS)})")
        w = int(width / timedelta(microseconds=1))
        statistics = list(dict.fromkeys(statistics))
        cur = self.cursor()
        try:
            # the bucket cache's write count before the snapshot (writes noted later are re-read)
            seq = tag_bucket_cache.current_seq(str(self.historian.path))
            cur.execute("BEGIN TRANSACTION")  # one snapshot: `rolled_up_to` and the rows agree
            names = self.resolve(tags, cur)
            if names != [] and use_rollup and w % MINUTE_US == 0:
                upto = cur.execute(tag_rollup.rolled_up_to_sql()).fetchall()[0][0]
                sql, params = self._rollup_buckets_sql(names, start, end, w, statistics, include_bad, upto)
            elif names != [] and use_cache and start is not None and end is not None:
                return self._cached_raw_buckets(cur, seq, names, start, end, w, statistics, include_bad)
            else:
                sql, params = self._raw_buckets_sql(names, start, end, w, statistics, include_bad)
            return self._buckets(cur, sql, params)
        finally:
            cur.execute("ROLLBACK")  # read only: nothing to keep
            cur.close()

    @staticmethod
    def _buckets(cur: duckdb.DuckDBPyConnection, sql: str, params: list) -> pl.DataFrame:
        # execute(), not sql(): a relation binds the statement twice (measured 4.1 against 8.0 ms
        # of CPU for the API's 5-tag time series); the extra copy DuckDB warns of is of the
        # buckets (a few hundred rows), not of the rows read
        frame = pl.from_arrow(cur.execute(sql, params).to_arrow_table())
        assert isinstance(frame, pl.DataFrame)
        return frame.with_columns(
            pl.col(c).cast(pl.Int64) for c in ("count", "bad_count") if c in frame.columns
        )

    def _cached_raw_buckets(
        self, cur, seq: int, names, start: datetime, end: datetime, w: int, statistics, include_bad: bool
    ) -> pl.DataFrame:
        """`_raw_buckets_sql`'s answer, with the buckets wholly inside [start, end) that an earlier
        query computed taken from `tag_bucket_cache` (valid ones only: see that module); the
        buckets read raw here that no write may still change are added to it. In the caller's
        transaction (one snapshot), begun after the cache's write count was `seq`."""
        path = str(self.historian.path)
        key = (None if names is None else tuple(names), w, tuple(statistics), include_bad)
        s_us, e_us = _epoch_us(_to_utc(start)), _epoch_us(_to_utc(end))  # type: ignore[arg-type]
        first_full, after_full = -(-s_us // w), e_us // w  # buckets n with [n*w, (n+1)*w) inside
        entry = tag_bucket_cache.lookup(path, key, w) if first_full < after_full else None
        if entry is not None and entry.lo <= first_full < entry.hi:
            mid_hi = min(entry.hi, after_full)
            cached = entry.frame.filter((pl.col("_n") >= first_full) & (pl.col("_n") < mid_hi))
            ranges = [(s_us, first_full * w), (mid_hi * w, e_us)]
        else:
            cached, mid_hi = None, first_full
            ranges = [(s_us, e_us)]
        ranges = [(lo, hi) for lo, hi in ranges if lo < hi] or [(s_us, s_us)]
        sql, params = self._raw_buckets_sql(
            names,
            [(_from_epoch_us(lo), _from_epoch_us(hi)) for lo, hi in ranges],
            None,
            w,
            statistics,
            include_bad,
        )
        raw = self._buckets(cur, sql, params).with_columns(_n=(pl.col("bucket").dt.epoch("us") // w))
        # what this snapshot cannot see of the writes noted so far keeps the horizon below them
        unseen = tag_bucket_cache.unseen(path)
        visible: set[int] = set()
        if unseen:
            marks = ", ".join("?" * len(unseen))
            visible = {
                r[0]
                for r in cur.execute(
                    f"SELECT seq FROM {tag_bucket_cache.WRITES_TABLE} WHERE seq IN ({marks})", unseen
                ).fetchall()
            }
            tag_bucket_cache.mark_seen(path, visible)
        limit = tag_bucket_cache.horizon_limit(path, set(unseen) - visible, w)
        store_lo = mid_hi
        store_hi = after_full if limit is None else min(after_full, limit)
        if store_lo < store_hi:
            fresh = raw.filter((pl.col("_n") >= store_lo) & (pl.col("_n") < store_hi))
            tag_bucket_cache.store(path, key, seq, store_lo, store_hi, fresh, keep_from=first_full)
        frame = (
            raw if cached is None else pl.concat([raw, cached.select(raw.columns)], how="vertical_relaxed")
        )
        return frame.sort("tag", "bucket").drop("_n")

    def _raw_buckets_sql(self, names, start, end, w: int, statistics, include_bad: bool) -> tuple[str, list]:
        keep = "" if include_bad else " AND quality IS DISTINCT FROM 'bad'"
        only = f"FILTER (WHERE value IS NOT NULL{keep})"
        columns = {
            "avg": f"avg(value) {only}",
            "min": f"min(value) {only}",
            "max": f"max(value) {only}",
            "sum": f"sum(value) {only}",
            "first": f"arg_min(value, timestamp) {only}",
            "last": f"arg_max(value, timestamp) {only}",
            "count": f"count(value) {only}",
        }
        stats = "".join(f", {columns[s]} AS {s}" for s in statistics)
        if isinstance(start, list):  # several time ranges (`end` unused): one scan of the table each
            scans, params = [], []
            for range_start, range_end in start:
                where, range_params = self._where(names, range_start, range_end)
                scans.append(f"SELECT tag, timestamp, value, quality FROM {TAGS_TABLE} {where}")
                params += range_params
            source = "(" + " UNION ALL ".join(scans) + ")"
            where = ""
        else:
            where, params = self._where(names, start, end)
            source = TAGS_TABLE
        # Buckets by integer arithmetic on epoch microseconds (floor division, also before 1970),
        # turned into timestamps after grouping: the same buckets as `time_bucket(width, timestamp,
        # epoch)`, but measured 2.5x faster on 10 M rows (time_bucket per row dominated the query).
        sql = (
            f"SELECT tag, make_timestamptz(n * {w}) AS bucket, * EXCLUDE (tag, n) FROM ("
            f"SELECT tag, {floor_div('epoch_us(timestamp)', w)} AS n{stats},"
            f" count(*) FILTER (WHERE quality = 'bad') AS bad_count"
            f" FROM {source} {where} GROUP BY ALL) ORDER BY tag, bucket"
        )
        return sql, params

    def _rollup_buckets_sql(
        self, names, start, end, w: int, statistics, include_bad: bool, upto: int | None
    ) -> tuple[str, list]:
        """Whole minutes inside [start, end) before `upto` (the rollup's end) from the rollup; whole
        minutes from `upto` on and the partial minutes at the edges from raw rows, folded into the
        same per-minute partials; then one aggregation into buckets."""
        start, end = _to_utc(start), _to_utc(end)
        first_whole = None if start is None else -(-_epoch_us(start) // MINUTE_US)  # ceil
        after_whole = None if end is None else _epoch_us(end) // MINUTE_US
        raw_ranges: list[tuple[datetime | None, datetime | None]] = []
        rolled: tuple[int | None, int | None] | None = None
        if first_whole is not None and after_whole is not None and first_whole >= after_whole:
            raw_ranges.append((start, end))  # inside one minute (or two partial ones): raw rows only
        else:
            if start is not None and _epoch_us(start) % MINUTE_US:
                raw_ranges.append((start, _from_epoch_us(first_whole * MINUTE_US)))  # type: ignore[operator]
            if end is not None and _epoch_us(end) % MINUTE_US:
                raw_ranges.append((_from_epoch_us(after_whole * MINUTE_US), end))  # type: ignore[operator]
            if upto is None:
                raw_from = first_whole
            else:
                rolled = (first_whole, upto if after_whole is None else min(after_whole, upto))
                raw_from = upto if first_whole is None else max(first_whole, upto)
            if raw_from is None or after_whole is None or raw_from < after_whole:
                raw_ranges.append(
                    (
                        None if raw_from is None else _from_epoch_us(raw_from * MINUTE_US),
                        None if after_whole is None else _from_epoch_us(after_whole * MINUTE_US),
                    )
                )
        tag_clause, tag_params = self._tag_clause(names)
        minutes = []
        if rolled is not None and (rolled[0] is None or rolled[0] < rolled[1]):  # type: ignore[operator]
            lower = "" if rolled[0] is None else f"minute >= {rolled[0]} AND "
            minutes.append(f"{lower}minute < {rolled[1]}")
        if start is None and end is None:
            minutes.append("minute IS NULL")  # values without a timestamp live in the rollup only
        branches, params = [], []
        if minutes:
            clauses = [tag_clause] if tag_clause else []
            clauses.append("(" + " OR ".join(minutes) + ")")
            branches.append(
                f"SELECT {', '.join(tag_rollup.COLUMNS)} FROM {MINUTES_TABLE} WHERE {' AND '.join(clauses)}"
            )
            params += tag_params
        for range_start, range_end in raw_ranges:
            where, range_params = self._where(names, range_start, range_end)
            if range_start is None:
                where += (" AND " if where else "WHERE ") + "timestamp IS NOT NULL"
            branches.append(tag_rollup.partials_sql(TAGS_TABLE, where))
            params += range_params
        if not branches:
            return self._raw_buckets_sql([], start, end, w, statistics, include_bad)
        parts = " UNION ALL ".join(f"({b})" for b in branches)
        k = w // MINUTE_US
        final = tag_rollup.final_statistics(include_bad)
        stats = "".join(f", {final[s]} AS {s}" for s in statistics)
        sql = (
            f"SELECT tag, make_timestamptz(n * {w}) AS bucket, * EXCLUDE (tag, n) FROM ("
            f"SELECT tag, {floor_div('minute', k)} AS n{stats}, {final['bad_count']} AS bad_count"
            f" FROM ({parts}) GROUP BY ALL) ORDER BY tag, bucket"
        )
        return sql, params

    def raw(
        self, tags: str | Sequence[str], start: datetime | None = None, end: datetime | None = None
    ) -> pl.DataFrame:
        """The stored records (TAG_SCHEMA), ordered by tag and time."""
        cur = self.cursor()
        try:
            where, params = self._where(self.resolve(tags, cur), start, end)
            names = ", ".join(TAG_COLUMNS)
            sql = f"SELECT {names} FROM {TAGS_TABLE} {where} ORDER BY tag, timestamp"
            frame = pl.from_arrow(cur.sql(sql, params=params).to_arrow_table())
            assert isinstance(frame, pl.DataFrame)
            return frame.cast(tag_schema())  # type: ignore[arg-type]
        finally:
            cur.close()

    def last_values(self, tags: str | Sequence[str] = "*") -> pl.DataFrame:
        """The newest record of each tag (from `tag_last` and its log: no scan of the history)."""
        cur = self.cursor()
        try:
            names = self.resolve(tags, cur)
            where, params = ("", []) if names is None else self._in_list(names)
            kept = self.newest.rows()  # before the table: a write in between moves rows there
            stored = pl.from_arrow(cur.sql(tag_last.newest_sql(where), params=params).to_arrow_table())
            assert isinstance(stored, pl.DataFrame)
            if kept.height == 0:
                return stored.sort("tag")
            if names is not None:
                kept = kept.filter(pl.col("tag").is_in(names))
            return tag_newest.newest([stored.cast(dict(kept.schema)), kept]).sort("tag")  # type: ignore[arg-type]
        finally:
            cur.close()

    def tags(self) -> pl.DataFrame:
        """Every stored tag with its first and last timestamp and its number of rows."""
        cur = self.cursor()
        try:
            frame = pl.from_arrow(
                cur.sql(
                    "SELECT tag, min(timestamp) AS first, max(timestamp) AS last, count(*) AS count"
                    f" FROM {TAGS_TABLE} GROUP BY tag ORDER BY tag"
                ).to_arrow_table()
            )
            assert isinstance(frame, pl.DataFrame)
            return frame.with_columns(pl.col("count").cast(pl.Int64))
        finally:
            cur.close()

    def _tag_clause(self, names: list[str] | None) -> tuple[str, list]:
        if names is None:
            return "", []
        if not names:
            return "false", []
        clause, params = self._in_list(names)
        return clause.removeprefix("WHERE "), params

    def _where(self, names: list[str] | None, start, end) -> tuple[str, list]:
        clause, params = self._tag_clause(names)
        clauses = [clause] if clause else []
        if start is not None:
            clauses.append("timestamp >= ?")
            params.append(_to_utc(start))
        if end is not None:
            clauses.append("timestamp < ?")
            params.append(_to_utc(end))
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params

    @staticmethod
    def _in_list(names: list[str]) -> tuple[str, list]:
        if len(names) == 1:
            return "WHERE tag = ?", list(names)
        return f"WHERE tag IN ({', '.join('?' * len(names))})", list(names)
