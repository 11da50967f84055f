"""The durable outbox of one remote destination: SQLite in WAL mode with `synchronous=FULL`.

Why SQLite and not segment files (measured: docs/performance.md "Outbox (issue 11)", reasoning in
docs/architecture.md): one row per micro-batch holding the batch as an Arrow IPC blob costs one
WAL append plus one fsync per commit, the same physical work as a segment file with CRC and
fsync, and SQLite gives us for free what segment files must build: atomic multi-batch commits
(a batch run's rows all or none), a counter table updated in the same transaction as the data
(the counters can never disagree with the batches after a crash), torn-write detection (WAL frame
checksums: a torn tail is rolled back at open) and concurrent readers (`outbox status` from
another process).

Layout (`<data dir>/outbox/<pipeline>--<destination>.sqlite`, names percent-encoded):

- `batches`: one row per accepted micro-batch: `seq` (the order of acceptance), `first_rec` and
  `rows` (the records' outbox sequence numbers), `bytes`, `crc` (CRC-32 of the blob, checked on
  read), `created` (epoch s), `staged` (a run's token while its batches await the run's commit;
  NULL once accepted). Compact, so the figures (SUM, MIN) read a few pages, not the data.
- `blobs`: `seq` -> `data`: the records as Arrow IPC (LZ4), with the per-record metadata kept
  columnar inside (`_key`). Deleted with their batch (a trigger).
- `quarantine`: poison records refused by the upstream, with the reason and the tries.
- `meta`: the counters (`appended_records` ever accepted, `forwarded_records`, `dropped_records`,
  `quarantined_records`, `next_rec`), the link state, and what the destination is (pipeline,
  destination, connector type).

"Delivered up to" is kept by deleting the delivered batches in one transaction with
`forwarded_records`; the cursor shown is the lowest pending sequence. A crash between "delivered"
and "deleted" redelivers those batches, with the same keys: the upstream deduplicates them.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from engine.store.sqlite_tx import immediate

if TYPE_CHECKING:  # imported where a batch is encoded or decoded: a service start does not need them
    import pyarrow as pa

OUTBOX_DIR = "outbox"
SUFFIX = ".sqlite"
SCHEMA_VERSION = 1
DROP_LOG_EVERY_S = 10.0
COUNTERS = ("appended_records", "forwarded_records", "dropped_records", "quarantined_records")

_DDL = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    first_rec INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    created REAL NOT NULL,
    staged TEXT
);
CREATE INDEX IF NOT EXISTS batches_staged ON batches(staged) WHERE staged IS NOT NULL;
CREATE TABLE IF NOT EXISTS blobs (seq INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS batches_gone AFTER DELETE ON batches BEGIN
    DELETE FROM blobs WHERE seq = old.seq;
END;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    reason TEXT NOT NULL,
    tries INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
"""


class OutboxCorrupt(Exception):
    pass


_CORRUPTION = ("malformed", "not a database", "corrupt", "disk image")


def _is_corruption(exc: BaseException) -> bool:
    """A damaged file, not a busy or unreadable one (a lock, permissions, a full disk)."""
    if isinstance(exc, OutboxCorrupt):
        return True
    text = str(exc).lower()
    return any(word in text for word in _CORRUPTION)


def outbox_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / OUTBOX_DIR


def outbox_path(data_dir: Path | str, pipeline: str, destination: str) -> Path:
    return outbox_dir(data_dir) / f"{quote(pipeline, safe='')}--{quote(destination, safe='')}{SUFFIX}"


def destination_id(pipeline: str, destination: str) -> str:
    return f"{pipeline}/{destination}"


def parse_name(path: Path) -> tuple[str, str] | None:
    """(pipeline, destination) of an outbox file's name; None for another file."""
    name = path.name
    if not name.endswith(SUFFIX) or "--" not in name:
        return None
    left, _, right = name[: -len(SUFFIX)].rpartition("--")
    return unquote(left), unquote(right)


@functools.cache
def _ipc_options():
    import pyarrow.ipc as ipc

    return ipc.IpcWriteOptions(compression="lz4")  # ~4x smaller tag batches for ~0.2 ms each


PAGE = 4096  # SQLite's page size (the default)


