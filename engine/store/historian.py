"""The embedded historian: one DuckDB file per data directory, written only by this process."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from engine.diskspace import fsync_dir
from engine.errors import UsageError

if TYPE_CHECKING:  # Polars is imported where frames are made: a service start does not need it
    import duckdb  # imported where the file is opened: a run writing only files never opens it
    import polars as pl

REJECTS_TABLE = "_rejects"
# A one-shot run's rejects, kept out of DuckDB: one Parquet file a run, `<run_id>.parquet`, in this
# folder beside the historian file, folded into REJECTS_TABLE by the next process that opens the
# historian (or reads its rejects). See `RejectFile`.
REJECT_FILES_DIR = "rejects"
REJECTS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {REJECTS_TABLE} (run_id VARCHAR, pipeline VARCHAR, node_id VARCHAR,"
    " reason VARCHAR, record JSON, rejected_at TIMESTAMP)"
)
log = logging.getLogger(__name__)
HEADER_BYTES = 3 * 4096  # a DuckDB file: its file header and two database headers, then the blocks

# The historian connection's memory (issue 10): DuckDB's default is 80% of RAM, and its buffer pool
# keeps every block it wrote or read until that limit, so a service streaming into the historian
# grew for hours. An edge default instead, with the environment's word over it.
MEMORY_LIMIT_ENV = "AGGREGATOR_HISTORIAN_MEMORY_LIMIT"
THREADS_ENV = "AGGREGATOR_HISTORIAN_THREADS"
DEFAULT_MEMORY_LIMIT_MB = 32  # at most; a quarter of RAM if that is less (measured: see docs/performance.md)
_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)\s*$", re.IGNORECASE)
# DuckDB's allocator keeps what a query freed for ~10 - 17 s before giving it back. In an idle
# one-tag stream that was each minute's rollup (+2.2 MB) and each write of tag_last (+0.8 MB): the
# process spent a third of its time 2 - 3 MB above its resting size. With both thresholds this low,
# DuckDB hands freed memory back when each task ends: flat at rest, and no CPU measured on a
# 100k values/s Modbus stream; but bulk work over millions of rows pays the flushes (+4% CPU under
# the default memory_limit, +23% with 1 GB: tests/benchmarks/bench_duckdb_release.py), so only a
# foreground real-time `aggregator run` gets them (`release_at_once`; docs/performance.md,
# "DuckDB's freed memory").
RELEASE_AT_ONCE = {
    "allocator_flush_threshold": "256KB",
    "allocator_bulk_deallocation_flush_threshold": "256KB",
}
_release_at_once = False


def default_memory_limit() -> str:
    """DuckDB's memory_limit for the historian: `AGGREGATOR_HISTORIAN_MEMORY_LIMIT` (a size DuckDB
    reads: 256MB, 1GB, 512MiB) if set, else a quarter of RAM, at most 32 MB (the OS page cache still
    caches the file: a small buffer pool costs little on reads)."""
    text = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if text:
        if not _SIZE.match(text):
            raise UsageError(f"{MEMORY_LIMIT_ENV}: '{text}' is not a memory size (e.g. 64MB, 1GB)")
        return text
    mb = DEFAULT_MEMORY_LIMIT_MB
    with contextlib.suppress(ValueError, OSError, AttributeError):
        mb = min(mb, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4 // 2**20)
    return f"{max(32, mb)}MB"


def connection_config(path: Path, *, small_writes: bool = False) -> dict[str, str | int]:
    """The historian connection's settings: memory_limit, threads (`AGGREGATOR_HISTORIAN_THREADS`,
    else DuckDB's: one a core; one with `small_writes`, for a connection opened only for a run's
    rejects), temp_directory beside the file, in the data directory (a query over the limit
    spills there rather than failing, and never into a /tmp that may be small), and
    `RELEASE_AT_ONCE` after `release_at_once(True)`."""
    config: dict[str, str | int] = {
        "memory_limit": default_memory_limit(),
        "temp_directory": str(path.with_name(path.name + ".tmp")),
    }
    if _release_at_once:
        config.update(RELEASE_AT_ONCE)
    threads = _threads_env()
    if threads is not None:
        config["threads"] = threads
    elif small_writes:
        config["threads"] = 1
    return config


def release_at_once(on: bool) -> None:
    """Historians opened from now on in this process give DuckDB's freed memory back when each task
    ends (`RELEASE_AT_ONCE`), or keep DuckDB's defaults (`on` False: the default)."""
    global _release_at_once
    _release_at_once = on


