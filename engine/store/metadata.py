"""Metadata store: SQLite (plain sqlite3; the tables as sqlite-utils made them), WAL mode.

Pipelines and their versions, runs, per-node statistics and run log lines; the process that owns
each unfinished run, and what its destinations left on disk until they commit or abort (so that a
killed run can be cleaned up by the next process that opens the data directory).

A full disk never takes a run down with it: log lines that cannot be written wait in memory and go
out with the next write that succeeds; a run record that cannot be written raises `NoSpaceError`
(one line), and the caller retries it once space is freed.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.diskspace import NoSpaceError, as_no_space
from engine.runs.timefmt import now_iso
from engine.secrets import mask
from engine.statuses import UNFINISHED

SCHEMA_VERSION = 1
MAX_PENDING_LOGS = 10_000  # log lines kept in memory while the disk is full

_log = logging.getLogger(__name__)


def utc_now() -> str:
    return now_iso()  # the one time text (engine/runs/timefmt.py)


_LOG_SQL = "INSERT INTO run_logs (run_id, ts, level, node_id, message) VALUES (?, ?, ?, ?, ?)"
_UPSERTS: dict[tuple[str, tuple[str, ...], tuple[str, ...]], str] = {}


def _log_values(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["run_id"], row["ts"], row["level"], row["node_id"], row["message"])


def _masked_run(run: dict[str, Any]) -> dict[str, Any]:
    if run.get("error"):
        return {**run, "error": mask(run["error"])}  # secret values never reach the disk
    return run


def _cell(value: Any) -> Any:
    """A value as sqlite-utils stored it: containers as JSON text, moments as ISO text."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=repr)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return value


def _upsert(conn: sqlite3.Connection, table: str, pk: tuple[str, ...], row: dict[str, Any]) -> None:
    """Insert `row`, or update the given columns of the row with its key (the other columns stay):
    sqlite-utils' `upsert` without its look-up of the table's columns on every call."""
    columns = tuple(row)
    sql = _UPSERTS.get((table, pk, columns))
    if sql is None:
        if any('"' in c for c in columns):
            raise ValueError(f"not a column name: {columns}")
        names = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" for _ in columns)
        sets = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in pk)
        conflict = ", ".join(f'"{c}"' for c in pk)
        sql = f'INSERT INTO "{table}" ({names}) VALUES ({marks}) ON CONFLICT ({conflict}) DO '
        sql += f"UPDATE SET {sets}" if sets else "NOTHING"
        _UPSERTS[(table, pk, columns)] = sql
    conn.execute(sql, tuple(_cell(v) for v in row.values()))


_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL", bool: "INTEGER"}
_PY_TYPES = {"TEXT": str, "INTEGER": int, "REAL": float, "FLOAT": float}


def _name(text: str) -> str:
    if '"' in text:
        raise ValueError(f"not a name: {text}")
    return f'"{text}"'


