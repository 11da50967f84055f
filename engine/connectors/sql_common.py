"""What the SQL connectors (`postgresql`, `mysql`, `sqlite`) share.

- The source settings (`table` or `query` with bound `params`, `incremental`) and `SqlSource`,
  which streams Arrow record batches from a dialect's reader into DataFrames of `batch_rows`.
- Parameters: each database's own placeholders (`$1` PostgreSQL, `%s` MySQL, `?` SQLite). For
  PostgreSQL and MySQL they are bound on the client as typed, escaped literals (`render_literal`):
  a server-side bind makes the ADBC PostgreSQL driver fetch the whole result at once (measured:
  one 1M-row batch instead of a stream), and connectorx binds nothing. SQLite binds natively.
- Incremental reads: `incremental: {"column": ..., "initial": ...}` keeps a high-water mark per
  pipeline and source in the data directory's metadata.db (table `sql_incremental`). A source reads
  only rows with `column > mark`, notes the largest value it read, and the executor calls
  `committed()` after every destination of the run has committed: only then is the mark
  advanced, so a failed run reads the same rows again.
- The pooling keys (`connection_pool_size`, `max_overflow`) are accepted as in the user guide:
  a batch run opens one connection per source or destination node, which is within any pool size
  of 1 or more; they bound nothing else (documented in docs/user-guide.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import math
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.connectors.base import DEFAULT_BATCH_ROWS, ConnectorConfig, Source
from engine.errors import ConnectorError

Dialect = Literal["postgresql", "mysql", "sqlite"]
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def valid_ident(value: str | None, what: str = "table") -> str | None:
    """A table or column name: letters, digits and underscores (optionally `schema.table`)."""
    if value is None:
        return value
    if not all(_IDENT.fullmatch(p) for p in value.split(".")) or value.count(".") > 1 or len(value) > 128:
        raise ValueError(f"a {what} name is letters, digits and underscores, optionally schema.{what}")
    return value


def quote_name(name: str, dialect: Dialect) -> str:
    q = "`" if dialect == "mysql" else '"'
    return ".".join(q + p.replace(q, q + q) + q for p in name.split("."))


class Incremental(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: str = Field(description="the column whose values only grow (an id, a timestamp)")
    initial: Any = Field(None, description="read rows above this value on the first run (default: all)")

    @field_validator("column")
    @classmethod
    def _col(cls, value: str) -> str:
        return valid_ident(value, "column") or value


class SqlSourceFields(ConnectorConfig):
    """The source keys every SQL connector shares."""

    table: str | None = Field(None, description="a table to read (or give `query`)")
    query: str | None = Field(None, description="a SELECT to run (or give `table`)")
    params: list[Any] = Field(
        default_factory=list,
        description="values for the query's placeholders ($1.. PostgreSQL, %s MySQL, ? SQLite)",
    )
    incremental: Incremental | None = Field(
        None, description='{"column": ..., "initial": ...}: read only rows newer than the last committed run'
    )

    @field_validator("table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        return valid_ident(value)

    @model_validator(mode="after")
    def _table_or_query(self):
        if (self.table is None) == (self.query is None):
            raise ValueError(
                "give either `table` or `query`, not both" if self.table else "give `table` or `query`"
            )
        if self.table is not None and self.params:
            raise ValueError("`params` go with `query`")
        return self


# ---- literals ---------------------------------------------------------------------------------


def render_literal(value: Any, dialect: Dialect) -> str:
    """A Python value as an SQL literal of its type, escaped for `dialect`."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return ("TRUE" if value else "FALSE") if dialect == "postgresql" else ("1" if value else "0")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            if dialect != "postgresql":
                raise ValueError(f"{value} has no literal in {dialect}")
            return f"'{value}'::float8"
        return repr(value)
    if isinstance(value, decimal.Decimal):
        return str(value) if dialect != "postgresql" else f"'{value}'::numeric"
    if isinstance(value, dt.datetime):
        text = value.isoformat(sep=" ")
        if dialect == "postgresql":
            return f"'{text}'::" + ("timestamptz" if value.tzinfo else "timestamp")
        if value.tzinfo is not None:
            text = value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
        return _string(text, dialect)
    if isinstance(value, dt.date):
        return (
            f"'{value.isoformat()}'::date" if dialect == "postgresql" else _string(value.isoformat(), dialect)
        )
    if isinstance(value, str):
        return _string(value, dialect)
    raise ValueError(
        f"a parameter of type {type(value).__name__} (allowed: null, bool, number, text, date/time)"
    )


