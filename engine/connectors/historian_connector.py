"""The `historian` destination: tag records (TAG_SCHEMA) into the tag historian's long table.

Each batch is one INSERT into `tags` and the 1-minute rollup kept up to date (see
`engine.store.tag_historian`), inside the sink's transaction; its newest rows per tag are kept in
memory once committed and written to `tag_last` every few seconds and at `close()`
(`engine.store.tag_newest`); it also
goes into the data directory's live ring buffer (`engine.store.ring_buffer.ring_buffers`) for charts.

Durability:
- A batch pipeline commits once, at `close()`; `abort()` rolls back everything, as the DuckDB sink.
- A streaming pipeline calls `write(batch)` then `commit()` for each micro-batch: `commit()` makes
  everything written so far durable (COMMIT, then a new transaction for the next micro-batch), so
  a crash loses at most the micro-batch in flight; `abort()` then discards only what came after
  the last commit.
The ring buffer is a live view: it shows a batch as soon as it is written, before it commits.

Retention rules given here are applied at `close()` and, in streaming runs, at most once per
`retention_every` on `commit()`.
"""

from __future__ import annotations

import contextlib
import threading
import time

import duckdb
from pydantic import Field, field_validator

from engine.connectors.base import Connector, ConnectorConfig, Sink
from engine.connectors.registry import register
from engine.errors import ConnectorError, UsageError, first_line
from engine.lazy import lazy_module
from engine.store import tag_newest
from engine.store.tag_historian import TAGS_TABLE, TagHistorian, parse_duration, selector_matcher
from engine.tags import TAG_COLUMNS, TagBatch, conform, tag_schema

pl = lazy_module("polars")

_TABLES_LOCK = threading.Lock()  # HistorianSink._cursor: one creator of the tag tables at a time

REQUIRED = ("timestamp", "tag")


