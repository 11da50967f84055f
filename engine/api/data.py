"""EngineAPI: the data calls (see engine/api/core.py): the historian's tables and views, paged
previews, a read-only SQL console and exports. Every call here touches DuckDB or disk, so the GUI
runs them through `call`/`submit`, never on its own thread."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.api.core import EngineCore, Job
from engine.errors import DataError
from engine.sql_sandbox import SqlRefused, check_statement, refuse_outside_access, statements

if TYPE_CHECKING:  # Polars is imported by the calls that make frames: a service start does not need it
    import polars as pl

EXPORT_FORMATS = ("csv", "parquet", "xlsx")
# Statement types the console runs; anything that could write is refused before it runs.
READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA"}
# PRAGMAs that only describe (others change settings of the one DuckDB instance the engine shares).
READ_ONLY_PRAGMAS = {
    "collations",
    "database_list",
    "database_size",
    "functions",
    "metadata_info",
    "platform",
    "show",
    "show_databases",
    "show_tables",
    "show_tables_expanded",
    "storage_info",
    "table_info",
    "user_agent",
    "version",
}
EXPLAIN_PREFIX = re.compile(r"^\s*EXPLAIN\s+(\([^)]*\)\s*)?(ANALY[SZ]E\s+)?", re.IGNORECASE)
PRAGMA_NAME = re.compile(r"^\s*PRAGMA\s+([A-Za-z_]+)", re.IGNORECASE)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def export_format(path: Path, fmt: str | None) -> str:
    """The export format named, else by the file's suffix (a local or a remote export alike)."""
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    fmt = {"xls": "xlsx", "excel": "xlsx", "pq": "parquet"}.get(fmt, fmt)
    if fmt not in EXPORT_FORMATS:
        raise DataError(f"export to {path}: format '{fmt}' (allowed: {', '.join(EXPORT_FORMATS)})")
    return fmt


def write_frame(frame: pl.DataFrame, path: Path | str, fmt: str | None = None) -> Path:
    """Write `frame` as CSV, Parquet or Excel, atomically: a temporary file beside the target is
    renamed over it once complete, so a failed export leaves no partial file."""
    path = Path(path)
    fmt = export_format(path, fmt)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{fmt}", dir=path.parent)
    except OSError as exc:
        raise DataError(f"export to {path}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        if fmt == "csv":
            frame.write_csv(tmp)
        elif fmt == "parquet":
            frame.write_parquet(tmp)
        else:
            import polars as pl

            # Excel has no time zones; naive local-free UTC values keep the numbers the same
            naive = frame.with_columns(
                pl.col(c).dt.replace_time_zone(None)
                for c, t in frame.schema.items()
                if isinstance(t, pl.Datetime) and t.time_zone
            )
            naive.write_excel(tmp, autofit=True)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, DataError):  # one line, as the GUI shows it
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"export to {path}: {text}") from exc
        raise
    return path