def footprint(blob_bytes: int) -> int:
    """What a batch of `blob_bytes` occupies in the file: whole pages (overflow pages carry 4092
    bytes each) plus its row. The cap counts this, so the file holds within a few % of it."""
    return -(-blob_bytes // (PAGE - 4)) * PAGE + 64


def wal_allowance(max_bytes: int) -> int:
    """The WAL's share of a capped outbox's disk footprint: ~2.5% of the cap, 2 to 1,000 pages.
    The file is kept within the cap less this, and the WAL is truncated when it passes it."""
    return max(2, min(1000, max_bytes // PAGE // 40)) * PAGE


def _vacuum(con: sqlite3.Connection) -> None:
    """Give the file's free pages back to the file system. `PRAGMA incremental_vacuum` frees one
    page per step (a result row each, without a column name, which Python's sqlite3 does not step
    through): one statement frees one page, so it runs once per free page (~2 us each)."""
    for _ in range(con.execute("PRAGMA freelist_count").fetchone()[0]):
        con.execute("PRAGMA incremental_vacuum(1)")


def encode(table: pa.Table) -> bytes:
    """A table as an Arrow IPC stream, LZ4-compressed buffers (measured: bench_outbox.py)."""
    import pyarrow.ipc as ipc

    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema, options=_ipc_options()) as writer:
        writer.write_table(table)
    return sink.getvalue()


def decode(blob: bytes) -> pa.Table:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    return ipc.open_stream(pa.py_buffer(blob)).read_all()


@dataclass
class Batch:
    seq: int
    first_rec: int
    rows: int
    bytes: int
    created: float
    table: pa.Table | None  # None: the blob failed its CRC (reason in `error`)
    error: str | None = None


def _now() -> float:
    return time.time()


class OutboxStore:
    """One destination's outbox file. Thread-safe (one connection, one lock); several processes
    may open the same file (SQLite's locking, a busy timeout)."""

    def __init__(
        self,
        path: Path,
        *,
        pipeline: str | None = None,
        destination: str | None = None,
        connector_type: str | None = None,
        log: Any = None,
        repair: bool = True,
    ):
        """`repair`: a corrupt file is set aside and replaced (the process that forwards: the
        service, a run); without it (a status reader beside a service) `OutboxCorrupt` is raised
        and the file left alone for its owner."""
        self.path = Path(path)
        self._log = log or (lambda level, msg: None)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # notified on append, delete and drop
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.set_aside: Path | None = None
        self._epoch: str | None = None
        self._cap: int | None = None
        self._drop_said, self._drops_unsaid = float("-inf"), 0
        # Batches the forwarder has read and is delivering: never dropped or trimmed meanwhile (they
        # would count as dropped AND forwarded, and their gap records would shadow delivered keys).
        self._in_flight: set[int] = set()
        try:
            self.con = self._open()
        except (sqlite3.DatabaseError, OutboxCorrupt) as exc:
            if not _is_corruption(exc):
                raise  # locked, unreadable, a full disk: the file is fine, the moment is not
            if not repair:
                raise OutboxCorrupt(
                    f"outbox {self.path.name} is corrupt ({' '.join(str(exc).split())}); the service sets it"
                    " aside when it next starts"
                ) from None
            self.set_aside = self._set_aside(exc)
            self.con = self._open()
            self._bump_meta("corrupt_set_aside", 1)
            self._set_meta("last_set_aside", str(self.set_aside))
        if pipeline is not None:
            with self._tx():
                self._set_meta("pipeline", pipeline)
                self._set_meta("destination", destination)
                if connector_type:
                    self._set_meta("connector_type", connector_type)

    # ---- opening, and a corrupt file --------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            con.execute("PRAGMA auto_vacuum=INCREMENTAL")  # a new file: dropped pages can be given back
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA journal_size_limit=1048576")
            con.execute("PRAGMA busy_timeout=30000")
            check = con.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise OutboxCorrupt(f"quick_check: {check[0] if check else 'no answer'}")
            con.executescript(_DDL)
            version = con.execute("SELECT v FROM meta WHERE k='schema_version'").fetchone()
            if version is None:
                con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            elif version[0] != SCHEMA_VERSION:
                raise OutboxCorrupt(f"schema version {version[0]!r}, expected {SCHEMA_VERSION}")
            for name in (*COUNTERS, "next_rec", "corrupt_set_aside"):
                con.execute("INSERT OR IGNORE INTO meta VALUES (?, 0)", (name,))
            con.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (uuid.uuid4().hex[:8],))
        except BaseException:
            con.close()
            raise
        return con

    def _set_aside(self, exc: BaseException) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(aside) + suffix))
        self._log(
            "error",
            f"outbox {self.path.name} is corrupt ({' '.join(str(exc).split())}): set aside as {aside.name},"
            " a new empty outbox replaces it",
        )
        return aside

    def close(self) -> None:
        with self.lock, contextlib.suppress(sqlite3.Error):
            self.con.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            with immediate(self.con, self.lock) as con:
                yield con
            if self._cap is not None:
                self._checkpoint(self._cap)

    # ---- meta --------------------------------------------------------------------------------
    def _set_meta(self, k: str, v: Any) -> None:
        self.con.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v", (k, v))

    def _bump_meta(self, k: str, by: int) -> None:
        self.con.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v=v+excluded.v", (k, by)
        )

    def meta(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.con.execute("SELECT k, v FROM meta").fetchall())

    def set_link(self, state: str, detail: str | None = None) -> None:
        with self._tx():
            self._set_meta("link_state", state)
            self._set_meta("link_detail", detail)
            self._set_meta("link_since", _now())

    # ---- appending -----------------------------------------------------------------------------
    def _take_recs(self, con: sqlite3.Connection, rows: int) -> int:
        first = int(con.execute("SELECT v FROM meta WHERE k='next_rec'").fetchone()[0])
        self._set_meta("next_rec", first + rows)
        return first

    def _insert(self, con: sqlite3.Connection, table: pa.Table, first_rec: int, staged: str | None) -> int:
        blob = encode(table)
        self._add(con, first_rec, table.num_rows, blob, staged)
        return footprint(len(blob))

    @staticmethod
    def _add(con: sqlite3.Connection, first_rec: int, rows: int, blob: bytes, staged: str | None) -> int:
        cur = con.execute(
            "INSERT INTO batches (first_rec, rows, bytes, crc, created, staged) VALUES (?,?,?,?,?,?)",
            (first_rec, rows, footprint(len(blob)), zlib.crc32(blob), _now(), staged),
        )
        seq = int(cur.lastrowid)
        con.execute("INSERT INTO blobs (seq, data) VALUES (?, ?)", (seq, blob))
        return seq

    @property
    def epoch(self) -> str:
        """A random id made with this outbox file: keys made of the sequence never repeat, even
        after a corrupt outbox was replaced by a new one."""
        if self._epoch is None:
            self._epoch = str(self.meta().get("epoch"))
        return self._epoch

    def stage(self, make: Callable[[int], pa.Table], rows: int, token: str) -> int:
        """Write a batch that counts only once `commit(token)` accepts it (a run's earlier
        batches). `make(first_rec)` builds the table with its keys. Returns its bytes."""
        with self._tx() as con:
            return self._insert(con, make(self._take_recs(con, rows)), -1, token)

    def staged_bytes(self, token: str) -> int:
        with self.lock:
            return int(
                self.con.execute(
                    "SELECT COALESCE(SUM(bytes),0) FROM batches WHERE staged=?", (token,)
                ).fetchone()[0]
            )

    def commit(
        self,
        last: tuple[Callable[[int], pa.Table], int] | None,
        token: str | None,
        *,
        max_bytes: int | None = None,
        drop_oldest: bool = True,
        gap: Any = None,
    ) -> dict[str, int]:
        """Accept, in ONE durable transaction (fsync), the run's staged batches (`token`) and its
        last batch (`last`: `make(first_rec) -> table with keys`, and its record count). With a
        cap and `drop_oldest`, the oldest accepted batches are dropped to make room (the caller's
        `gap(dropped_tables, first_rec) -> table | None` makes the gap records written in their
        place). Returns {"rows", "bytes", "dropped_records"}. Raises `OutboxFull` when the run
        does not fit and nothing may be dropped."""
        with self._tx() as con:
            blob = None
            if last is not None:
                first_rec = self._take_recs(con, last[1])
                table = last[0](first_rec)
                blob = encode(table)
            new_bytes = footprint(len(blob)) if blob is not None else 0
            staged_rows = staged_bytes = 0
            if token is not None:
                staged_rows, staged_bytes = con.execute(
                    "SELECT COALESCE(SUM(rows),0), COALESCE(SUM(bytes),0) FROM batches WHERE staged=?",
                    (token,),
                ).fetchone()
            rows = int(staged_rows) + (table.num_rows if blob is not None else 0)
            total = int(staged_bytes) + new_bytes
            dropped = 0
            if max_bytes is not None and max_bytes != self._cap:
                # The WAL is part of the footprint: checkpointed at ~2.5% of the cap (see _settle).
                self._cap = max_bytes
                con.execute(f"PRAGMA wal_autocheckpoint={wal_allowance(max_bytes) // PAGE}")
                con.execute(f"PRAGMA journal_size_limit={wal_allowance(max_bytes)}")
            if max_bytes is not None:
                # The cap bounds the file on disk: its live pages (pending and staged batches,
                # the quarantine, SQLite's own pages) within the cap less the WAL's share, which
                # `_checkpoint` keeps. A batch's `bytes` (an estimate of its pages) picks how much
                # to drop; `_settle` then checks the pages the commit really left.
                over = self._file_over(con, max_bytes) + new_bytes
                if over > 0:
                    pending = con.execute("SELECT COUNT(*) FROM batches WHERE staged IS NULL").fetchone()[0]
                    if total > max_bytes or (not drop_oldest and pending):
                        raise OutboxFull(over, total)
                    dropped = self._drop_oldest(con, over, gap, max_bytes - total, must=0)
                    _vacuum(con)  # the file shrinks with the data
            if token is not None:
                con.execute("UPDATE batches SET staged=NULL, created=? WHERE staged=?", (_now(), token))
            if blob is not None:
                self._add(con, first_rec, table.num_rows, blob, None)
            self._bump_meta("appended_records", rows)
            if max_bytes is not None and drop_oldest:
                dropped += self._settle(con, max_bytes, gap)
            self.changed.notify_all()
        return {"rows": rows, "bytes": total, "dropped_records": dropped}

    @staticmethod
    def _file_over(con: sqlite3.Connection, max_bytes: int) -> int:
        """Bytes by which the file, once its free pages are given back, passes the cap less the
        WAL's share (negative: room left). Read inside the transaction, so it sees its own writes."""
        pages = (
            con.execute("PRAGMA page_count").fetchone()[0]
            - con.execute("PRAGMA freelist_count").fetchone()[0]
        )
        return pages * PAGE - (max_bytes - wal_allowance(max_bytes))

    def _settle(self, con: sqlite3.Connection, max_bytes: int, gap: Any) -> int:
        """After the insert: where the pages it took (B-tree growth, a gap record) still put the
        file over its share of the cap, drop the oldest records again. Returns the records dropped."""
        dropped = 0
        for _ in range(3):
            over = self._file_over(con, max_bytes)
            if over <= 0:
                break
            more = self._drop_oldest(con, over, gap, 0, must=0)
            _vacuum(con)
            if not more:
                break  # only what this commit added, or what is in flight, is left
            dropped += more
        _vacuum(con)  # pages freed by the commit's own rewrites
        return dropped

    def _checkpoint(self, max_bytes: int) -> None:
        """Copy the WAL into the file and truncate it once it passes its share of the cap: SQLite's
        automatic checkpoint only resets the WAL (its file keeps its size until the next one fits)
        and gives way to readers, so through a busy service the WAL had reached 0.8x the cap."""
        wal = Path(str(self.path) + "-wal")  # after every transaction of a capped outbox
        with self.lock, contextlib.suppress(sqlite3.Error, OSError):
            if wal.stat().st_size > wal_allowance(max_bytes):
                self.con.execute("PRAGMA busy_timeout=200")  # a reader in another process: next time
                try:
                    self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                finally:
                    self.con.execute("PRAGMA busy_timeout=30000")

    def _drop_oldest(
        self, con: sqlite3.Connection, over: int, gap: Any, room: int, must: int | None = None
    ) -> int:
        """Drop the oldest records until `over` bytes are free: whole batches, and the head of the
        last one (re-encoded), so that the outbox stays within a few percent of its cap. Raises
        `OutboxFull` when fewer than `must` (default `over`) bytes could be freed."""
        freed, dropped, seqs, tables = 0, 0, [], []
        cur = con.execute("SELECT seq, first_rec, rows, bytes FROM batches WHERE staged IS NULL ORDER BY seq")
        oldest: list[tuple[int, int, int, int]] = []
        total = 0
        held = False
        for row in cur:  # only the heads of the batches: just enough of them to free `over`
            if row[0] in self._in_flight:
                held = True
                continue
            oldest.append(row)
            total += row[3]
            if total >= over:
                break
        cur.close()
        for seq, first_rec, rows, size in oldest:
            if freed >= over:
                break
            need = over - freed
            (data,) = con.execute("SELECT data FROM blobs WHERE seq=?", (seq,)).fetchone()
            try:
                table = decode(data)
            except Exception:
                table = None
            if size - need >= 4 * PAGE and rows > 1 and table is not None:  # cut, within a few pages
                trimmed = self._trim(con, seq, first_rec, rows, size, need, table)
                if trimmed is not None:
                    k, new_size = trimmed
                    freed += size - new_size
                    dropped += k
                    tables.append(table.slice(0, k))
                    continue
            seqs.append(seq)
            freed += size
            dropped += rows
            if table is not None:
                tables.append(table)
        if freed < (over if must is None else must) and not held:
            raise OutboxFull(over - freed)
        # With batches in flight, the outbox may stay over its cap by at most what is being
        # delivered, until the delivery ends (they are deleted) or fails (they may be dropped next).
        con.executemany("DELETE FROM batches WHERE seq=?", [(s,) for s in seqs])
        self._bump_meta("dropped_records", dropped)
        if gap is not None and tables:
            first_rec = int(con.execute("SELECT v FROM meta WHERE k='next_rec'").fetchone()[0])
            made = gap(tables, first_rec)
            if made is not None and made.num_rows:
                self._take_recs(con, made.num_rows)
                self._insert(con, made, first_rec, None)
                self._bump_meta("appended_records", made.num_rows)
        self._drops_unsaid += dropped
        now = time.monotonic()
        if now - self._drop_said >= DROP_LOG_EVERY_S:  # the alarm line, at most every 10 s (summed)
            self._log(
                "warning",
                f"outbox {self.path.name} is full: dropped the oldest {self._drops_unsaid} records"
                " (written as gap records: quality bad, reason dropped)",
            )
            self._drop_said, self._drops_unsaid = now, 0
        return dropped

    @staticmethod
    def _trim(
        con: sqlite3.Connection, seq: int, first_rec: int, rows: int, size: int, need: int, table: pa.Table
    ) -> tuple[int, int] | None:
        """Drop the first records of one batch to free at least `need` bytes: (records dropped,
        the batch's new size), or None when trimming does not pay (drop the whole batch)."""
        k = min(rows - 1, max(1, math.ceil(rows * need / size * 1.02)))
        for _ in range(6):
            blob = encode(table.slice(k))
            if footprint(len(blob)) <= size - need:
                con.execute(
                    "UPDATE batches SET first_rec=?, rows=?, bytes=?, crc=? WHERE seq=?",
                    (first_rec + k, rows - k, footprint(len(blob)), zlib.crc32(blob), seq),
                )
                con.execute("UPDATE blobs SET data=? WHERE seq=?", (blob, seq))
                return k, footprint(len(blob))
            short = footprint(len(blob)) - (size - need)  # bytes still to free
            k = min(rows - 1, k + max(1, math.ceil((rows - k) * short / max(1, len(blob)) * 1.1)))
            if k >= rows - 1:
                return None
        return None

    def discard(self, token: str) -> None:
        with self._tx() as con:
            con.execute("DELETE FROM batches WHERE staged=?", (token,))

    def discard_staged_except(self, alive: Any) -> int:
        """Remove staged batches of runs that are gone (`alive(token)` false): a killed run."""
        with self.lock:
            tokens = [
                t for (t,) in self.con.execute("SELECT DISTINCT staged FROM batches WHERE staged IS NOT NULL")
            ]
        gone = [t for t in tokens if not alive(t)]
        for token in gone:
            self.discard(token)
        return len(gone)

    # ---- reading and delivering ----------------------------------------------------------------
    def pending(self) -> tuple[int, int, int, float | None, int | None]:
        """(batches, records, bytes, oldest created, lowest seq) of the accepted, undelivered batches."""
        with self.lock:
            n, rows, size, oldest, low = self.con.execute(
                "SELECT COUNT(*), COALESCE(SUM(rows),0), COALESCE(SUM(bytes),0), MIN(created), MIN(seq)"
                " FROM batches WHERE staged IS NULL"
            ).fetchone()
        return int(n), int(rows), int(size), oldest, low

    def max_seq(self, created_before: float | None = None) -> int:
        """The highest accepted sequence (of batches accepted before `created_before`, epoch s)."""
        sql = "SELECT COALESCE(MAX(seq),0) FROM batches WHERE staged IS NULL"
        args: tuple[Any, ...] = ()
        if created_before is not None:
            sql, args = sql + " AND created < ?", (created_before,)
        with self.lock:
            return int(self.con.execute(sql, args).fetchone()[0])

    def read(
        self,
        *,
        above: int | None = None,
        up_to: int | None = None,
        max_rows: int,
        max_batches: int = 1000,
        hold: bool = False,
    ) -> list[Batch]:
        """Accepted batches in order of `seq` (above `above`, at most `up_to`), whole batches up
        to `max_rows` records (at least one). `hold`: they are in flight until `delivered` or
        `release`: a full outbox drops other batches, never these."""
        where, args = ["staged IS NULL"], []
        if above is not None:
            where.append("seq > ?")
            args.append(above)
        if up_to is not None:
            where.append("seq <= ?")
            args.append(up_to)
        sql = (
            "SELECT seq, first_rec, rows, bytes, created, crc, data FROM batches JOIN blobs USING (seq) WHERE "
            + " AND ".join(where)
            + " ORDER BY seq LIMIT ?"
        )
        out: list[Batch] = []
        total = 0
        with self.lock:
            cur = self.con.execute(sql, (*args, max_batches))
            for seq, first_rec, rows, size, created, crc, data in cur:
                if out and total + rows > max_rows:
                    break
                total += rows
                if zlib.crc32(data) != crc:
                    out.append(
                        Batch(
                            seq,
                            first_rec,
                            rows,
                            size,
                            created,
                            None,
                            "CRC mismatch: the stored batch is damaged",
                        )
                    )
                    continue
                try:
                    out.append(Batch(seq, first_rec, rows, size, created, decode(data)))
                except Exception as exc:
                    out.append(Batch(seq, first_rec, rows, size, created, None, f"unreadable batch: {exc}"))
            cur.close()
            if hold:
                self._in_flight.update(b.seq for b in out)
        return out

    def release(self, seqs: list[int]) -> None:
        """The batches `seqs` are no longer in flight (their delivery failed): droppable again."""
        with self.lock:
            self._in_flight.difference_update(seqs)

    def delivered(
        self,
        seqs: list[int],
        rows: int,
        quarantine: list[tuple[pa.Table | None, str, int, int]] | None = None,
    ) -> None:
        """The batches `seqs` are delivered (`rows` records reached the upstream); records the
        upstream refused go to quarantine (table or None when unreadable, reason, tries, records),
        in the same transaction. Not fsync'ed by itself (`synchronous=NORMAL` for this one): a power
        cut may forget it, and then the batches are delivered again with the same keys and the
        upstream keeps them once; the next append's fsync makes it durable anyway."""
        with self.lock:
            self.con.execute("PRAGMA synchronous=NORMAL")
            try:
                self._delivered(seqs, rows, quarantine)
            finally:
                self.con.execute("PRAGMA synchronous=FULL")

    def _delivered(
        self, seqs: list[int], rows: int, quarantine: list[tuple[pa.Table | None, str, int, int]] | None
    ) -> None:
        with self._tx() as con:
            con.executemany("DELETE FROM batches WHERE seq=?", [(s,) for s in seqs])
            self._in_flight.difference_update(seqs)
            self._bump_meta("forwarded_records", rows)
            for table, reason, tries, nrows in quarantine or []:
                blob = encode(table) if table is not None else b""
                con.execute(
                    "INSERT INTO quarantine (created, reason, tries, rows, bytes, data) VALUES (?,?,?,?,?,?)",
                    (_now(), reason, tries, nrows, len(blob), blob),
                )
                self._bump_meta("quarantined_records", nrows)
            self.changed.notify_all()

    # ---- quarantine ------------------------------------------------------------------------------
    def quarantine_list(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.con.execute(
                "SELECT id, created, reason, tries, rows, bytes FROM quarantine ORDER BY id"
            ).fetchall()
        return [
            {
                "id": i,
                "created_at": datetime.fromtimestamp(c, UTC).isoformat(),
                "reason": r,
                "tries": t,
                "records": n,
                "bytes": b,
            }
            for i, c, r, t, n, b in rows
        ]

    def _quarantined(self, ids: list[int] | None) -> list[tuple[int, bytes, int]]:
        sql = "SELECT id, data, rows FROM quarantine"
        if ids is not None:
            sql += f" WHERE id IN ({','.join('?' * len(ids))})"
        with self.lock:
            return self.con.execute(sql + " ORDER BY id", ids or ()).fetchall()

    def quarantine_records(self, ids: list[int] | None = None) -> list[dict[str, Any]]:
        """The quarantined records as JSON-ready dicts, each with `quarantine_id` and
        `quarantine_reason` (the entry's; a tag record keeps its own `reason` field)."""
        reasons = {q["id"]: q["reason"] for q in self.quarantine_list()}
        out: list[dict[str, Any]] = []
        for qid, blob, _ in self._quarantined(ids):
            if not blob:
                continue
            import polars as pl

            frame = pl.from_arrow(decode(blob))
            assert isinstance(frame, pl.DataFrame)
            for record in frame.to_dicts():  # export only, never a hot path
                out.append({**record, "quarantine_id": qid, "quarantine_reason": reasons.get(qid)})
        return out

    def quarantine_retry(self, ids: list[int] | None = None) -> int:
        """Put quarantined records back into the outbox (same keys): they are delivered again."""
        moved = 0
        with self._tx() as con:
            for qid, blob, rows in self._quarantined(ids):
                if blob:
                    self._add(con, -1, rows, blob, None)
                con.execute("DELETE FROM quarantine WHERE id=?", (qid,))
                moved += rows
            self.changed.notify_all()
        return moved

    def quarantine_delete(self, ids: list[int] | None = None) -> int:
        gone = 0
        with self._tx() as con:
            for qid, _, rows in self._quarantined(ids):
                con.execute("DELETE FROM quarantine WHERE id=?", (qid,))
                gone += rows
        return gone

    # ---- status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        meta = self.meta()
        n, rows, size, oldest, low = self.pending()
        with self.lock:  # the file between two transactions (a commit's WAL is checkpointed after it)
            q = self.con.execute("SELECT COUNT(*), COALESCE(SUM(rows),0) FROM quarantine").fetchone()
            on_disk = sum(
                Path(str(self.path) + s).stat().st_size
                for s in ("", "-wal")
                if Path(str(self.path) + s).exists()
            )
        return {
            "pipeline": meta.get("pipeline"),
            "destination": meta.get("destination"),
            "connector_type": meta.get("connector_type"),
            "pending_batches": n,
            "pending_records": rows,
            "pending_bytes": size,
            "appended_records": int(meta.get("appended_records") or 0),
            "forwarded_records": int(meta.get("forwarded_records") or 0),
            "dropped_records": int(meta.get("dropped_records") or 0),
            "quarantined_records": int(meta.get("quarantined_records") or 0),
            "quarantine_entries": int(q[0]),
            "quarantine_records_held": int(q[1]),
            "oldest_pending_age_s": round(max(0.0, _now() - oldest), 3) if oldest is not None else None,
            "cursor": (low - 1) if low is not None else None,
            "link_state": meta.get("link_state") or "idle",
            "link_detail": meta.get("link_detail"),
            "corrupt_set_aside": int(meta.get("corrupt_set_aside") or 0),
            "last_set_aside": meta.get("last_set_aside"),
            "file": str(self.path),
            "file_bytes": on_disk,
        }

    def describe(self) -> str:
        return json.dumps({"file": str(self.path)})


class OutboxFull(Exception):
    """The run's `needed` bytes do not fit: `over` bytes too many now."""

    def __init__(self, over: int, needed: int = 0):
        super().__init__(f"the outbox is full ({over} bytes over its cap)")
        self.over, self.needed = over, needed


def run_token() -> str:
    """Marks a run's staged batches: this process (pid and start time) and a random part."""
    from engine import process

    pid, started = process.current()
    return f"{pid}:{started}:{uuid.uuid4().hex[:8]}"


def token_alive(token: str) -> bool:
    """Is the process that staged these batches still running? (A killed run's batches go.)"""
    from engine import process

    pid, _, rest = token.partition(":")
    started = rest.rpartition(":")[0] or None
    try:
        return process.alive(int(pid), None if started in (None, "None") else started)
    except ValueError:
        return False