def _string(text: str, dialect: Dialect) -> str:
    if "\x00" in text:
        raise ValueError("a text parameter holds a NUL character")
    if dialect == "mysql":  # MySQL also treats the backslash as an escape in a literal
        return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + text.replace("'", "''") + "'"


_SKIP = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|--[^\n]*|/\*.*?\*/", re.S)


def bind_client_side(query: str, params: list[Any], dialect: Dialect) -> str:
    """Replace the placeholders of `query` ($n PostgreSQL, %s MySQL) outside strings, quoted names
    and comments by the literals of `params`."""
    pattern = re.compile(r"\$(\d+)") if dialect == "postgresql" else re.compile(r"%s")
    used: set[int] = set()
    counter = iter(range(len(params) + 1000))
    out: list[str] = []
    pos = 0

    def sub(text: str) -> str:
        def one(m: re.Match) -> str:
            i = int(m.group(1)) - 1 if dialect == "postgresql" else next(counter)
            if not 0 <= i < len(params):
                raise ValueError(f"placeholder {m.group(0)} has no value in `params` ({len(params)} given)")
            used.add(i)
            return render_literal(params[i], dialect)

        return pattern.sub(one, text)

    for m in _SKIP.finditer(query):
        out.append(sub(query[pos : m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(sub(query[pos:]))
    if len(used) != len(params):
        raise ValueError(f"`params` has {len(params)} values but the query uses {len(used)}")
    return "".join(out)


def to_python(value: Any) -> Any:
    """An incremental mark as JSON (typed, so that it comes back as the same kind of value)."""
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    return value


def from_python(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((kind, text),) = value.items()
        if kind == "datetime":
            return dt.datetime.fromisoformat(text)
        if kind == "date":
            return dt.date.fromisoformat(text)
        if kind == "decimal":
            return decimal.Decimal(text)
    return value


# ---- the high-water marks ---------------------------------------------------------------------

_STORE_LOCK = threading.Lock()


class WatermarkStore:
    """`sql_incremental` in metadata.db: (pipeline, source) -> the last committed mark."""

    def __init__(self, data_dir: Path | str):
        self.path = Path(data_dir) / "metadata.db"

    def _conn(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=10, isolation_level=None)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS sql_incremental (pipeline TEXT NOT NULL, source TEXT NOT NULL,"
            " column_name TEXT NOT NULL, mark TEXT NOT NULL, updated_at TEXT NOT NULL,"
            " PRIMARY KEY (pipeline, source))"
        )
        return conn

    def get(self, pipeline: str, source: str, column: str) -> tuple[bool, Any]:
        with _STORE_LOCK:
            conn = self._conn()
            try:
                row = conn.execute(
                    "SELECT mark FROM sql_incremental WHERE pipeline = ? AND source = ? AND column_name = ?",
                    (pipeline, source, column),
                ).fetchone()
            finally:
                conn.close()
        return (False, None) if row is None else (True, from_python(json.loads(row[0])))

    def put(self, pipeline: str, source: str, column: str, mark: Any) -> None:
        with _STORE_LOCK:
            conn = self._conn()
            try:
                conn.execute(
                    "INSERT INTO sql_incremental VALUES (?, ?, ?, ?, ?) ON CONFLICT (pipeline, source) DO"
                    " UPDATE SET column_name = excluded.column_name, mark = excluded.mark,"
                    " updated_at = excluded.updated_at",
                    (
                        pipeline,
                        source,
                        column,
                        json.dumps(to_python(mark)),
                        dt.datetime.now(dt.UTC).isoformat(),
                    ),
                )
            finally:
                conn.close()


# ---- the source -------------------------------------------------------------------------------


def _max_of(column: pa.ChunkedArray | pa.Array) -> Any:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    value = pc.max(column)
    return value.as_py() if value.is_valid else None


class SqlSource(Source):
    """A SQL source: `open_reader(sql)` (per dialect) yields Arrow record batches as the server
    sends them; they go out as DataFrames of about `batch_rows` rows."""

    dialect: Dialect

    def where(self) -> str:
        """`connector host` for error lines (never a password)."""
        return self.dialect

    def open_reader(self, sql: str, params: list[Any]) -> tuple[Iterator[pa.RecordBatch], Any]:
        """(the batches, a closer) for `sql` with `params` bound."""
        raise NotImplementedError

    def error(self, exc: BaseException) -> ConnectorError:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return ConnectorError(f"{self.where()}: {text[:300]}")

    # -- the statement
    def _mark(self) -> tuple[bool, Any]:
        inc = self.config.incremental
        if inc is None:
            return False, None
        found, mark = WatermarkStore(self.ctx.data_dir).get(self.ctx.pipeline, self.name, inc.column)
        if found:
            return True, mark
        return inc.initial is not None, from_python(inc.initial)

    def statement(self) -> tuple[str, list[Any]]:
        c = self.config
        base = (
            f"SELECT * FROM {quote_name(c.table, self.dialect)}" if c.table else c.query.strip().rstrip(";")
        )
        params = list(c.params)
        has, mark = self._mark()
        if c.incremental is not None and has:
            col = quote_name(c.incremental.column, self.dialect)
            if self.dialect == "sqlite":
                return f"SELECT * FROM ({base}) AS _q WHERE {col} > ?", [*params, mark]
            ph = f"${len(params) + 1}" if self.dialect == "postgresql" else "%s"
            return f"SELECT * FROM ({base}) AS _q WHERE {col} > {ph}", [*params, mark]
        return base, params

    def read(self, limit: int | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pl.DataFrame]:
        self.new_mark: Any = None
        self.complete = False
        if limit is not None and limit <= 0:
            return
        sql, params = self.statement()
        if limit is not None:
            sql = f"SELECT * FROM ({sql}) AS _l LIMIT {int(limit)}"
        batches, closer = self.open_reader(sql, params)
        inc = self.config.incremental
        pending: list[pa.RecordBatch] = []
        rows = 0
        schema = None
        yielded = False
        try:
            try:
                for rb in batches:
                    schema = rb.schema
                    if inc is not None and rb.num_rows:
                        self._note(rb, inc.column)
                    pending.append(rb)
                    rows += rb.num_rows
                    if rows >= batch_rows:
                        yield self._frame(pending, schema)
                        pending, rows, yielded = [], 0, True
            except ConnectorError:
                raise
            except Exception as exc:
                raise self.error(exc) from None
            if schema is None:  # no batch at all: still say which columns there are
                schema = getattr(self, "empty_schema", None)
            if schema is not None and (pending or not yielded):
                yield self._frame(pending, schema)
            self.complete = limit is None
        finally:
            with contextlib.suppress(Exception):
                closer()

    def _note(self, rb: pa.RecordBatch, column: str) -> None:
        names = {n.lower(): n for n in rb.schema.names}
        name = names.get(column.lower())
        if name is None:
            raise ConnectorError(f"{self.where()}: incremental column '{column}' is not in the result")
        top = _max_of(rb.column(name))
        if top is not None and (self.new_mark is None or top > self.new_mark):
            self.new_mark = top

    @staticmethod
    def _frame(batches: list[pa.RecordBatch], schema: pa.Schema) -> pl.DataFrame:
        table = pa.Table.from_batches(batches, schema=schema)
        frame = pl.from_arrow(table, rechunk=False)
        assert isinstance(frame, pl.DataFrame)
        return frame

    def committed(self) -> None:
        """The run committed: keep the largest incremental value read as the next run's mark."""
        inc = self.config.incremental
        if inc is None or not getattr(self, "complete", False) or getattr(self, "new_mark", None) is None:
            return
        WatermarkStore(self.ctx.data_dir).put(self.ctx.pipeline, self.name, inc.column, self.new_mark)