class RetentionRuleConfig(ConnectorConfig):
    pattern: str = Field(description="tags it applies to: a name, a glob (turbine*.power) or re:REGEX")
    keep: str = Field(description="how long to keep values, e.g. 30d, 12h, 2w")

    @field_validator("keep")
    @classmethod
    def _duration(cls, value: str) -> str:
        try:
            parse_duration(value, "keep")
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            selector_matcher(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return value


class HistorianSinkConfig(ConnectorConfig):
    retention: list[RetentionRuleConfig] = Field(
        default_factory=list, description="per tag group; the first matching rule wins"
    )
    default_retention: str | None = Field(None, description="for tags no rule matches (default: keep all)")
    retention_every: str = Field("1h", description="streaming: how often retention runs at most")
    live_buffer: bool = Field(True, description="also feed the live ring buffer (charts)")
    live_capacity: int | None = Field(None, ge=1, description="live points kept per tag (default 3600)")
    live_max_tags: int | None = Field(None, ge=1, description="tags kept in the live buffer (default 10000)")

    @field_validator("default_retention", "retention_every")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_duration(value)
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return value


class HistorianSink(Sink):
    config: HistorianSinkConfig
    takes_tag_batches = True  # a stream hands over its `TagBatch`es as they are (engine/streaming/sinks.py)

    def __init__(self, config, ctx, name: str = "destination"):
        super().__init__(config, ctx, name)
        self.store: TagHistorian | None = None
        self.cur: duckdb.DuckDBPyConnection | None = None
        self.rows = 0
        self.live = None
        self._last_retention = time.monotonic()
        # how often retention runs at most, read once (not on every micro-batch's commit)
        self._retention_every = parse_duration(self.config.retention_every).total_seconds()
        self._in_transaction = False

    def _cursor(self, store: TagHistorian) -> duckdb.DuckDBPyConnection:
        """A cursor on the tag tables, created if new. One opener at a time: two destinations
        opening a fresh historian together (two streams starting) both CREATE its tables, and DuckDB
        fails all but one with a catalog write-write conflict; after the first, they exist."""
        with _TABLES_LOCK:
            return store.cursor()

    def _store(self) -> TagHistorian:
        if self.ctx.historian is None:
            raise ConnectorError(f"{self.name}: no embedded historian in this run (open a data directory)")
        return TagHistorian(
            self.ctx.historian,
            retention=[r.model_dump() for r in self.config.retention],
            default_retention=self.config.default_retention,
        )

    @property
    def commit_lock(self) -> threading.Lock:
        """Held by the streaming runtime around each micro-batch (engine/streaming/sinks.py): one
        micro-batch at a time per historian. The tag tables share rows (the rollup's state, the
        crash marker of `tag_last`), and two streams' transactions updating them at once end with
        DuckDB's "Conflict on update", which failed the run. It is the lock of the historian's
        kept newest rows (`engine.store.tag_newest`), which every writer of it holds."""
        historian = self.ctx.historian
        if historian is None:  # open() says so
            return threading.RLock()
        return tag_newest.of(historian).write_lock

    def open(self) -> None:
        self.store = self._store()
        self.cur = self._cursor(self.store)
        self._in_transaction = False  # begun by the first write: a transaction begins no earlier
        self.live = None
        if self.config.live_buffer:
            # Imported here: numpy stays out of `import engine.connectors.registry`.
            from engine.store import ring_buffer

            self.live = ring_buffer.ring_buffers(
                self.ctx.data_dir,
                self.config.live_capacity or ring_buffer.DEFAULT_CAPACITY,
                self.config.live_max_tags or ring_buffer.DEFAULT_MAX_TAGS,
            )

    def write(self, batch: pl.DataFrame | TagBatch) -> None:
        if self.cur is None or self.store is None:
            raise ConnectorError(f"{self.describe_target()}: write() before open()")
        missing = [c for c in REQUIRED if c not in batch.columns]
        if missing:
            self.abort()
            raise ConnectorError(
                f"{self.describe_target()}: column '{missing[0]}' is missing (tag records need the columns"
                f" of TAG_SCHEMA: {', '.join(TAG_COLUMNS)})"
            )
        if batch.height == 0:
            return
        if isinstance(batch, TagBatch) and batch.columns != TAG_COLUMNS:
            batch = batch.frame()  # some columns only: conformed as a frame
        if not isinstance(batch, TagBatch):  # a stream's few rows come as a TagBatch: no Polars
            try:
                batch = batch if batch.schema == tag_schema() else conform(batch)
            except pl.exceptions.PolarsError as exc:
                self.abort()
                raise ConnectorError(
                    f"{self.describe_target()}: not tag records: {first_line(exc)}"
                ) from None
        self._guarded(self._begin)
        self._guarded(lambda: self.store.insert(self.cur, batch))  # type: ignore[union-attr,arg-type]
        self.rows += batch.height
        if self.live is not None:
            self.live.append(batch)

    def _begin(self) -> None:
        if not self._in_transaction:
            self.cur.execute("BEGIN TRANSACTION")  # type: ignore[union-attr]
            self._in_transaction = True

    def _commit(self) -> None:
        if self._in_transaction:
            self._in_transaction = False
            self.cur.execute("COMMIT")  # type: ignore[union-attr]
            self.store.committed(self.cur)  # type: ignore[union-attr]  # may write `tag_last`

    def commit(self) -> None:
        """Streaming: everything written so far becomes durable. The next transaction begins with
        the next write, not now: one begun now would see the tables as they are now and conflict
        with what another stream commits meanwhile."""
        if self.cur is None:
            raise ConnectorError(f"{self.describe_target()}: commit() before open()")
        self._guarded(self._commit)
        if time.monotonic() - self._last_retention >= self._retention_every:
            self._retention()

    def close(self) -> None:
        if self.cur is None:
            raise ConnectorError(f"{self.describe_target()}: close() before open()")
        self._guarded(self._commit)
        self._guarded(lambda: self.store.write_last(self.cur))  # type: ignore[union-attr]  # exact at a stop
        self.cur.close()
        self.cur = None
        self._retention()

    def _retention(self) -> None:
        assert self.store is not None
        self._last_retention = time.monotonic()
        if not (self.config.retention or self.config.default_retention):
            return
        if self.cur is not None:  # streaming: retention runs between two micro-batches
            self._guarded(self._commit)
        try:
            self.store.apply_retention()
        except duckdb.Error as exc:
            raise ConnectorError(f"{self.describe_target()}: retention: {first_line(exc)}") from None

    def abort(self) -> None:
        if self.cur is None:
            return
        try:
            if self.store is not None:
                self.store.rolled_back()
            if self._in_transaction:
                self._in_transaction = False
                with contextlib.suppress(duckdb.Error):  # nothing to roll back
                    self.cur.execute("ROLLBACK")
        finally:
            self.cur.close()
            self.cur = None

    def _guarded(self, action) -> None:
        try:
            action()
        except duckdb.Error as exc:
            self.abort()
            raise ConnectorError(f"{self.describe_target()}: {first_line(exc)}") from None

    def check(self) -> None:
        cur = self._cursor(self._store())
        cur.close()

    def describe_target(self) -> str:
        path = self.ctx.historian.path.name if self.ctx.historian is not None else "historian"
        return f"{path}:{TAGS_TABLE}"


@register
class HistorianConnector(Connector):
    connector_type = "historian"
    title = "Tag historian"
    SinkConfig = HistorianSinkConfig

    sink_class = HistorianSink