class LocalData:
    """The data part of the in-process engine (`engine.data`)."""

    def __init__(self, core: EngineCore):
        self._core = core

    def objects(self) -> list[dict[str, Any]]:
        """The historian's tables and views: name, schema, kind, estimated rows, columns."""
        self._core.workspace.historian.fold_rejects()  # one-shot runs' reject files, into `_rejects`
        cur = self._core.workspace.historian.cursor()
        try:
            rows = cur.execute(
                "SELECT schema_name, table_name, 'table' AS kind, estimated_size, column_count"
                " FROM duckdb_tables() WHERE NOT internal"
                " UNION ALL SELECT schema_name, view_name, 'view', NULL, column_count"
                " FROM duckdb_views() WHERE NOT internal AND NOT temporary"
                " ORDER BY 3, 1, 2"
            ).fetchall()
        finally:
            cur.close()
        return [
            {
                "schema": s,
                "name": n if s == "main" else f"{s}.{n}",
                "kind": k,
                "rows": size,
                "columns": cols,
            }
            for s, n, k, size, cols in rows
        ]

    def preview_object(self, name: str, offset: int = 0, limit: int = 200) -> dict[str, Any]:
        """One page of a table or view: `{"frame", "offset", "total"}`."""
        known = {o["name"] for o in self.objects()}
        if name not in known:
            raise DataError(
                f"historian: no table or view '{name}' (known: {', '.join(sorted(known)) or 'none'})"
            )
        ref = ".".join(_quote(p) for p in name.split(".", 1))
        cur = self._core.workspace.historian.cursor()
        try:
            total = cur.sql(f"SELECT count(*) FROM {ref}").fetchall()[0][0]
            frame = cur.sql(f"SELECT * FROM {ref} LIMIT ? OFFSET ?", params=[int(limit), int(offset)]).pl()
        finally:
            cur.close()
        return {"frame": frame, "offset": offset, "total": total}

    def sql(self, sql: str, limit: int = 10_000) -> dict[str, Any]:
        """Run one read-only statement on the historian: `{"frame", "truncated", "rows"}`.
        At most `limit` rows come back; writes (INSERT, DROP, COPY, ATTACH, SET...) are refused,
        and so is an EXPLAIN ANALYZE of one (it would run it). What passes runs in a transaction that
        is always rolled back, so nothing the console runs can change the historian."""
        import duckdb
        import polars as pl

        self._core.workspace.historian.fold_rejects()  # one-shot runs' reject files, into `_rejects`
        cur = self._core.workspace.historian.cursor()
        try:
            self._refuse_writes(sql)
            cur.begin()
            try:
                rel = cur.sql(sql.strip().rstrip(";"))
                frame = rel.limit(limit + 1).pl() if rel is not None else pl.DataFrame()
            except duckdb.Error as exc:
                raise DataError(f"SQL console: {str(exc).strip().splitlines()[0]}") from None
            finally:
                cur.rollback()
        finally:
            cur.close()
        truncated = frame.height > limit
        frame = frame.head(limit)
        return {"frame": frame, "truncated": truncated, "rows": frame.height}

    @staticmethod
    def _refuse_writes(sql: str) -> None:
        """The statement check of the sql transform's sandbox (engine/sql_sandbox.py), with the
        console's wider list of kinds; EXPLAIN and PRAGMA are then narrowed to what only reads, and
        a query may not read files (no table function that can, no `FROM 'file.csv'`)."""
        allowed = "read-only: SELECT, EXPLAIN of a SELECT, and PRAGMAs that describe"

        def refused(exc: SqlRefused) -> DataError:
            return DataError(f"SQL console: {exc}")

        try:
            kind = check_statement(sql, READ_ONLY_STATEMENTS, allowed).type.name
            query = EXPLAIN_PREFIX.sub("", sql, count=1) if kind == "EXPLAIN" else sql
            if kind == "EXPLAIN":
                inner = statements(query)
                inner_kind = inner[0].type.name if len(inner) == 1 else "EXPLAIN"
                if inner_kind != "SELECT":
                    raise SqlRefused(f"EXPLAIN of {inner_kind} is not allowed here ({allowed})")
            if kind in ("SELECT", "EXPLAIN"):
                # The historian keeps DuckDB's file access, so the query itself must not name a file.
                refuse_outside_access(query, "in the SQL console")
        except SqlRefused as exc:
            raise refused(exc) from None
        if kind == "PRAGMA":
            match = PRAGMA_NAME.match(sql)
            name = match.group(1).lower() if match else "?"
            if name not in READ_ONLY_PRAGMAS:
                raise DataError(f"SQL console: PRAGMA {name} is not allowed here ({allowed})")

    def export_frame(self, frame: pl.DataFrame, path: Path | str, fmt: str | None = None) -> Job[Path]:
        """Write a frame to a file (csv, parquet, xlsx) in the background; the job's result is its path."""
        return self._core.submit("export", lambda _cancel: write_frame(frame, path, fmt))

    def export_object(self, name: str, path: Path | str, fmt: str | None = None) -> Job[Path]:
        """A whole table or view to a file (no row limit), in the background."""

        def work(_cancel) -> Path:
            page = self.preview_object(name, 0, 0)
            result = self.preview_object(name, 0, max(page["total"], 1))
            return write_frame(result["frame"], path, fmt)

        return self._core.submit("export", work)
