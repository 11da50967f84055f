"""A real upstream for the outbox tests: a SQLite database that deduplicates on `_key` (as the
PostgreSQL target does with ON CONFLICT DO NOTHING), and that can be told to be down (retryable
errors, optionally with Retry-After) or to refuse certain records (non-retryable: poison)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine.errors import ConnectorError
from engine.outbox.target import KEY_COLUMN, DeliveryError


class Upstream:
    """The central side: one SQLite file, shared by every target made from it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.down = False
        self.retry_after: float | None = None
        self.poison: set[str] = set()  # keys refused for good
        self.attempts = 0  # deliver calls
        self.rows_sent = 0  # rows offered, duplicates included
        self.lock = threading.Lock()
        con = sqlite3.connect(self.path)
        con.execute(
            "CREATE TABLE IF NOT EXISTS rec (n INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE,"
            " tag TEXT, ts INTEGER, value REAL, quality TEXT, reason TEXT, historical INTEGER)"
        )
        con.commit()
        con.close()

    def rows(self) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(self.path)
        try:
            return con.execute(
                "SELECT key, tag, ts, value, quality, reason, historical FROM rec ORDER BY n"
            ).fetchall()
        finally:
            con.close()

    def count(self) -> int:
        con = sqlite3.connect(self.path)
        try:
            return con.execute("SELECT COUNT(*) FROM rec").fetchone()[0]
        finally:
            con.close()


class UpstreamTarget:
    def __init__(self, upstream: Upstream, name: str = "up"):
        self.upstream, self.name = upstream, name
        self.con: sqlite3.Connection | None = None

    def open(self) -> None:
        if self.upstream.down:
            raise DeliveryError("connection refused", retryable=True, retry_after=self.upstream.retry_after)
        self.con = sqlite3.connect(self.upstream.path, timeout=30)

    def deliver(self, table: pa.Table, *, historical: bool = False) -> None:
        up = self.upstream
        with up.lock:
            up.attempts += 1
            if up.down:
                raise DeliveryError("connection reset", retryable=True, retry_after=up.retry_after)
            keys = table.column(KEY_COLUMN).to_pylist()
            bad = [k for k in keys if k in up.poison]
            if bad:
                raise DeliveryError(f"value refused for {bad[0]}", retryable=False)
            up.rows_sent += len(keys)
        cols = table.column_names

        def col(name: str) -> list[Any]:
            if name not in cols:
                return [None] * table.num_rows
            c = table.column(name)
            if pa.types.is_timestamp(c.type):
                c = c.cast(pa.int64())
            return c.to_pylist()

        value = col("value") if "value" in cols else col("a")
        rows = list(
            zip(keys, col("tag"), col("timestamp"), value, col("quality"), col("reason"), strict=True)
        )
        assert self.con is not None
        self.con.executemany(
            "INSERT INTO rec (key, tag, ts, value, quality, reason, historical) VALUES (?,?,?,?,?,?,?)"
            " ON CONFLICT(key) DO NOTHING",
            [(*r, int(historical)) for r in rows],
        )
        self.con.commit()

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def check(self) -> None:
        if self.upstream.down:
            raise ConnectorError("upstream: connection refused")

    def describe_target(self) -> str:
        return f"{self.upstream.path.name}:rec"


_UPSTREAMS: dict[str, Upstream] = {}


class FakeRemote:
    """A remote destination connector class as the real ones are written: `make_target`."""

    connector_type = "fake_upstream"

    @classmethod
    def make_target(cls, config: Any, ctx: Any, name: str) -> UpstreamTarget:
        return UpstreamTarget(_UPSTREAMS[str(ctx.data_dir)], name)


def attach(data_dir: Path, upstream: Upstream) -> None:
    _UPSTREAMS[str(data_dir)] = upstream
