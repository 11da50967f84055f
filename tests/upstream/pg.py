"""Helpers for the PostgreSQL upstream tests: a scratch table per test on the machine's server
(127.0.0.1:5432, trust, user postgres, database test), tag batches with keys, and read-backs."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import polars as pl
import psycopg
import pyarrow as pa

from engine.connectors.postgresql import PostgreSQLSinkConfig, PostgreSQLTarget
from engine.context import RunContext

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def sql(query: str, params: Any = None) -> list[tuple]:
    with psycopg.connect(DSN, autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def table_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def config(table: str, **overrides: Any) -> PostgreSQLSinkConfig:
    raw = {"host": "127.0.0.1", "port": 5432, "database": "test", "username": "postgres", "table": table}
    raw.update(overrides)
    return PostgreSQLSinkConfig.model_validate(raw)


class Logs(list):
    def __call__(self, level: str, message: str, node: str | None = None) -> None:
        self.append((level, message))


def target(table: str, logs: Logs | None = None, **overrides: Any) -> PostgreSQLTarget:
    ctx = RunContext(log=logs if logs is not None else Logs())
    return PostgreSQLTarget(config(table, **overrides), ctx, "central")


def tags(start: int, count: int, *, edge: str = "edge1", tags_n: int = 10) -> pa.Table:
    """`count` tag rows (timestamp, tag, value, quality, _key), one per tag per millisecond."""
    index = pl.int_range(start, start + count, eager=True)
    frame = pl.DataFrame({"i": index}).select(
        timestamp=pl.lit(T0) + pl.duration(milliseconds=pl.col("i") // tags_n),
        tag=pl.format("line1/tag{}", pl.col("i") % tags_n),
        value=pl.col("i").cast(pl.Float64) / 2,
        quality=pl.lit("good"),
    )
    frame = frame.with_columns(
        # the shape of engine/outbox/keys.py: <edge>/<pipeline>/<destination>/<tag>|<timestamp us>
        _key=pl.format("{}/p/central/{}|{}", pl.lit(edge), pl.col("tag"), pl.col("timestamp").dt.epoch("us"))
    )
    return frame.to_arrow()


def count(table: str) -> int:
    return sql(f'SELECT count(*) FROM "{table}"')[0][0]


def keys(table: str) -> list[str]:
    return [row[0] for row in sql(f'SELECT _key FROM "{table}" ORDER BY _key')]


def exists(table: str) -> bool:
    return sql("SELECT to_regclass(%s) IS NOT NULL", (f'public."{table}"',))[0][0]


def drop(table: str) -> None:
    sql(f'DROP TABLE IF EXISTS "{table}"')
