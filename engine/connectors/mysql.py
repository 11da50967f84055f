"""The `mysql` connector (MySQL and MariaDB; tested on MariaDB 10.11) as a source and a destination.

Source: connectorx streams the result as Arrow record batches (`return_type="arrow_stream"`),
measured 0.90M rows/s on 500k rows x 6 columns against PyMySQL's unbuffered cursor at 0.11M
(mysqlclient does not build here: no libmysqlclient headers). Parameters (`%s`) are bound on the
client as escaped literals (connectorx binds none). With `ssl_mode` `required` or stricter the
rows come through PyMySQL's unbuffered cursor (connectorx takes no TLS settings), in batches; so
they do when connectorx is not installed (it is 144 MB with its libraries, for this source only: an
install or bundle may leave it out, see packaging/README.md), with the same rows and types.

Destination (PyMySQL): every batch goes by `LOAD DATA LOCAL INFILE` from a temporary CSV into a
stage table of the run (`_agg_stage_<table>_<run>`). MySQL commits implicitly on any CREATE/ALTER,
so nothing touches the target before `close()`, which then, in ONE transaction, appends
(`INSERT ... SELECT`), upserts (deletes the rows whose `keys` come again, then inserts the last row
per key), or for `replace` swaps the stage in with one atomic `RENAME TABLE`. A failed run drops the
stage: the target is as it was.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from engine.connectors.base import Connector, ConnectorConfig, Sink
from engine.connectors.registry import register
from engine.connectors.sql_common import SqlSource, SqlSourceFields, bind_client_side, quote_name, valid_ident
from engine.errors import ConnectorError

# Times in UTC; backslashes escape in literals (the client-side binding relies on it).
_SESSION = "SET time_zone = '+00:00', sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')"
SSLMode = Literal["disabled", "preferred", "required", "verify_ca", "verify_identity"]
_TLS_REQUIRED = ("required", "verify_ca", "verify_identity")


class _MySQLLogin(ConnectorConfig):
    host: str = Field("localhost", description="the MySQL / MariaDB server")
    port: int = Field(3306, ge=1, le=65535)
    database: str = Field(description="the database")
    username: str = Field("root", description="the user to log in as")
    password: str | None = Field(None, description='use {"secret": "NAME"}, never the password itself')
    ssl_mode: SSLMode = Field(
        "preferred", description="disabled, preferred, required, verify_ca, verify_identity"
    )
    ssl_ca: str | None = Field(None, description="CA certificate file (verify_ca, verify_identity)")
    connect_timeout: float = Field(10, gt=0, le=600, description="seconds to wait for a connection")
    connection_pool_size: int = Field(
        5, ge=1, le=100, description="accepted (user guide); one connection per node"
    )
    max_overflow: int = Field(10, ge=0, le=100, description="accepted (user guide); see connection_pool_size")


class MySQLSourceConfig(_MySQLLogin, SqlSourceFields):
    pass


class MySQLSinkConfig(_MySQLLogin):
    table: str = Field(description="the table to write")
    mode: Literal["append", "replace", "upsert"] = "append"
    keys: list[str] | None = Field(None, description="upsert: the columns that identify a row")
    create: bool = Field(True, description="create the table from the data when it is missing")

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return valid_ident(value) or value

    @model_validator(mode="after")
    def _keys(self):
        if self.mode == "upsert" and not self.keys:
            raise ValueError("mode upsert needs `keys`: the columns that identify a row")
        return self


def _q(name: str) -> str:
    return quote_name(name, "mysql")


def _where(c: _MySQLLogin) -> str:
    return f"mysql {c.host}:{c.port}/{c.database}"


def _clean(exc: BaseException, c: _MySQLLogin) -> str:
    args = getattr(exc, "args", ())
    text = str(args[1]) if len(args) == 2 and isinstance(args[0], int) else str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    if c.password:
        text = text.replace(c.password, "***")
    return text[:300]


def _connect(c: _MySQLLogin, *, local_infile: bool = False, unbuffered: bool = False) -> Any:
    import pymysql
    import pymysql.cursors

    ssl: dict[str, Any] | None = None
    if c.ssl_mode in _TLS_REQUIRED:
        ssl = {"ca": c.ssl_ca} if c.ssl_ca else {}
        ssl["check_hostname"] = c.ssl_mode == "verify_identity"
    try:
        return pymysql.connect(
            host=c.host,
            port=c.port,
            user=c.username,
            password=c.password or "",
            database=c.database,
            connect_timeout=c.connect_timeout,
            local_infile=local_infile,
            autocommit=True,
            charset="utf8mb4",
            ssl=ssl,
            ssl_verify_cert=c.ssl_mode in ("verify_ca", "verify_identity") or None,
            cursorclass=pymysql.cursors.SSCursor if unbuffered else pymysql.cursors.Cursor,
            init_command=_SESSION,
        )
    except Exception as exc:
        raise ConnectorError(f"{_where(c)}: {_clean(exc, c)}") from None


def permissions_line(conn: Any, c: _MySQLLogin, table: str | None) -> str:
    cur = conn.cursor()
    cur.execute("SELECT VERSION(), CURRENT_USER()")
    version, user = cur.fetchone()
    cur.execute("SHOW GRANTS FOR CURRENT_USER()")
    grants = [row[0] for row in cur.fetchall()]
    can: set[str] = set()
    targets = ("*.*", f"`{c.database}`.*", f"{c.database}.*")
    if table:
        targets += (f"`{c.database}`.`{table}`",)
    for grant in grants:
        m = re.match(r"GRANT (.+?) ON (\S+) TO", grant)
        if not m or m.group(2) not in targets:
            continue
        privileges = {p.strip().upper() for p in m.group(1).split(",")}
        if "ALL PRIVILEGES" in privileges:
            privileges |= {"SELECT", "INSERT", "CREATE"}
        can |= privileges & {"SELECT", "INSERT", "CREATE"}
    listed = [p for p in ("SELECT", "INSERT", "CREATE") if p in can]
    kind = "MariaDB" if "mariadb" in str(version).lower() else "MySQL"
    return (
        f"{kind} {str(version).split('-')[0]} at {c.host}:{c.port}/{c.database} as {user}: "
        f"can {', '.join(listed) or 'nothing'} on {c.database}{'.' + table if table else ''}"
    )


class MySQLSource(SqlSource):
    dialect = "mysql"
    config: MySQLSourceConfig

    def where(self) -> str:
        return _where(self.config)

    def error(self, exc: BaseException) -> ConnectorError:
        return ConnectorError(f"{self.where()}: {_clean(exc, self.config)}")

    def _url(self) -> str:
        from urllib.parse import quote

        c = self.config
        auth = quote(c.username, safe="") + (":" + quote(c.password, safe="") if c.password else "")
        return f"mysql://{auth}@{c.host}:{c.port}/{quote(c.database, safe='')}"

    def open_reader(self, sql: str, params: list[Any]) -> tuple[Iterator[pa.RecordBatch], Any]:
        try:
            text = bind_client_side(sql, params, "mysql") if params else sql
        except ValueError as exc:
            raise ConnectorError(f"{self.where()}: params: {exc}") from None
        if self.config.ssl_mode in _TLS_REQUIRED:
            return self._unbuffered(text)
        try:
            import connectorx as cx
        except ImportError:  # a bundle or install without it (packaging/README.md): PyMySQL, slower
            return self._unbuffered(text)

        self._reachable()  # connectorx's own connection error is a long pool message
        try:
            reader = cx.read_sql(
                self._url(),
                text,
                return_type="arrow_stream",
                batch_size=self._batch,
                pre_execution_query=[_SESSION],
            )
        except Exception as exc:
            raise self.error(exc) from None
        with contextlib.suppress(Exception):
            self.empty_schema = _plain(pa.RecordBatch.from_pylist([], schema=reader.schema)).schema
        return (_plain(rb) for rb in reader), lambda: None

    def _reachable(self) -> None:
        _connect(self.config).close()

    def _unbuffered(self, text: str) -> tuple[Iterator[pa.RecordBatch], Any]:
        conn = _connect(self.config, unbuffered=True)
        try:
            cur = conn.cursor()
            cur.execute(text)
        except Exception as exc:
            conn.close()
            raise self.error(exc) from None
        names = [d[0] for d in cur.description]
        # Each column's type from the result's own field list, so every batch has the same schema
        # (a first batch of NULLs inferred as Null would null the later values) and an empty
        # result still has typed columns; a type not in the table is inferred from the values.
        fields = getattr(getattr(cur, "_result", None), "fields", None) or []
        known = {f.name: t for f in fields if (t := _polars_type(f)) is not None} if fields else {}
        empty = pl.DataFrame([], schema=names, orient="row", schema_overrides=known)
        self.empty_schema = empty.to_arrow().schema

        def batches() -> Iterator[pa.RecordBatch]:
            schema = None
            while True:
                rows = cur.fetchmany(self._batch)
                if not rows:
                    return
                frame = pl.DataFrame(
                    rows,
                    schema=names,
                    orient="row",
                    schema_overrides=known,
                    strict=False,
                    infer_schema_length=None,
                )
                if schema is None:
                    schema = frame.schema
                else:
                    frame = frame.cast(dict(schema), strict=False)
                yield from frame.to_arrow().to_batches()

        return batches(), conn.close

    def read(self, limit: int | None = None, batch_rows: int = 300_000):
        self._batch = max(1, min(batch_rows, 100_000))
        return super().read(limit, batch_rows)

    def check(self) -> str:
        sql, params = self.statement()
        conn = _connect(self.config)
        try:
            cur = conn.cursor()
            cur.execute(
                f"SELECT * FROM ({bind_client_side(sql, params, 'mysql') if params else sql}) AS _q LIMIT 0"
            )
            return permissions_line(conn, self.config, self.config.table)
        except ValueError as exc:
            raise ConnectorError(f"{self.where()}: params: {exc}") from None
        except Exception as exc:
            raise self.error(exc) from None
        finally:
            conn.close()


_INTS = (1, 2, 3, 9, 13)  # TINY, SHORT, LONG, INT24, YEAR (FIELD_TYPE); LONGLONG (8): signed or not
_TEXTS = (15, 245, 247, 248, 249, 250, 251, 252, 253, 254)  # VARCHAR, JSON, ENUM, SET, *BLOB, *STRING
_BINARY_CHARSET = 63


def _polars_type(field: Any) -> pl.DataType | None:
    """The Polars type of a PyMySQL result field (what connectorx would give, but for widths:
    integers are Int64, TIME a Duration); None: infer it from the values."""
    code, flags = field.type_code, getattr(field, "flags", 0)
    if code in _INTS:
        return pl.Int64()
    if code == 8:
        return pl.UInt64() if flags & 32 else pl.Int64()  # UNSIGNED_FLAG
    if code in (4, 5):
        return pl.Float64()
    if code in (0, 246):
        return pl.Decimal(38, min(int(getattr(field, "scale", 0) or 0), 30))
    if code in (10, 14):
        return pl.Date()
    if code in (7, 12):
        return pl.Datetime("us")
    if code == 11:
        return pl.Duration("us")
    if code in _TEXTS:
        return pl.Binary() if field.charsetnr == _BINARY_CHARSET and code != 245 else pl.String()
    if code == 16:  # BIT: bytes
        return pl.Binary()
    return None


def _plain(rb: pa.RecordBatch) -> pa.RecordBatch:
    """date64 (how connectorx gives DATE) as date32, like every other source."""
    if not any(pa.types.is_date64(f.type) for f in rb.schema):
        return rb
    arrays = [a.cast(pa.date32()) if pa.types.is_date64(a.type) else a for a in rb.columns]
    return pa.RecordBatch.from_arrays(arrays, names=rb.schema.names)


def mysql_type(dtype: pl.DataType) -> str:
    if dtype == pl.Boolean:
        return "BOOLEAN"
    if dtype == pl.Int8:
        return "TINYINT"
    if dtype in (pl.Int16, pl.UInt8):
        return "SMALLINT"
    if dtype in (pl.Int32, pl.UInt16):
        return "INT"
    if dtype in (pl.Int64, pl.UInt32):
        return "BIGINT"
    if dtype == pl.UInt64:
        return "BIGINT UNSIGNED"
    if dtype == pl.Float32:
        return "FLOAT"
    if dtype.is_float():
        return "DOUBLE"
    if isinstance(dtype, pl.Decimal):
        return f"DECIMAL({min(dtype.precision or 38, 65)},{dtype.scale or 0})"
    if isinstance(dtype, pl.Datetime):
        return "DATETIME(6)"
    if dtype == pl.Date:
        return "DATE"
    if dtype == pl.Time:
        return "TIME(6)"
    if isinstance(dtype, pl.Duration):
        return "BIGINT"
    if dtype == pl.Binary:
        return "LONGBLOB"
    return "LONGTEXT"


def _csv_ready(batch: pl.DataFrame) -> pl.DataFrame:
    """Values as LOAD DATA reads them: booleans 0/1, times in UTC without zone, durations in
    microseconds, binary as hex (UNHEX'd by the statement), nested values as JSON text."""
    out = []
    for name, dtype in batch.schema.items():
        col = pl.col(name)
        if dtype == pl.Boolean:
            out.append(col.cast(pl.Int8))
        elif isinstance(dtype, pl.Datetime):
            src = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if dtype.time_zone else col
            out.append(src.dt.to_string("%Y-%m-%d %H:%M:%S%.6f"))
        elif dtype == pl.Time:
            out.append(col.dt.to_string("%H:%M:%S%.6f"))
        elif isinstance(dtype, pl.Duration):
            out.append(col.dt.total_microseconds())
        elif dtype == pl.Binary:
            out.append(col.bin.encode("hex"))
        elif isinstance(dtype, pl.Struct):
            out.append(col.struct.json_encode())
        elif isinstance(dtype, pl.List | pl.Array | pl.Categorical | pl.Enum | pl.Null | pl.Object):
            out.append(col.cast(pl.String))
    return batch.with_columns(out) if out else batch


class MySQLSink(Sink):
    config: MySQLSinkConfig

    def __init__(self, config: MySQLSinkConfig, ctx, name: str = "destination"):
        super().__init__(config, ctx, name)
        self.conn: Any = None
        run = re.sub(r"[^A-Za-z0-9_]", "_", ctx.run_id)[:16]
        self.stage = f"_agg_stage_{config.table[:30]}_{run}"
        self.columns: dict[str, str] | None = None  # the stage's columns: name -> type
        self.rows = 0
        self.tmp_dir = Path(ctx.data_dir) / "tmp"

    def describe_target(self) -> str:
        c = self.config
        return f"mysql {c.host}:{c.port}/{c.database}.{c.table}"

    def _fail(self, exc: BaseException) -> ConnectorError:
        self._rollback()
        return ConnectorError(f"{self.describe_target()}: {_clean(exc, self.config)}")

    def _exec(self, statement: str, args: Any = None) -> Any:
        cur = self.conn.cursor()
        cur.execute(statement, args)
        return cur

    def open(self) -> None:
        self.conn = _connect(self.config, local_infile=True)
        try:
            self._exec(f"DROP TABLE IF EXISTS {_q(self.stage)}")
        except Exception as exc:
            raise self._fail(exc) from None

    def _target_columns(self) -> list[str]:
        cur = self._exec(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() "
            "AND table_name = %s ORDER BY ordinal_position",
            (self.config.table,),
        )
        return [r[0] for r in cur.fetchall()]

    def write(self, batch: pl.DataFrame) -> None:
        if self.conn is None:
            raise ConnectorError(f"{self.describe_target()}: write() before open()")
        if batch.width == 0:
            return
        keys = self.config.keys or []
        missing = [k for k in keys if k not in batch.columns] if self.config.mode == "upsert" else []
        if missing:
            self._rollback()
            raise ConnectorError(f"{self.describe_target()}: key column '{missing[0]}' is not in the data")
        try:
            if self.columns is None:
                if not self.config.create and not self._target_columns():
                    raise ConnectorError(f"{self.describe_target()}: no such table (and `create` is false)")
                body = ", ".join(f"{_q(c)} {mysql_type(t)}" for c, t in batch.schema.items())
                self._exec(f"CREATE TABLE {_q(self.stage)} ({body}, _agg_row BIGINT) ENGINE=InnoDB")
                self.columns = {c: mysql_type(t) for c, t in batch.schema.items()}
            for c, t in batch.schema.items():
                if c not in self.columns:
                    self._exec(f"ALTER TABLE {_q(self.stage)} ADD COLUMN {_q(c)} {mysql_type(t)}")
                    self.columns[c] = mysql_type(t)
            if batch.height:
                self._load(batch)
        except ConnectorError:
            self._rollback()
            raise
        except Exception as exc:
            raise self._fail(exc) from None

    def _load(self, batch: pl.DataFrame) -> None:
        data = _csv_ready(batch).with_columns(
            pl.int_range(self.rows, self.rows + batch.height).alias("_agg_row")
        )
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="mysql-load-", suffix=".csv", dir=self.tmp_dir)
        os.close(fd)
        try:
            data.write_csv(path, include_header=False, quote_style="non_numeric", null_value="NULL")
            binary = {c for c, t in batch.schema.items() if t == pl.Binary}
            fields = ", ".join(f"@v{i}" if c in binary else _q(c) for i, c in enumerate(data.columns))
            sets = ", ".join(f"{_q(c)} = UNHEX(@v{i})" for i, c in enumerate(data.columns) if c in binary)
            self._exec(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE {_q(self.stage)} CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' LINES TERMINATED BY '\\n' "
                f"({fields})" + (f" SET {sets}" if sets else ""),
                (path,),
            )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.rows += batch.height

    def close(self) -> None:
        if self.conn is None:
            raise ConnectorError(f"{self.describe_target()}: close() before open()")
        c = self.config
        target = _q(c.table)
        try:
            if self.columns is None:  # no batch at all
                if c.mode == "replace" and self._target_columns():
                    self._exec("BEGIN")
                    self._exec(f"DELETE FROM {target}")
                    self._exec("COMMIT")
                self._done()
                return
            names = [n for n in self.columns]
            have = self._target_columns()
            if c.mode == "replace":
                self._exec(f"ALTER TABLE {_q(self.stage)} DROP COLUMN _agg_row")
                if have:
                    old = f"_agg_old_{self.stage[11:]}"[:64]
                    self._exec(f"RENAME TABLE {target} TO {_q(old)}, {_q(self.stage)} TO {target}")
                    self._exec(f"DROP TABLE {_q(old)}")
                else:
                    self._exec(f"RENAME TABLE {_q(self.stage)} TO {target}")
                self._done(dropped=True)
                return
            if not have:  # DDL commits implicitly: done before the transaction
                body = ", ".join(f"{_q(n)} {t}" for n, t in self.columns.items())
                self._exec(f"CREATE TABLE {target} ({body}) ENGINE=InnoDB")
            else:
                lower = {h.lower() for h in have}
                for n, t in self.columns.items():
                    if n.lower() not in lower:
                        self._exec(f"ALTER TABLE {target} ADD COLUMN {_q(n)} {t}")
            cols = ", ".join(_q(n) for n in names)
            keys = c.keys or []
            if c.mode == "upsert":  # an index on the stage's keys (DDL: before the transaction)
                index = ", ".join(_q(k) + self._prefix(k) for k in keys)
                self._exec(f"ALTER TABLE {_q(self.stage)} ADD INDEX _k ({index})")
            self._exec("BEGIN")
            if c.mode == "upsert":
                on = " AND ".join(f"t.{_q(k)} <=> s.{_q(k)}" for k in keys)
                self._exec(f"DELETE t FROM {target} t JOIN {_q(self.stage)} s ON {on}")
                later = " AND ".join(f"s2.{_q(k)} <=> s.{_q(k)}" for k in keys)
                self._exec(
                    f"INSERT INTO {target} ({cols}) SELECT {', '.join('s.' + _q(n) for n in names)} FROM "
                    f"{_q(self.stage)} s WHERE NOT EXISTS (SELECT 1 FROM {_q(self.stage)} s2 WHERE {later} "
                    "AND s2._agg_row > s._agg_row)"
                )
            else:
                self._exec(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {_q(self.stage)}")
            self._exec("COMMIT")
        except Exception as exc:
            raise self._fail(exc) from None
        self._done()

    def _prefix(self, key: str) -> str:
        kind = (self.columns or {}).get(key, "")
        return "(255)" if kind in ("LONGTEXT", "LONGBLOB") else ""

    def _done(self, dropped: bool = False) -> None:
        with contextlib.suppress(Exception):
            if not dropped:
                self._exec(f"DROP TABLE IF EXISTS {_q(self.stage)}")
        with contextlib.suppress(Exception):
            self.conn.close()
        self.conn = None

    def abort(self) -> None:
        self._rollback()

    def _rollback(self) -> None:
        if self.conn is None:
            return
        with contextlib.suppress(Exception):
            self._exec("ROLLBACK")
        self._done()

    def check(self) -> str:
        conn = _connect(self.config)
        try:
            return permissions_line(conn, self.config, self.config.table)
        except Exception as exc:
            raise ConnectorError(f"{self.describe_target()}: {_clean(exc, self.config)}") from None
        finally:
            conn.close()


@register
class MySQLConnector(Connector):
    connector_type = "mysql"
    title = "MySQL / MariaDB"
    SourceConfig = MySQLSourceConfig
    SinkConfig = MySQLSinkConfig

    source_class = MySQLSource
    sink_class = MySQLSink