class _Database:
    """The few calls of sqlite-utils' `Database` this store makes, on plain sqlite3 (same tables,
    column types and index names as sqlite-utils made them): importing sqlite-utils cost every
    process that opens a data directory ~60 ms of CPU (pluggy, click, dateutil, its regexes), a
    fifth of a 10-row `aggregator run`'s own start-up."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params or ())

    def query(self, sql: str, params: Any = ()) -> Iterator[dict[str, Any]]:
        cursor = self.conn.execute(sql, params or ())
        keys = [d[0] for d in cursor.description]
        return iter([dict(zip(keys, row, strict=True)) for row in cursor.fetchall()])

    def __getitem__(self, table: str) -> _Table:
        return _Table(self.conn, table)

    def close(self) -> None:
        self.conn.close()


class _Table:
    def __init__(self, conn: sqlite3.Connection, name: str):
        self.conn = conn
        self.name = name

    def create(
        self, columns: dict[str, type], pk: str | tuple[str, ...], if_not_exists: bool = False
    ) -> None:
        keys = (pk,) if isinstance(pk, str) else tuple(pk)
        lines = [
            f"   {_name(c)} {_SQL_TYPES[t]}" + (" PRIMARY KEY" if keys == (c,) else "")
            for c, t in columns.items()
        ]
        if len(keys) > 1:
            lines.append(f"   PRIMARY KEY ({', '.join(_name(k) for k in keys)})")
        exists = "IF NOT EXISTS " if if_not_exists else ""
        self.conn.execute(f"CREATE TABLE {exists}{_name(self.name)} (\n" + ",\n".join(lines) + "\n)")

    @property
    def columns_dict(self) -> dict[str, type]:
        rows = self.conn.execute(f"PRAGMA table_info({_name(self.name)})").fetchall()
        return {row[1]: _PY_TYPES.get(str(row[2]).upper(), str) for row in rows}

    def add_column(self, column: str, kind: type) -> None:
        self.conn.execute(f"ALTER TABLE {_name(self.name)} ADD COLUMN {_name(column)} {_SQL_TYPES[kind]}")

    def upsert(self, row: dict[str, Any], pk: str) -> None:
        _upsert(self.conn, self.name, (pk,), row)

    def create_index(self, columns: list[str], if_not_exists: bool = False) -> None:
        index = _name(f"idx_{self.name}_{'_'.join(columns)}")
        exists = "IF NOT EXISTS " if if_not_exists else ""
        cols = ", ".join(_name(c) for c in columns)
        self.conn.execute(f"CREATE INDEX {exists}{index}\n    ON {_name(self.name)} ({cols})")


class MetadataStore:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the executor's threads; every write holds self._lock.
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self.db = _Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        # Reads hold it too: this one connection serves every thread, and a read interleaved with
        # another thread's transaction on it runs inside that transaction (with sqlite-utils, whose
        # reads ran in a SAVEPOINT, it released or committed the other's: "no such savepoint",
        # "cannot commit - no transaction is active", about 1 in 300 runs with 100 interval
        # pipelines a second; tests/benchmarks/bench_service.py scheduler_real). Each read is
        # fetched whole under the lock. RLock: writes read under it.
        self._lock = threading.RLock()
        query = self.db.query

        def locked_query(*args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
            with self._lock:
                return iter(list(query(*args, **kwargs)))

        self.db.query = locked_query  # type: ignore[method-assign]
        self._pending_logs: list[dict[str, Any]] = []  # lines that met a full disk
        self._closed = False
        self._migrate()

    def _migrate(self) -> None:
        db = self.db
        db["pipelines"].create(
            {"name": str, "created_at": str, "latest_version": int}, pk="name", if_not_exists=True
        )
        db["pipeline_versions"].create(
            {"pipeline": str, "version": int, "spec_hash": str, "spec": str, "saved_at": str},
            pk=("pipeline", "version"),
            if_not_exists=True,
        )
        db["runs"].create(
            {
                "run_id": str,
                "pipeline": str,
                "version": int,
                "status": str,
                "attempt": int,
                "started_at": str,
                "finished_at": str,
                "duration_s": float,
                "rows_in": int,
                "rows_out": int,
                "rows_rejected": int,
                "error": str,
                "trigger": str,
                "spec_path": str,
            },
            pk="run_id",
            if_not_exists=True,
        )
        db["node_stats"].create(
            {
                "run_id": str,
                "node_id": str,
                "kind": str,
                "status": str,
                "rows_in": int,
                "rows_out": int,
                "rows_rejected": int,
                "duration_s": float,
            },
            pk=("run_id", "node_id"),
            if_not_exists=True,
        )
        db["run_logs"].create(
            {"id": int, "run_id": str, "ts": str, "level": str, "node_id": str, "message": str},
            pk="id",
            if_not_exists=True,
        )
        # saved connector configurations (the GUI's Connectors page); secrets only as references
        db["connectors"].create(
            {"name": str, "connector_type": str, "role": str, "config": str, "updated_at": str},
            pk="name",
            if_not_exists=True,
        )
        # names of secrets stored through the app (a keyring cannot list its entries)
        db["secret_names"].create({"name": str, "stored_at": str}, pk="name", if_not_exists=True)
        # What a run's destinations have on disk before they commit: temporary files beside the
        # targets, `_stage_*` tables. Written before the thing is created, deleted once it is gone.
        db["run_leftovers"].create(
            {"id": int, "run_id": str, "kind": str, "location": str, "name": str},
            pk="id",
            if_not_exists=True,
        )
        for table, column, kind in (
            ("runs", "owner_pid", int),
            ("runs", "owner_start", str),
            ("node_stats", "committed", int),
        ):
            if column not in db[table].columns_dict:
                db[table].add_column(column, kind)
        db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
        db["meta"].upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
        db["runs"].create_index(["pipeline", "started_at"], if_not_exists=True)
        db["run_logs"].create_index(["run_id"], if_not_exists=True)
        db["runs"].create_index(["status"], if_not_exists=True)
        db["run_leftovers"].create_index(["run_id"], if_not_exists=True)

    def _write(self, action):
        """Run a write under the lock; a full disk becomes one line naming metadata.db."""
        with self._lock:
            try:
                self._flush_pending_logs()
                return action()
            except sqlite3.OperationalError as exc:
                full = as_no_space(exc, self.path)
                if full is None:
                    raise
                raise full from None

    def _flush_pending_logs(self) -> None:
        if self._pending_logs:
            self.db.conn.executemany(_LOG_SQL, [_log_values(row) for row in self._pending_logs])
            self._pending_logs = []

    # ---- pipelines ---------------------------------------------------------------------------
    def save_pipeline_version(self, name: str, document: dict[str, Any]) -> int:
        """Store the document as a new version unless it is identical to the latest one."""
        text = json.dumps(document, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()
        return self._atomic(lambda conn: self._save_version(conn, name, text, digest))

    @staticmethod
    def _save_version(conn: sqlite3.Connection, name: str, text: str, digest: str) -> int:
        """In the caller's transaction: the latest version if its hash is `digest`, else a new one."""
        row = conn.execute(
            "SELECT p.latest_version, v.spec_hash FROM pipelines p LEFT JOIN pipeline_versions v"
            " ON v.pipeline = p.name AND v.version = p.latest_version WHERE p.name = ?",
            (name,),
        ).fetchone()
        latest = (row[0] or 0) if row else 0
        if latest and row[1] == digest:
            return latest
        version, now = latest + 1, utc_now()
        conn.execute(
            "INSERT INTO pipeline_versions (pipeline, version, spec_hash, spec, saved_at) VALUES (?, ?, ?, ?, ?)",
            (name, version, digest, text, now),
        )
        if row:
            conn.execute("UPDATE pipelines SET latest_version = ? WHERE name = ?", (version, name))
        else:
            conn.execute(
                "INSERT INTO pipelines (name, created_at, latest_version) VALUES (?, ?, ?)",
                (name, now, version),
            )
        return version

    def pipeline_versions(self, name: str) -> list[dict[str, Any]]:
        return list(
            self.db.query(
                "SELECT pipeline, version, spec_hash, saved_at FROM pipeline_versions"
                " WHERE pipeline = ? ORDER BY version",
                [name],
            )
        )

    def pipeline_spec(self, name: str, version: int | None = None) -> dict[str, Any] | None:
        sql = "SELECT spec FROM pipeline_versions WHERE pipeline = ? ORDER BY version DESC LIMIT 1"
        params: list[Any] = [name]
        if version is not None:
            sql = "SELECT spec FROM pipeline_versions WHERE pipeline = ? AND version = ?"
            params.append(version)
        row = next(self.db.query(sql, params), None)
        return json.loads(row["spec"]) if row else None

    # ---- runs --------------------------------------------------------------------------------
    # Run records are written with plain sqlite3 statements (prepared once per text by the
    # connection's statement cache), a run's start and its finish each in one transaction: a tiny
    # scheduled run wrote ~10 autocommitted rows through sqlite-utils, which looks up the table's
    # columns on every call (~1 ms of CPU a run; tests/benchmarks/bench_service.py scheduler_real).
    def upsert_run(self, run: dict[str, Any]) -> None:
        run = _masked_run(run)
        self._atomic(lambda conn: _upsert(conn, "runs", ("run_id",), run))

    def save_node_stats(self, run_id: str, stats: dict[str, dict[str, Any]]) -> None:
        self._atomic(lambda conn: self._node_stats(conn, run_id, stats))

    @staticmethod
    def _node_stats(conn: sqlite3.Connection, run_id: str, stats: dict[str, dict[str, Any]]) -> None:
        for node_id, s in stats.items():
            _upsert(conn, "node_stats", ("run_id", "node_id"), {"run_id": run_id, "node_id": node_id, **s})

    def start_run_record(
        self, run: dict[str, Any], spec_text: str, spec_hash: str, level: str, message: str
    ) -> int:
        """A run's start in one transaction: the pipeline's version (as `save_pipeline_version`,
        from the document's canonical text and its SHA-256), the run row with it, and its first
        log line. Returns the version."""
        run = _masked_run(run)
        line = self._log_row(run["run_id"], level, message, None)

        def action(conn: sqlite3.Connection) -> int:
            version = self._save_version(conn, run["pipeline"], spec_text, spec_hash)
            _upsert(conn, "runs", ("run_id",), {**run, "version": version})
            conn.execute(_LOG_SQL, _log_values(line))
            return version

        return self._atomic(action)

    def finish_run_record(
        self, run: dict[str, Any], stats: dict[str, dict[str, Any]], level: str, message: str
    ) -> None:
        """A run's end in one transaction: its final row, its node statistics and its last log
        line. A full disk raises NoSpaceError and writes none of them."""
        run = _masked_run(run)
        line = self._log_row(run["run_id"], level, message, None)

        def action(conn: sqlite3.Connection) -> None:
            _upsert(conn, "runs", ("run_id",), run)
            self._node_stats(conn, run["run_id"], stats)
            conn.execute(_LOG_SQL, _log_values(line))

        self._atomic(action)

    def _atomic(self, action: Callable[[sqlite3.Connection], Any]) -> Any:
        """`action(connection)` in one transaction (or in the caller's, when one is open), under
        the lock; a full disk becomes NoSpaceError (nothing of it written)."""

        def run() -> Any:
            conn = self.db.conn
            if conn.in_transaction:
                return action(conn)
            conn.execute("BEGIN IMMEDIATE")  # the write lock first: no read-to-write upgrade to fail
            try:
                out = action(conn)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            return out

        return self._write(run)

    @staticmethod
    def _log_row(run_id: str, level: str, message: str, node_id: str | None) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "ts": utc_now(),
            "level": level,
            "node_id": node_id,
            "message": mask(message),
        }

    def log(self, run_id: str, level: str, message: str, node_id: str | None = None) -> None:
        """Never raises for a full disk: the line waits in memory for the next write that succeeds."""
        row = self._log_row(run_id, level, message, node_id)
        with self._lock:
            if self._closed:  # a source thread still stopping after the engine closed its stores
                _log.info("after close, not stored: run %s %s: %s", run_id, level, row["message"])
                return
            try:
                self._flush_pending_logs()
                self.db.conn.execute(_LOG_SQL, _log_values(row))
            except sqlite3.OperationalError as exc:
                if as_no_space(exc, self.path) is None:
                    raise
                if len(self._pending_logs) < MAX_PENDING_LOGS:
                    self._pending_logs.append(row)

    # ---- unfinished runs and what they leave behind ------------------------------------------------
    def unfinished_runs(self) -> list[dict[str, Any]]:
        marks = ", ".join("?" for _ in UNFINISHED)
        return list(self.db.query(f"SELECT * FROM runs WHERE status IN ({marks})", list(UNFINISHED)))

    def interrupt_run(self, run_id: str, reason: str, finished_at: str) -> bool:
        """Mark an unfinished run `interrupted` (its process is gone); False if it had finished."""
        marks = ", ".join("?" for _ in UNFINISHED)
        cur = self._write(
            lambda: self.db.execute(
                "UPDATE runs SET status = 'interrupted', error = ?, finished_at = ?"
                f" WHERE run_id = ? AND status IN ({marks})",
                [reason, finished_at, run_id, *UNFINISHED],
            )
        )
        return cur.rowcount > 0

    def running_counts(self, run_id: str, rows_in: int, rows_out: int, rows_rejected: int) -> None:
        """A long run's counts so far, on its record while it is unfinished: a stream killed
        (SIGKILL, power) keeps them when the next start-up marks it `interrupted`. Never raises
        for a full disk (the final record says it all, or the counts stay as they were)."""
        marks = ", ".join("?" for _ in UNFINISHED)
        try:
            self._write(
                lambda: self.db.execute(
                    "UPDATE runs SET rows_in = ?, rows_out = ?, rows_rejected = ?"
                    f" WHERE run_id = ? AND status IN ({marks})",
                    [rows_in, rows_out, rows_rejected, run_id, *UNFINISHED],
                )
            )
        except (NoSpaceError, sqlite3.Error) as exc:  # the stream goes on: its final record counts
            _log.warning("run %s: its counts so far were not saved: %s", run_id, exc)

    def note_leftover(self, run_id: str, kind: str, location: str, name: str | None = None) -> int:
        """Record, BEFORE creating it, something a run's destination is about to create (`file`: a
        temporary file, `duckdb_table`: a stage table in the DuckDB file `location`)."""
        return self._write(
            lambda: (
                self.db.conn.execute(
                    "INSERT INTO run_leftovers (run_id, kind, location, name) VALUES (?, ?, ?, ?)",
                    (run_id, kind, location, name),
                ).lastrowid
            )
        )

    def forget_leftover(self, leftover_id: int) -> None:
        """The thing is gone (committed or removed): nothing to clean up any more."""
        self._write(lambda: self.db.conn.execute("DELETE FROM run_leftovers WHERE id = ?", (leftover_id,)))

    def leftovers(self, finished_only: bool = True) -> list[dict[str, Any]]:
        """Leftovers of runs no process works on any more (every leftover with `finished_only` off)."""
        sql, params = "SELECT l.* FROM run_leftovers l", []
        if finished_only:
            marks = ", ".join("?" for _ in UNFINISHED)
            sql += (
                " LEFT JOIN runs r ON r.run_id = l.run_id"
                f" WHERE r.status IS NULL OR r.status NOT IN ({marks})"
            )
            params = list(UNFINISHED)
        return list(self.db.query(sql + " ORDER BY l.id", params))

    def runs(
        self,
        pipeline: str | None = None,
        status: str | None = None,
        limit: int = 100,
        since: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        """Run records, newest first, started in [`since`, `until`) (ISO 8601 UTC texts; None: open)."""
        where, params = [], []
        if until is not None:
            where.append("started_at < ?")
            params.append(until)
        if pipeline:
            where.append("pipeline = ?")
            params.append(pipeline)
        if status:
            where.append("status = ?")
            params.append(status)
        if since is not None:
            where.append("started_at >= ?")
            params.append(since)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY started_at DESC LIMIT ?"
        return list(self.db.query(sql, [*params, limit]))

    def run_pipeline_names(self) -> list[str]:
        """Pipelines that have runs, by name."""
        return [r["pipeline"] for r in self.db.query("SELECT DISTINCT pipeline FROM runs ORDER BY pipeline")]

    def pipeline_count(self) -> int:
        """Pipelines with at least one stored version."""
        return next(self.db.query("SELECT count(*) AS n FROM pipelines"))["n"]

    def runs_since(self, since: str) -> dict[str, int]:
        """{runs, rows_in, rows_out, failures, running} of the runs started at or after `since`."""
        return dict(
            next(
                self.db.query(
                    "SELECT count(*) AS runs, coalesce(sum(rows_in), 0) AS rows_in,"
                    " coalesce(sum(rows_out), 0) AS rows_out,"
                    " coalesce(sum(status IN ('failed', 'interrupted')), 0) AS failures,"
                    " coalesce(sum(status = 'running'), 0) AS running"
                    " FROM runs WHERE started_at >= ?",
                    [since],
                )
            )
        )

    def pipeline_stats(self, since: str | None = None) -> list[dict[str, Any]]:
        """Per pipeline (by name): runs, successes, failures, rows in/out/rejected, the last start,
        average and longest duration (s) and rows out per second of run time."""
        where, params = ("WHERE started_at >= ?", [since]) if since else ("", [])
        sql = (
            "SELECT pipeline, count(*) AS runs,"
            " coalesce(sum(status IN ('success', 'warning')), 0) AS successes,"
            " coalesce(sum(status IN ('failed', 'interrupted')), 0) AS failures,"
            " coalesce(sum(rows_in), 0) AS rows_in, coalesce(sum(rows_out), 0) AS rows_out,"
            " coalesce(sum(rows_rejected), 0) AS rows_rejected, max(started_at) AS last_started_at,"
            " avg(duration_s) AS avg_duration_s, max(duration_s) AS max_duration_s,"
            " coalesce(sum(duration_s), 0) AS total_duration_s"
            f" FROM runs {where} GROUP BY pipeline ORDER BY pipeline"
        )
        out = []
        for row in self.db.query(sql, params):
            total = row.pop("total_duration_s") or 0.0
            row["rows_per_s"] = round(row["rows_out"] / total, 3) if total > 0 else None
            out.append(row)
        return out

    def problem_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest failed or interrupted runs (the monitoring alerts), newest first."""
        sql = "SELECT * FROM runs WHERE status IN ('failed', 'interrupted') ORDER BY started_at DESC LIMIT ?"
        return list(self.db.query(sql, [limit]))

    def daily_runs(self, since: str) -> list[dict[str, Any]]:
        """Per UTC day and pipeline since `since`: runs, failures, rows out."""
        sql = (
            "SELECT substr(started_at, 1, 10) AS day, pipeline, count(*) AS runs,"
            " coalesce(sum(status IN ('failed', 'interrupted')), 0) AS failures,"
            " coalesce(sum(rows_out), 0) AS rows_out"
            " FROM runs WHERE started_at >= ? GROUP BY day, pipeline ORDER BY day, pipeline"
        )
        return list(self.db.query(sql, [since]))

    def last_runs(self) -> dict[str, dict[str, Any]]:
        """Each pipeline's newest run record, by pipeline name."""
        rows = self.db.query(
            "SELECT r.* FROM runs r JOIN (SELECT pipeline, MAX(started_at) AS latest FROM runs"
            " GROUP BY pipeline) l ON r.pipeline = l.pipeline AND r.started_at = l.latest"
        )
        return {row["pipeline"]: row for row in rows}

    def run(self, run_id: str) -> dict[str, Any] | None:
        return next(self.db.query("SELECT * FROM runs WHERE run_id = ?", [run_id]), None)

    def node_stats(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM node_stats WHERE run_id = ? ORDER BY rowid", [run_id]))

    def logs(self, run_id: str) -> list[dict[str, Any]]:
        return list(
            self.db.query(
                "SELECT ts, level, node_id, message FROM run_logs WHERE run_id = ? ORDER BY id", [run_id]
            )
        )

    # ---- connectors --------------------------------------------------------------------------
    def save_connector(self, name: str, connector_type: str, role: str, config: dict[str, Any]) -> None:
        row = {
            "name": name,
            "connector_type": connector_type,
            "role": role,
            "config": json.dumps(config, sort_keys=True),
            "updated_at": utc_now(),
        }
        with self._lock:
            self.db["connectors"].upsert(row, pk="name")

    def connectors(self) -> list[dict[str, Any]]:
        rows = self.db.query("SELECT * FROM connectors ORDER BY name")
        return [{**r, "config": json.loads(r["config"])} for r in rows]

    def connector(self, name: str) -> dict[str, Any] | None:
        row = next(self.db.query("SELECT * FROM connectors WHERE name = ?", [name]), None)
        return {**row, "config": json.loads(row["config"])} if row else None

    def delete_connector(self, name: str) -> bool:
        with self._lock:
            cur = self.db.execute("DELETE FROM connectors WHERE name = ?", [name])
            return cur.rowcount > 0

    def note_secret_name(self, name: str) -> None:
        with self._lock:
            self.db["secret_names"].upsert({"name": name, "stored_at": utc_now()}, pk="name")

    def secret_names(self) -> list[str]:
        return [r["name"] for r in self.db.query("SELECT name FROM secret_names ORDER BY name")]

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._flush_pending_logs()
            self._closed = True
            self.db.close()

    def forget_secret_name(self, name: str) -> None:
        """The name of a deleted secret leaves the list of names stored through the app."""
        with self._lock:
            self.db.execute("DELETE FROM secret_names WHERE name = ?", [name])
