"""The `sqlite` connector: a SQLite database file as a source and a destination (stdlib sqlite3).

Source: the rows come from `fetchmany` in batches of `batch_rows` and become Arrow through Polars
(no per-row Python of ours); a table's declared types (BOOLEAN, DATE, TIMESTAMP...) are restored,
so what the destination wrote reads back with its types. A query's columns come as SQLite gives
them (timestamps as text).

Destination: ONE transaction (`BEGIN IMMEDIATE` at open, `COMMIT` at close): the table is created
from the first batch (`create: true`), `replace` drops and re-creates it inside the transaction,
`upsert` deletes the rows whose `keys` come again and inserts the new ones. A failed run rolls back:
the file is as it was (SQLite's DDL is transactional).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any, Literal

import polars as pl
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from engine.connectors.base import DEFAULT_BATCH_ROWS, Connector, ConnectorConfig, Sink
from engine.connectors.registry import register
from engine.connectors.sql_common import SqlSource, SqlSourceFields, quote_name, valid_ident
from engine.errors import ConnectorError

_NAMED_TYPES = {  # declared type (upper, before any "(") -> Polars type to restore
    "BOOLEAN": pl.Boolean,
    "BOOL": pl.Boolean,
    "DATE": pl.Date,
    "TIMESTAMP": pl.Datetime("us"),
    "DATETIME": pl.Datetime("us"),
    "TIMESTAMPTZ": pl.Datetime("us", "UTC"),
    "TIME": pl.Time,
}


def _q(name: str) -> str:
    return quote_name(name, "sqlite")


def _connect(path: str, *, create: bool) -> sqlite3.Connection:
    from pathlib import Path

    if not create and not Path(path).is_file():
        raise ConnectorError(f"sqlite {path}: file not found")
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
    except sqlite3.Error as exc:
        raise ConnectorError(f"sqlite {path}: {exc}") from None
    return conn


class SQLiteSourceConfig(SqlSourceFields):
    path: str = Field(description="the SQLite database file")


class SQLiteSinkConfig(ConnectorConfig):
    path: str = Field(description="the SQLite database file (created if missing)")
    table: str = Field(description="the table to write")
    mode: Literal["append", "replace", "upsert"] = "append"
    keys: list[str] | None = Field(None, description="upsert: the columns that identify a row")
    create: bool = Field(True, description="create the table from the first batch when it is missing")

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return valid_ident(value) or value

    @model_validator(mode="after")
    def _keys(self):
        if self.mode == "upsert" and not self.keys:
            raise ValueError("mode upsert needs `keys`: the columns that identify a row")
        return self


class SQLiteSource(SqlSource):
    dialect = "sqlite"
    config: SQLiteSourceConfig

    def where(self) -> str:
        return f"sqlite {self.config.path}"

    def statement(self) -> tuple[str, list[Any]]:
        sql, params = super().statement()
        return sql, [_sqlite_value(v) for v in params]

    def _path(self) -> str:
        return str(self.ctx.resolve_path(self.config.path))

    def _declared(self, conn: sqlite3.Connection) -> dict[str, Any]:
        if not self.config.table:
            return {}
        rows = conn.execute(f"PRAGMA table_info({_q(self.config.table)})").fetchall()
        out = {}
        for row in rows:
            kind = (row[2] or "").upper().split("(")[0].strip()
            if kind in _NAMED_TYPES:
                out[row[1]] = _NAMED_TYPES[kind]
        return out

    def open_reader(self, sql: str, params: list[Any]) -> tuple[Iterator[pa.RecordBatch], Any]:
        conn = _connect(self._path(), create=False)
        try:
            declared = self._declared(conn)
            cur = conn.execute(sql, params)
        except sqlite3.Error as exc:
            conn.close()
            raise self.error(exc) from None
        names = [d[0] for d in cur.description]

        def batches() -> Iterator[pa.RecordBatch]:
            schema: pl.Schema | None = None
            while True:
                rows = cur.fetchmany(self._fetch)
                if not rows and schema is not None:
                    return
                frame = pl.DataFrame(rows, schema=names, orient="row", strict=False, infer_schema_length=None)
                frame = _restore(frame, declared)
                if not rows:
                    self.empty_schema = frame.to_arrow().schema
                if schema is None:
                    schema = frame.schema
                else:
                    frame = frame.cast(dict(schema), strict=False)
                yield from frame.to_arrow().to_batches()
                if not rows:
                    return

        return batches(), conn.close

    def read(self, limit: int | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pl.DataFrame]:
        self._fetch = max(1, min(batch_rows, 100_000))
        return super().read(limit, batch_rows)

    def check(self) -> str:
        conn = _connect(self._path(), create=False)
        try:
            sql, params = self.statement()
            conn.execute(f"SELECT * FROM ({sql}) LIMIT 0", params).fetchall()
            return f"SQLite {sqlite3.sqlite_version}, {self.config.path}: can SELECT"
        except sqlite3.Error as exc:
            raise self.error(exc) from None
        finally:
            conn.close()


def _sqlite_value(value: Any) -> Any:
    """A parameter as the destination stores it (times as the same ISO text, so they compare)."""
    import datetime as dt

    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return value


def _restore(frame: pl.DataFrame, declared: dict[str, Any]) -> pl.DataFrame:
    casts = []
    for name, kind in declared.items():
        if name not in frame.columns or frame.schema[name] == kind:
            continue
        col = pl.col(name)
        if isinstance(kind, pl.Datetime):
            text = col.cast(pl.String)
            if kind.time_zone:
                casts.append(text.str.to_datetime(time_unit="us", time_zone="UTC", strict=False).alias(name))
            else:
                casts.append(text.str.to_datetime(time_unit="us", strict=False).alias(name))
        elif kind == pl.Date:
            casts.append(col.cast(pl.String).str.to_date(strict=False).alias(name))
        elif kind == pl.Time:
            casts.append(col.cast(pl.String).str.to_time(strict=False).alias(name))
        else:
            casts.append(col.cast(kind, strict=False))
    return frame.with_columns(casts) if casts else frame


def sqlite_type(dtype: pl.DataType) -> str:
    if dtype == pl.Boolean:
        return "BOOLEAN"
    if dtype.is_integer():
        return "INTEGER"
    if dtype.is_float():
        return "REAL"
    if isinstance(dtype, pl.Decimal):
        return "NUMERIC"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMPTZ" if dtype.time_zone else "TIMESTAMP"
    if dtype == pl.Date:
        return "DATE"
    if dtype == pl.Time:
        return "TIME"
    if dtype == pl.Binary:
        return "BLOB"
    return "TEXT"


def _storable(batch: pl.DataFrame) -> pl.DataFrame:
    """Values SQLite stores: booleans as 0/1, times as ISO text (UTC with +00:00), durations as
    microseconds, decimals as text, nested values as JSON text."""
    out = []
    for name, dtype in batch.schema.items():
        col = pl.col(name)
        if dtype == pl.Boolean:
            out.append(col.cast(pl.Int8))
        elif isinstance(dtype, pl.Datetime):
            fmt = "%Y-%m-%d %H:%M:%S%.6f" + ("%:z" if dtype.time_zone else "")
            src = col.dt.convert_time_zone("UTC") if dtype.time_zone else col
            out.append(src.dt.to_string(fmt).alias(name))
        elif dtype == pl.Date or dtype == pl.Time:
            out.append(col.cast(pl.String))
        elif isinstance(dtype, pl.Duration):
            out.append(col.dt.total_microseconds())
        elif isinstance(dtype, pl.Decimal):
            out.append(col.cast(pl.String))
        elif isinstance(dtype, pl.List | pl.Struct | pl.Array):
            out.append(col.struct.json_encode() if isinstance(dtype, pl.Struct) else col.cast(pl.String))
        elif isinstance(dtype, pl.Categorical | pl.Enum | pl.Null):
            out.append(col.cast(pl.String))
    return batch.with_columns(out) if out else batch


class SQLiteSink(Sink):
    config: SQLiteSinkConfig

    def __init__(self, config: SQLiteSinkConfig, ctx, name: str = "destination"):
        super().__init__(config, ctx, name)
        self.conn: sqlite3.Connection | None = None
        self.columns: dict[str, str] | None = None  # lower name -> name
        self.target = _q(config.table)

    def describe_target(self) -> str:
        return f"sqlite {self.config.path}:{self.config.table}"

    def _fail(self, exc: BaseException) -> ConnectorError:
        self._rollback()
        return ConnectorError(f"{self.describe_target()}: {' '.join(str(exc).split())[:300]}")

    def open(self) -> None:
        path = self.ctx.resolve_path(self.config.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = _connect(str(path), create=True)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._fail(exc) from None

    def _existing(self) -> list[str]:
        assert self.conn is not None
        return [r[1] for r in self.conn.execute(f"PRAGMA table_info({self.target})").fetchall()]

    def _prepare(self, batch: pl.DataFrame) -> None:
        assert self.conn is not None
        if self.columns is None:
            existing = self._existing()
            if existing and self.config.mode == "replace":
                self.conn.execute(f"DROP TABLE {self.target}")
                existing = []
            if not existing:
                if not self.config.create:
                    raise ConnectorError(f"{self.describe_target()}: no such table (and `create` is false)")
                body = ", ".join(f"{_q(c)} {sqlite_type(t)}" for c, t in batch.schema.items())
                self.conn.execute(f"CREATE TABLE {self.target} ({body})")
                existing = batch.columns
            self.columns = {c.lower(): c for c in existing}
        for c, t in batch.schema.items():
            if c.lower() not in self.columns:
                self.conn.execute(f"ALTER TABLE {self.target} ADD COLUMN {_q(c)} {sqlite_type(t)}")
                self.columns[c.lower()] = c

    def write(self, batch: pl.DataFrame) -> None:
        if self.conn is None:
            raise ConnectorError(f"{self.describe_target()}: write() before open()")
        if batch.width == 0:
            return
        try:
            self._prepare(batch)
            if batch.height == 0:
                return
            keys = self.config.keys or []
            if self.config.mode == "upsert":
                missing = [k for k in keys if k not in batch.columns]
                if missing:
                    raise ConnectorError(
                        f"{self.describe_target()}: key column '{missing[0]}' is not in the data"
                    )
                batch = batch.unique(subset=keys, keep="last", maintain_order=True)
            data = _storable(batch)
            names = ", ".join(_q(c) for c in data.columns)
            marks = ", ".join("?" for _ in data.columns)
            if self.config.mode == "upsert":
                self.conn.execute("DROP TABLE IF EXISTS temp._agg_stage")
                self.conn.execute(f"CREATE TEMP TABLE _agg_stage ({names})")
                self.conn.executemany(f"INSERT INTO temp._agg_stage VALUES ({marks})", data.iter_rows())
                match = " AND ".join(f"s.{_q(k)} IS {self.target}.{_q(k)}" for k in keys)
                self.conn.execute(
                    f"DELETE FROM {self.target} WHERE EXISTS (SELECT 1 FROM temp._agg_stage s WHERE {match})"
                )
                self.conn.execute(f"INSERT INTO {self.target} ({names}) SELECT {names} FROM temp._agg_stage")
                self.conn.execute("DROP TABLE temp._agg_stage")
            else:
                self.conn.executemany(
                    f"INSERT INTO {self.target} ({names}) VALUES ({marks})", data.iter_rows()
                )
        except ConnectorError:
            self._rollback()
            raise
        except (sqlite3.Error, pl.exceptions.PolarsError, OverflowError) as exc:
            raise self._fail(exc) from None

    def close(self) -> None:
        if self.conn is None:
            raise ConnectorError(f"{self.describe_target()}: close() before open()")
        try:
            if self.columns is None and self.config.mode == "replace" and self._existing():
                self.conn.execute(f"DELETE FROM {self.target}")  # replaced by no rows
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        self.conn.close()
        self.conn = None

    def abort(self) -> None:
        self._rollback()

    def _rollback(self) -> None:
        if self.conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")
        self.conn.close()
        self.conn = None

    def check(self) -> str:
        path = self.ctx.resolve_path(self.config.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(str(path), create=True)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE _agg_check (x INTEGER)")
            conn.execute("ROLLBACK")
            return f"SQLite {sqlite3.sqlite_version}, {self.config.path}: can SELECT, INSERT, CREATE"
        except sqlite3.Error as exc:
            raise ConnectorError(f"{self.describe_target()}: {exc}") from None
        finally:
            conn.close()


@register
class SQLiteConnector(Connector):
    connector_type = "sqlite"
    title = "SQLite"
    SourceConfig = SQLiteSourceConfig
    SinkConfig = SQLiteSinkConfig

    source_class = SQLiteSource
    sink_class = SQLiteSink
