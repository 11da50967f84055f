"""The Sink of every remote destination: `remote_sink(cls, config, ctx, name)`.

A remote destination's connector class implements `make_target(config, ctx, name)` and returns
`remote_sink(cls, config, ctx, name)` from its `make_sink`. Its `delivery` (config, else the run's
`ctx.delivery_default`, else `store_and_forward` when the service runs this process and `direct`
otherwise) chooses:

- `store_and_forward` (`OutboxSink`): each batch goes into the destination's durable outbox;
  `close()` accepts the run's batches in ONE fsync'ed transaction (all of the run's rows or none);
  a real-time pipeline commits each micro-batch so. The forwarder (engine/outbox/forwarder.py)
  delivers from the outbox.
- `direct` (`DirectSink`): the run's batches are buffered in a temporary Arrow IPC file under the
  data directory (recorded with `ctx.track`, removed by the next start-up if the process is killed)
  and delivered in `close()`, inside the run's commit: `target.deliver_all(tables)` when the target
  offers one upstream transaction, else `deliver` chunk by chunk. An unreachable upstream fails
  the run cleanly.

Both add the idempotency key (`_key`, engine/outbox/keys.py) to every record.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from engine.connectors.base import Sink
from engine.context import RunContext
from engine.errors import ConnectorError, DataError
from engine.outbox.config import RemoteSinkConfig
from engine.outbox.keys import edge_id, is_tag_frame, with_keys
from engine.outbox.manager import manager_for
from engine.outbox.store import OutboxFull, OutboxStore, run_token
from engine.outbox.target import DeliveryError

DIRECT_CHUNK_ROWS = 50_000
TMP_DIR = "tmp"


def to_arrow(frame: pl.DataFrame) -> pa.Table:
    """Plain Arrow types (`large_string`, not views): what every upstream client reads."""
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())


_MARKS = {"quality", "reason"}  # the columns of a gap record's mark


def delivery_of(config: Any, ctx: RunContext) -> str:
    chosen = getattr(config, "delivery", None) or getattr(ctx, "delivery_default", None)
    if chosen:
        return chosen
    manager = getattr(ctx, "outbox", None) or manager_for(ctx.data_dir)
    return "store_and_forward" if manager.serving else "direct"


def remote_sink(cls: Any, config: RemoteSinkConfig, ctx: RunContext, name: str) -> Sink:
    if delivery_of(config, ctx) == "direct":
        return DirectSink(cls, config, ctx, name)
    return OutboxSink(cls, config, ctx, name)


def _target(cls: Any, config: Any, ctx: RunContext, name: str) -> Any:
    return cls.make_target(config, ctx, name)


# ---- store_and_forward ------------------------------------------------------------------------
class OutboxSink(Sink):
    def __init__(self, cls: Any, config: RemoteSinkConfig, ctx: RunContext, name: str):
        super().__init__(config, ctx, name)
        self.cls = cls
        self.manager = getattr(ctx, "outbox", None) or manager_for(ctx.data_dir)
        self.store: OutboxStore | None = None
        self._held: pl.DataFrame | None = None
        self._token: str | None = None
        self._edge = ""
        self._drop_said = float("-inf")

    def open(self) -> None:
        self.store = self.manager.store(
            self.ctx.pipeline, self.name, getattr(self.cls, "connector_type", None)
        )
        self._edge = edge_id(self.ctx.data_dir)
        self._held, self._token = None, None

    def _maker(self, frame: pl.DataFrame):
        assert self.store is not None
        epoch = self.store.epoch

        def make(first_rec: int) -> pa.Table:
            return to_arrow(self._keyed(frame, first_rec, epoch))

        return make

    def _keyed(self, frame: pl.DataFrame, first_rec: int, scope: str) -> pl.DataFrame:
        try:
            return with_keys(
                frame,
                edge=self._edge,
                pipeline=self.ctx.pipeline,
                destination=self.name,
                key=self.config.key,
                first_seq=first_rec,
                seq_scope=scope,
            )
        except ValueError as exc:
            raise DataError(f"destination '{self.name}': {exc}") from None

    def write(self, batch: pl.DataFrame) -> None:
        if batch.height == 0:
            return
        assert self.store is not None
        if self._held is not None:  # a run with several batches: the earlier ones wait, staged
            if self._token is None:
                self._token = run_token()
            self.store.stage(self._maker(self._held), self._held.height, self._token)
        self._held = batch

    def close(self) -> None:
        assert self.store is not None
        last = (self._maker(self._held), self._held.height) if self._held is not None else None
        if last is None and self._token is None:
            self._register()
            return
        cfg = self.config
        drop = cfg.overflow == "drop_oldest"
        while True:
            try:
                done = self.store.commit(
                    last, self._token, max_bytes=cfg.max_bytes, drop_oldest=drop, gap=self._gap
                )
                break
            except OutboxFull as exc:
                self._wait_for_room(exc)
        if done["dropped_records"] and time.monotonic() - self._drop_said >= 10.0:
            self._drop_said = time.monotonic()
            self.ctx.log(
                "warning",
                f"outbox full (max_bytes {cfg.max_bytes}): dropped the {done['dropped_records']} oldest"
                " records, written as a gap (quality bad, reason dropped)",
                self.name,
            )
        self._held, self._token = None, None
        self._register()

    def _wait_for_room(self, exc: OutboxFull) -> None:
        assert self.store is not None
        size = exc.needed  # what the run occupies in the outbox
        if size > self.config.max_bytes:
            raise ConnectorError(
                f"destination '{self.name}': the run's {size} bytes are more than the outbox's cap"
                f" (max_bytes {self.config.max_bytes}): raise max_bytes"
            )
        self._register()  # the forwarder must run to make room
        with self.store.changed:
            self.store.changed.wait(0.25)  # woken by a delivery in this process; polled for others
        if self.ctx.cancel.is_set():
            raise ConnectorError(f"destination '{self.name}': cancelled while the outbox was full")

    def _gap(self, tables: list[pa.Table], first_rec: int) -> pa.Table | None:
        """Gap records for dropped tag data: quality bad, reason dropped, one per tag (and source)
        for each dropped batch (`tables`), at its first timestamp. Per batch, not per drop: a batch
        whose delivery got no answer may have arrived, and its gap record, keyed like its first
        record, is then refused upstream as a duplicate; the next batch's gap still marks where
        the hole begins. Gap records that are themselves dropped (a batch of them grew old in a
        full outbox) are written again each as it was: one batch of them may hold several per
        tag, each the start of its own hole (reduced to the earliest, a later hole lost its mark
        whenever the earliest was refused upstream as above)."""
        try:
            frames = [f for f in (pl.from_arrow(t) for t in tables) if isinstance(f, pl.DataFrame)]
            marked = [f.with_columns(pl.lit(i).alias("_batch")) for i, f in enumerate(frames)]
            frame = pl.concat(marked, how="diagonal_relaxed")
        except Exception:
            return None
        if not is_tag_frame(frame) or frame.height == 0:
            return None
        by = ["tag", "source"] if "source" in frame.columns else ["tag"]
        marks = (
            ((pl.col("quality") == "bad") & (pl.col("reason") == "dropped")).fill_null(False)
            if set(frame.columns) >= _MARKS
            else pl.lit(False)
        )
        firsts = pl.concat(
            [
                frame.filter(marks).select([*by, "timestamp"]),
                frame.filter(~marks)
                .group_by(["_batch", *by], maintain_order=True)
                .agg(pl.col("timestamp").min())
                .drop("_batch"),
            ]
        ).unique(maintain_order=True)
        now = pl.lit(time.time() * 1e6).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
        cols = []
        for column, dtype in frame.schema.items():
            if column in firsts.columns or column in ("_key", "_batch"):
                continue
            if column == "quality":
                cols.append(pl.lit("bad", pl.String).alias(column))
            elif column == "reason":
                cols.append(pl.lit("dropped", pl.String).alias(column))
            elif column == "received_at" and isinstance(dtype, pl.Datetime):
                cols.append(now.cast(dtype).alias(column))
            else:
                cols.append(pl.lit(None, dtype).alias(column))
        gap = firsts.with_columns(cols).select([c for c in frame.columns if c not in ("_key", "_batch")])
        assert self.store is not None
        return to_arrow(self._keyed(gap, first_rec, self.store.epoch))

    def _register(self) -> None:
        cls, cfg, ctx, name = self.cls, self.config, self.ctx, self.name
        self.manager.register(ctx.pipeline, name, lambda: _target(cls, cfg, ctx, name), cfg)

    def abort(self) -> None:
        if self.store is not None and self._token is not None:
            self.store.discard(self._token)
        self._held, self._token = None, None

    def check(self) -> str | None:
        return _target(self.cls, self.config, self.ctx, self.name).check()

    def describe_target(self) -> str:
        return f"outbox → {_target(self.cls, self.config, self.ctx, self.name).describe_target()}"


# ---- direct -----------------------------------------------------------------------------------
class DirectSink(Sink):
    def __init__(self, cls: Any, config: RemoteSinkConfig, ctx: RunContext, name: str):
        super().__init__(config, ctx, name)
        self.cls = cls
        self.temp: Path | None = None
        self._writer: ipc.RecordBatchFileWriter | None = None
        self._file: Any = None
        self._forget = None
        self._rows = 0
        self._schema: pl.Schema | None = None
        self._edge = ""

    def open(self) -> None:
        folder = Path(self.ctx.data_dir) / "outbox" / TMP_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.temp = folder / f"{self.ctx.run_id}-{uuid.uuid4().hex[:8]}.arrow"
        self._forget = self.ctx.track("file", str(self.temp))
        self._edge = edge_id(self.ctx.data_dir)
        self._rows = 0

    def write(self, batch: pl.DataFrame) -> None:
        if batch.height == 0:
            return
        assert self.temp is not None
        if self._schema is not None and batch.schema != self._schema:
            try:
                batch = batch.select(
                    pl.col(c).cast(t) if c in batch.columns else pl.lit(None, t).alias(c)
                    for c, t in self._schema.items()
                )
            except Exception:
                raise DataError(
                    f"destination '{self.name}': a batch's columns ({', '.join(batch.columns)}) differ from"
                    f" the first batch's ({', '.join(self._schema.names())})"
                ) from None
        try:
            keyed = with_keys(
                batch,
                edge=self._edge,
                pipeline=self.ctx.pipeline,
                destination=self.name,
                key=self.config.key,
                first_seq=self._rows,
                seq_scope=f"run:{self.ctx.run_id}",
            )
        except ValueError as exc:
            raise DataError(f"destination '{self.name}': {exc}") from None
        table = to_arrow(keyed)
        if self._writer is None:
            self._schema = batch.schema
            self._file = open(self.temp, "wb")  # noqa: SIM115 (closed in close() or abort())
            self._writer = ipc.new_file(self._file, table.schema)
        self._writer.write_table(table)
        self._rows += batch.height

    def _tables(self) -> Iterator[pa.Table]:
        assert self.temp is not None
        with pa.memory_map(str(self.temp)) as source:
            reader = ipc.open_file(source)
            chunk: list[pa.RecordBatch] = []
            rows = 0
            for i in range(reader.num_record_batches):
                for rb in pa.Table.from_batches([reader.get_batch(i)]).to_batches(DIRECT_CHUNK_ROWS):
                    chunk.append(rb)
                    rows += rb.num_rows
                    if rows >= DIRECT_CHUNK_ROWS:
                        yield pa.Table.from_batches(chunk)
                        chunk, rows = [], 0
            if chunk:
                yield pa.Table.from_batches(chunk)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._file.close()
            self._writer = None
        try:
            if self._rows:
                target = _target(self.cls, self.config, self.ctx, self.name)
                try:
                    target.open()
                    if hasattr(target, "deliver_all"):
                        target.deliver_all(self._tables())
                    else:
                        for table in self._tables():
                            if self.ctx.cancel.is_set():
                                raise ConnectorError(f"destination '{self.name}': cancelled")
                            target.deliver(table, historical=False)
                except DeliveryError as exc:
                    raise ConnectorError(
                        f"destination '{self.name}' ({target.describe_target()}): {exc}"
                    ) from None
                finally:
                    target.close()
        finally:
            self._cleanup()

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
                self._file.close()
            except Exception:
                pass
            self._writer = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self.temp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp)
            self.temp = None
        if self._forget is not None:
            self._forget()
            self._forget = None

    def check(self) -> str | None:
        return _target(self.cls, self.config, self.ctx, self.name).check()

    def describe_target(self) -> str:
        return _target(self.cls, self.config, self.ctx, self.name).describe_target()