def _threads_env() -> int | None:
    threads = os.environ.get(THREADS_ENV, "").strip()
    if not threads:
        return None
    if not threads.isdigit() or int(threads) < 1:
        raise UsageError(f"{THREADS_ENV}: '{threads}' is not a number of threads (1 or more)")
    return int(threads)


def arrow_view(frame: pl.DataFrame):
    """The frame as Arrow without copying its text: Polars' string views go to DuckDB as they are
    (the default, oldest compat level, rebuilds every string column as large_string: measured 20%
    of a DuckDB insert's CPU and 200 MB of peak memory on 7 M order rows)."""
    import polars as pl

    return frame.to_arrow(compat_level=pl.CompatLevel.newest())


class ArrowStream:
    """A Polars frame as an Arrow C stream (the Arrow PyCapsule interface) for DuckDB to scan, e.g.
    `cur.register(name, arrow_stream(frame))`: no pyarrow on the way. Importing pyarrow to hand a
    batch over (`arrow_view`) cost a streaming service ~35 MB of RSS (issue 10). Each scan takes a
    new stream of the same frame, so the registered name may be read more than once."""

    __slots__ = ("frame",)

    def __init__(self, frame: pl.DataFrame):
        self.frame = frame

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self.frame.__arrow_c_stream__(requested_schema)


def arrow_stream(frame: pl.DataFrame) -> ArrowStream:
    """See `ArrowStream`: what DuckDB scans; `arrow_view` where a pyarrow Table itself is needed."""
    return ArrowStream(frame)


def quiet(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """No progress bar: DuckDB would draw it on our stdout and break `--json` output (per session)."""
    con.execute("SET enable_progress_bar = false")
    return con


class Historian:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._small = False  # opened by `cursor(small_writes=True)`; not yet set up for the rest
        self._set_once: dict[str, str] = {}  # set_global_once on the open connection: name -> value

    def cursor(self, *, small_writes: bool = False) -> duckdb.DuckDBPyConnection:
        """A cursor of the shared connection: one per thread, all in one DuckDB instance.

        `small_writes`: the caller only inserts a few thousand rows (a run's rejects, RejectWriter).
        If that opens the file, the connection gets one thread (no worker thread a core for a small
        insert: measured ~6 ms of CPU less on a 1 M-row run's ~20k rejects, 2 cores) and none of the
        settings meant for the stream; the first ordinary cursor after it gives them back (DuckDB's
        threads, `preserve_insertion_order = false`). An open connection is used as it is."""
        import duckdb

        with self._lock:
            if self._con is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self._con = duckdb.connect(
                        str(self.path), config=connection_config(self.path, small_writes=small_writes)
                    )
                except duckdb.IOException as exc:  # held by another process: one line, not a bug
                    if "lock" not in str(exc).lower():
                        raise
                    from engine.errors import ConnectorError

                    detail = str(exc).removeprefix("IO Error: ").split(". See also")[0].splitlines()[0]
                    raise ConnectorError(f"{self.path} is in use by another process: {detail}") from None
                self._small = small_writes
                if not small_writes:
                    self._con.execute("SET GLOBAL preserve_insertion_order = false")
                    self._fold_reject_files()
            elif self._small and not small_writes:
                self._stream_settings()
            return quiet(self._con.cursor())

    def _stream_settings(self) -> None:
        """A connection opened for small writes gets the settings of an ordinary one (lock held)."""
        assert self._con is not None
        self._small = False
        if _threads_env() is None:
            self._con.execute("RESET GLOBAL threads")
        self._con.execute("SET GLOBAL preserve_insertion_order = false")
        self._fold_reject_files()

    def set_global_once(self, cur: duckdb.DuckDBPyConnection, name: str, value: str) -> None:
        """`SET GLOBAL name = value` through `cur` (a cursor of the open connection), once per
        connection: a connection opened again (after `close` or `reclaim`) gets it at the next call."""
        with self._lock:
            con = self._con
            if con is None or self._set_once.get(name) == value:
                return
        cur.execute(f"SET GLOBAL {name} = '{value}'")
        with self._lock:
            if self._con is con:
                self._set_once[name] = value  # cleared wherever the connection is closed

    def cursor_if_open(self) -> duckdb.DuckDBPyConnection | None:
        """A cursor of the shared connection if it is open now, else None (never opens the file:
        for background work that must not hold a closed historian's file again)."""
        with self._lock:
            if self._con is None:
                return None
            if self._small:
                self._stream_settings()
            return quiet(self._con.cursor())

    def close(self) -> None:
        newest = sys.modules.get("engine.store.tag_newest")  # not loaded: no timer of it runs
        if newest is not None:
            newest.settle_before_close(self)  # outside `_lock`, which a timer's cursor takes
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
                self._small = False
                self._set_once.clear()

    @property
    def is_open(self) -> bool:
        return self._con is not None

    # ---- one-shot runs' reject files (written by RejectFile, folded here) ---------------------
    @property
    def reject_folder(self) -> Path:
        return self.path.parent / REJECT_FILES_DIR

    def pending_reject_files(self) -> list[Path]:
        """Reject files published by runs and not folded into the table yet, oldest name first."""
        try:
            with os.scandir(self.reject_folder) as entries:
                names = [e.name for e in entries if _is_reject_file(e.name)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [self.reject_folder / name for name in sorted(names)]

    def fold_rejects(self) -> int:
        """Fold the pending reject files into the table now (opening the historian if needed: an
        ordinary open folds them by itself). Returns the files folded."""
        pending = len(self.pending_reject_files())
        if not pending:
            return 0
        with self._lock:
            if self._con is not None and not self._small:
                return self._fold_reject_files()
        self.cursor().close()  # opens, or gives a small-writes connection its settings: both fold
        return pending - len(self.pending_reject_files())

    def _fold_reject_files(self) -> int:
        """Lock held, connection open. Each file in its own transaction: the rows of its run are
        replaced by the file's (so a file whose fold committed but was not removed, the process
        killed in between, is folded again to the same rows, never twice), then the file is
        removed. A run's rejects are in one file or in the table, never both: a one-shot run
        writes one or the other (`RejectFile`, `RejectWriter`), and commits once. A file that
        cannot be folded now (a full disk, a file this version cannot read) stays, and is read
        again by the next fold; the open does not fail for it."""
        import duckdb

        assert self._con is not None
        files = self.pending_reject_files()
        if not files:
            return 0
        folded = 0
        cur = self._con.cursor()
        try:
            for path in files:
                try:
                    self._fold_one(cur, path)
                except duckdb.Error as exc:
                    with contextlib.suppress(duckdb.Error):
                        cur.execute("ROLLBACK")
                    log.warning("rejects left in %s for later: %s", path, exc)
                    continue
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:  # folded: the next fold gives the same rows again
                    log.warning("folded rejects file %s not removed: %s", path, exc)
                folded += 1
        finally:
            cur.close()
        return folded

    @staticmethod
    def _fold_one(cur: duckdb.DuckDBPyConnection, path: Path) -> None:
        """One reject file into the table, in one transaction: its run's rows are replaced by the
        file's (a file folded before, whose removal a killed process did not reach, gives the same
        rows again). The file is removed by the caller, after the COMMIT."""
        run_id = path.name.removesuffix(".parquet")
        cur.execute(REJECTS_DDL)
        cur.execute("BEGIN TRANSACTION")
        cur.execute(f"DELETE FROM {REJECTS_TABLE} WHERE run_id = ?", [run_id])
        cur.execute(
            f"INSERT INTO {REJECTS_TABLE} SELECT run_id, pipeline, node_id, reason, record, rejected_at"
            " FROM read_parquet(?)",
            [str(path)],
        )
        cur.execute("COMMIT")

    def reclaim(self) -> int:
        """After a write that met a full disk: give the file's unused tail back to the file system
        (see `shrink_duckdb_file`). Closes the shared connection; the next cursor() reopens it.
        Returns the bytes freed."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
                self._set_once.clear()
            return shrink_duckdb_file(self.path)

    # ---- read-outs for the engine's API (no table is created by reading) -----------------------
    def has_tables(self, *names: str) -> bool:
        """Whether every one of these tables exists."""
        cur = self.cursor()
        try:
            found = cur.execute(
                "SELECT count(*) FROM information_schema.tables"
                f" WHERE table_name IN ({', '.join('?' * len(names))})",
                list(names),
            ).fetchall()[0][0]
        finally:
            cur.close()
        return found == len(names)

    def newest_tag_rows(self) -> list[tuple]:
        """(tag, source, value, value_text, quality, epoch µs) of every tag's newest stored row;
        empty when nothing is stored yet (the tables are not created here). With the newest rows
        this process committed and not yet wrote to `tag_last` (`engine.store.tag_newest`)."""
        from engine.store import tag_last

        newest = sys.modules.get("engine.store.tag_newest")  # not loaded: this process wrote nothing
        kept = newest.of(self).rows() if newest is not None else None  # before the table is read
        if not self.has_tables(tag_last.LAST_TABLE, tag_last.LOG_TABLE):
            return []
        cur = self.cursor()
        try:
            cur.execute("SET TimeZone = 'UTC'")
            names = "tag, source, value, value_text, quality, epoch_us(timestamp) AS ts"
            rows = cur.execute(f"SELECT {names} FROM ({tag_last.newest_sql()})").fetchall()
        finally:
            cur.close()
        if kept is None or kept.height == 0:
            return rows
        import polars as pl

        columns = ["tag", "source", "value", "value_text", "quality", "ts"]
        stored = pl.DataFrame(rows, schema=columns, orient="row").with_columns(
            timestamp=pl.from_epoch(pl.col("ts"), "us").dt.replace_time_zone("UTC")
        )
        kept = kept.select(*columns[:5], "timestamp")
        merged = newest.newest([stored.select(kept.columns).cast(dict(kept.schema)), kept])
        return merged.select(*columns[:5], ts=pl.col("timestamp").dt.epoch("us")).rows()

    # ---- reject store (written by RejectWriter, read here) -----------------------------------
    def rejects(self, run_id: str | None = None) -> pl.DataFrame:
        """The rejected records (of one run, or all), the reject files of one-shot runs folded in
        first (see `RejectFile`)."""
        import polars as pl

        self.fold_rejects()
        cur = self.cursor()
        try:
            exists = cur.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [REJECTS_TABLE]
            ).fetchall()[0][0]
            if not exists:
                return pl.DataFrame(
                    schema={
                        "run_id": pl.String,
                        "node_id": pl.String,
                        "reason": pl.String,
                        "record": pl.String,
                    }
                )
            where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
            tbl = cur.sql(
                f"SELECT run_id, pipeline, node_id, reason, record::VARCHAR AS record, rejected_at"
                f" FROM {REJECTS_TABLE} {where} ORDER BY rejected_at",
                params=params,
            ).to_arrow_table()
            return pl.from_arrow(tbl)
        finally:
            cur.close()


def shrink_duckdb_file(path: Path) -> int:
    """DuckDB keeps a file as large as it ever grew. A transaction that was rolled back after a full
    disk leaves the file's end full of blocks no table uses, so the disk stays full and every later
    write fails (the WAL cannot grow either). Opened afresh, DuckDB counts only the blocks its
    checkpoint uses (`pragma_database_size().total_blocks`); past those the file holds nothing,
    and is cut there. Only for a file no connection of this process has open (a connection still
    open would report its old size, and nothing is cut). Returns the bytes freed."""
    import duckdb

    path = Path(path)
    if not path.is_file():
        return 0
    try:
        # First a checkpoint (a WAL left by a killed process goes into the file), closed: nothing
        # is written after it. Then, opened afresh, the size its checkpoint uses.
        con = duckdb.connect(str(path))
        try:
            con.execute("CHECKPOINT")
        finally:
            con.close()
        con = duckdb.connect(str(path))
        try:
            block_size, blocks = con.execute(
                "SELECT block_size, total_blocks FROM pragma_database_size()"
                " WHERE database_name = current_database()"
            ).fetchone()  # type: ignore[misc]
        finally:
            con.close()
    except duckdb.Error:
        return 0  # locked by another process, or unreadable: leave it as it is
    used = HEADER_BYTES + int(blocks) * int(block_size)
    size = path.stat().st_size
    if size <= used:
        return 0
    os.truncate(path, used)
    return size - used


def _reject_table(
    batches: list[tuple[str, pl.DataFrame]],
    *,
    run_id: str,
    pipeline: str,
    reason_column: str = "_reject_reason",
) -> pl.DataFrame | None:
    """The rows of REJECTS_TABLE for these (node id, rejected rows) batches (the record as JSON
    text), or None when they hold no row."""
    import polars as pl

    # One frame per node and shape first: the one-query chain hands rejects over in the pieces
    # Polars' sink makes (a 1 M-row run's ~15k rejects came in 61 frames of 3 - 500 rows), and
    # the encoding below costs per frame: 62 -> 13 ms of CPU for those.
    groups: dict[tuple, list[pl.DataFrame]] = {}
    for node_id, rows in batches:
        if rows.height:
            groups.setdefault((node_id, tuple(map(str, rows.schema.items()))), []).append(rows)
    if not groups:
        return None
    now = datetime.now(UTC).replace(tzinfo=None)
    parts = [
        reject_rows(
            (frames[0] if len(frames) == 1 else pl.concat(frames, rechunk=False)).lazy(),
            node_id=node_id,
            run_id=run_id,
            pipeline=pipeline,
            at=now,
            reason_column=reason_column,
        )
        for (node_id, _shape), frames in groups.items()
    ]
    return pl.concat(parts).collect()


def reject_rows(
    rejected: pl.LazyFrame,
    *,
    node_id: str,
    run_id: str,
    pipeline: str,
    at: datetime | None = None,
    reason_column: str = "_reject_reason",
) -> pl.LazyFrame:
    """REJECTS_TABLE's columns for one node's rejected rows: the reason (`reason_column`, null
    where there is none) and the rest of the row as one JSON object, `record`, built column-wise
    by Polars (no per-row Python). Lazy, so the one-query chain sinks it inside its own query
    (engine/lazy_chain.py); `_reject_table` collects it for the batches the other writers get.
    `at` is naive UTC, as the table's `rejected_at` is (now, when not given)."""
    import polars as pl

    if at is None:
        at = datetime.now(UTC).replace(tzinfo=None)

    schema = rejected.collect_schema()
    payload = [name for name in schema.names() if name != reason_column]
    reason = pl.col(reason_column).cast(pl.String) if reason_column in schema else pl.lit(None, pl.String)
    return rejected.select(
        pl.lit(run_id, pl.String).alias("run_id"),
        pl.lit(pipeline, pl.String).alias("pipeline"),
        pl.lit(node_id, pl.String).alias("node_id"),
        reason.alias("reason"),
        _record_json(schema, payload).alias("record"),
        pl.lit(at).alias("rejected_at"),
    )


def _insert_rejects(
    cur: duckdb.DuckDBPyConnection,
    batches: list[tuple[str, pl.DataFrame]],
    *,
    run_id: str,
    pipeline: str,
    reason_column: str = "_reject_reason",
) -> int:
    table = _reject_table(batches, run_id=run_id, pipeline=pipeline, reason_column=reason_column)
    if table is None:
        return 0
    cur.execute(REJECTS_DDL)
    cur.register("_reject_batch", arrow_stream(table))
    try:
        cur.execute(f"INSERT INTO {REJECTS_TABLE} SELECT * FROM _reject_batch")
    finally:
        cur.unregister("_reject_batch")
    return table.height


class RejectWriter:
    """A run's rejected records, written while the run goes on, in one transaction committed with the
    run's destinations (so a failed or retried run leaves none behind). Same contract as a sink."""

    # Rejected rows are inserted as they come, on the writer's own thread while the run goes on, so
    # that the commit has nothing left to do but COMMIT. At 100,000 a 1M-row run's rejects (~15k)
    # were all inserted at the end, after the data, in series with the commit (issue 12: 11% of a
    # DuckDB run).
    FLUSH_ROWS = 8_192

    def __init__(self, historian: Historian, *, run_id: str, pipeline: str):
        self.historian, self.run_id, self.pipeline = historian, run_id, pipeline
        self.name = "reject store"
        self.cur: duckdb.DuckDBPyConnection | None = None
        self.pending: list[tuple[str, pl.DataFrame]] = []
        self.pending_rows = 0
        self.rows = 0  # rejected records written in this run

    def open(self) -> None:
        self.cur = self.historian.cursor(small_writes=True)
        self._guarded(lambda: self.cur.execute("BEGIN TRANSACTION"))  # type: ignore[union-attr]

    def write(self, batch: tuple[str, pl.DataFrame]) -> None:
        self.pending.append(batch)
        self.pending_rows += batch[1].height
        self.rows += batch[1].height
        if self.pending_rows >= self.FLUSH_ROWS:
            self._flush()

    def flush(self) -> None:
        self._flush()

    def _flush(self) -> None:
        assert self.cur is not None
        pending, self.pending, self.pending_rows = self.pending, [], 0
        self._guarded(lambda: _insert_rejects(self.cur, pending, run_id=self.run_id, pipeline=self.pipeline))  # type: ignore[arg-type]

    def close(self) -> None:
        self._flush()
        assert self.cur is not None
        self._guarded(lambda: self.cur.execute("COMMIT"))  # type: ignore[union-attr]
        self.cur.close()
        self.cur = None

    def _guarded(self, action) -> None:
        """A DuckDB error is one line naming the reject store (a full disk: NoSpaceError)."""
        import duckdb

        try:
            action()
        except duckdb.Error as exc:
            from engine.diskspace import duckdb_no_space
            from engine.errors import ConnectorError, first_line

            full = duckdb_no_space(exc, self.historian.path)
            if full is not None:
                raise full from None
            raise ConnectorError(f"{self.describe_target()}: {first_line(exc)}") from None

    def abort(self) -> None:
        import duckdb

        if self.cur is not None:
            with contextlib.suppress(duckdb.Error):  # a failed statement may have ended it already
                self.cur.execute("ROLLBACK")
            self.cur.close()
            self.cur = None
        self.pending = []

    def describe_target(self) -> str:
        return f"{self.historian.path.name}:{REJECTS_TABLE}"


def _is_reject_file(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith(".")


class RejectFile:
    """A one-shot run's rejected records as one Parquet file, not in DuckDB (issue 12).

    A run whose process has not opened the historian (a file -> file chain) would open DuckDB only
    for its rejects: import, connect, insert, COMMIT and the checkpoint at close, ~0.13 CPU-s for the
    ~20k rejects of a 1 M-row run. Instead the rows of REJECTS_TABLE (the same columns; the record
    as JSON text) are written by Polars into a hidden temporary file in the historian's
    `rejects/` folder (`.<run_id>.parquet.tmp-<random>`, recorded with the run first, so a killed
    run's is removed by the next start-up's recovery), synced at the end of the writing (`flush`),
    and renamed to `rejects/<run_id>.parquet` in the run's commit (`publish`, a rename the commit
    can take back like a file destination's). The next process that opens the historian (a
    service, a DuckDB destination, a reader of the rejects) folds the file into the table and
    removes it (`Historian._fold_reject_files`); the readers fold before they read.

    Rows are kept in memory up to SPILL_ROWS, then written to hidden part files that the flush
    joins into the run's one file (a streaming copy: memory stays bounded)."""

    SPILL_ROWS = 100_000

    def __init__(self, historian: Historian, *, run_id: str, pipeline: str, track=None):
        self.historian, self.run_id, self.pipeline = historian, run_id, pipeline
        self.name = "reject store"
        self.folder = historian.reject_folder
        self.target = self.folder / f"{run_id}.parquet"
        self._track = track or (lambda kind, location, name=None: lambda: None)
        self.pending: list[tuple[str, pl.DataFrame]] = []
        self.pending_rows = 0
        self.rows = 0  # rejected records written in this run
        self.parts: list[tuple[Path, object]] = []  # spilled part files, each with its forget()
        self.temp: Path | None = None
        self._forget_temp = lambda: None
        self.published = False

    def open(self) -> None:
        pass  # nothing until the first rows: the folder is made when a file is written

    def write(self, batch: tuple[str, pl.DataFrame]) -> None:
        self.pending.append(batch)
        self.pending_rows += batch[1].height
        self.rows += batch[1].height
        if self.pending_rows >= self.SPILL_ROWS:
            self._spill()

    def _hidden(self, kind: str) -> Path:
        return self.folder / f".{self.target.name}.{kind}-{secrets.token_hex(4)}"

    def _write_pending(self, kind: str) -> tuple[Path, object] | None:
        pending, self.pending, self.pending_rows = self.pending, [], 0
        table = _reject_table(pending, run_id=self.run_id, pipeline=self.pipeline)
        if table is None:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._hidden(kind)
        forget = self._track("file", str(path))
        self._guarded(lambda: table.write_parquet(path))
        return path, forget

    def _spill(self) -> None:
        part = self._write_pending("part")
        if part is not None:
            self.parts.append(part)

    def new_part(self) -> Path:
        """A hidden part file for a Polars sink to write REJECTS_TABLE's rows into (the one-query
        chain sinks its rejects inside its own query: `reject_rows`). It is one of the run's parts
        from now on, so an abort removes it whether or not the sink got to write it; `adopt` says
        when the sink is done."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._hidden("part")
        self.parts.append((path, self._track("file", str(path))))
        return path

    def adopt(self, path: Path) -> int:
        """The rows a sink wrote into part file `path` (from its footer); an empty part is removed,
        so a run without rejects leaves no file."""
        import polars as pl

        rows = self._guarded(lambda: int(pl.scan_parquet(path, glob=False).select(pl.len()).collect().item()))
        if rows == 0:
            for i, (part, forget) in enumerate(self.parts):
                if part == path:
                    del self.parts[i]
                    path.unlink(missing_ok=True)
                    forget()  # type: ignore[operator]
                    break
        self.rows += rows
        return rows

    def flush(self) -> None:
        """Everything written and synced in the temporary file; the commit only renames it."""
        if self.temp is not None:
            return
        if not self.parts:
            written = self._write_pending("tmp")
            if written is None:
                return  # no rows: no file
            self.temp, self._forget_temp = written  # type: ignore[assignment]
        else:
            import polars as pl

            self._spill()
            if len(self.parts) == 1:  # one part (a sink's, or one spill) is the file already
                self.temp, self._forget_temp = self.parts.pop()  # type: ignore[assignment]
            else:
                self.temp = self._hidden("tmp")
                self._forget_temp = self._track("file", str(self.temp))
                paths = [str(p) for p, _forget in self.parts]
                self._guarded(lambda: pl.scan_parquet(paths).sink_parquet(self.temp))
                self._drop_parts()
        assert self.temp is not None
        self._guarded(lambda: _fsync_file(self.temp))

    def publish(self) -> None:
        self.flush()
        if self.temp is None:
            return
        if self.target.exists():  # a run commits once: its name is never taken
            from engine.errors import ConnectorError

            raise ConnectorError(f"{self.describe_target()}: exists already")
        self._guarded(lambda: os.replace(self.temp, self.target))  # type: ignore[arg-type]
        self.published = True
        self.temp = None
        self._forget_temp()
        fsync_dir(self.folder)

    def unpublish(self) -> None:
        if self.published:
            self.target.unlink(missing_ok=True)
            self.published = False
            fsync_dir(self.folder)

    def finalize(self) -> None:
        self.published = False

    def close(self) -> None:
        self.publish()
        self.finalize()

    def abort(self) -> None:
        self.pending, self.pending_rows = [], 0
        self._drop_parts()
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)
            self.temp = None
            self._forget_temp()

    def _drop_parts(self) -> None:
        for path, forget in self.parts:
            path.unlink(missing_ok=True)
            forget()  # type: ignore[operator]
        self.parts = []

    def _guarded(self, action):
        """`action()`'s value; an error is one line naming the reject store (a full disk:
        NoSpaceError)."""
        try:
            return action()
        except Exception as exc:
            from engine.diskspace import as_no_space
            from engine.errors import ConnectorError

            full = as_no_space(exc, self.folder)
            if full is not None:
                raise full from None
            raise ConnectorError(f"{self.describe_target()}: {exc}") from None

    def describe_target(self) -> str:
        return f"{REJECT_FILES_DIR}/{self.target.name}"


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _record_json(schema: pl.Schema, names: list[str]) -> pl.Expr:
    """Columns `names` of each row as one JSON object; times as ISO text (a datetime with its
    fraction and a Z, a date as a date)."""
    import polars as pl

    if not names:
        return pl.repeat(pl.lit("{}"), pl.len())
    return pl.struct(
        [
            pl.col(c).dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")
            if schema[c] == pl.Datetime
            else pl.col(c).dt.to_string("%Y-%m-%d")  # a date has no time to format: it failed so
            if schema[c] == pl.Date
            else pl.col(c)
            for c in names
        ]
    ).struct.json_encode()
