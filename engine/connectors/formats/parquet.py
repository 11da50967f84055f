"""Parquet: scanned by Polars; written by Polars' streaming sink (appends copy row groups with pyarrow)."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
from polars.io.plugins import register_io_source

from engine.connectors.formats.common import ReadOptions, WriteOptions, first_line
from engine.errors import DataError


def read(path: Path, opts: ReadOptions, limit: int | None, batch_rows: int) -> Iterator[pl.DataFrame]:
    lf = pl.scan_parquet(path, glob=False)
    if limit is not None:
        lf = lf.head(limit)
    try:
        yield from lf.collect_batches(chunk_size=batch_rows)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"not a readable Parquet file: {first_line(exc)}", file=str(path)) from None


def schema(path: Path, opts: ReadOptions) -> pl.Schema | None:
    try:
        return pl.scan_parquet(path, glob=False).collect_schema()
    except pl.exceptions.PolarsError:
        return None


def locate(path: Path, opts: ReadOptions, row: int) -> dict:
    return {"record": row + 1}


class _PolarsStream:
    """Polars' own Parquet writer (parallel, about twice pyarrow's ParquetWriter here), fed batch by
    batch: a Python IO source that drains a bounded queue, sunk by `sink_parquet` on its own thread."""

    _END = object()

    def __init__(self, temp: Path, schema: pl.Schema, compression: str):
        self.compression = compression
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None

        def batches(with_columns, predicate, n_rows, batch_size):  # the IO-source protocol
            while (item := self.queue.get()) is not self._END:
                yield item

        frame = register_io_source(batches, schema=schema)
        self.thread = threading.Thread(
            target=self._sink, args=(frame, temp), name="parquet-sink", daemon=True
        )
        self.thread.start()

    def _sink(self, frame: pl.LazyFrame, temp: Path) -> None:
        try:
            frame.sink_parquet(temp, compression=self.compression)
        except BaseException as exc:
            self.error = exc
            while self.queue.get() is not self._END:  # drain so the producer never blocks
                pass

    def put(self, batch: pl.DataFrame) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(batch)

    def close(self) -> None:
        self.queue.put(self._END)
        self.thread.join()
        if self.error is not None:
            raise self.error


class Writer:
    """Batches go out as they come, cast to the first batch's schema. A batch with new columns
    (or types that will not cast) switches to collecting everything and writing once at finish.
    Appending copies the old file's row groups first (pyarrow), then streams on with pyarrow."""

    def __init__(self, temp: Path, opts: WriteOptions, target: Path, append: bool):
        self.temp = temp
        self.compression = opts.compression
        self.writer = None  # a pyarrow ParquetWriter, only when appending to an existing file
        self.stream: _PolarsStream | None = None
        self.schema: pl.Schema | None = None
        self.pending: list[pl.DataFrame] | None = None  # set once we fell back to collecting
        if append and target.exists():
            self._copy_existing(target)

    def _copy_existing(self, target: Path) -> None:
        import pyarrow.parquet as pq  # appends only: keeps start-up light

        source = pq.ParquetFile(target)
        self.schema = pl.from_arrow(source.schema_arrow.empty_table()).schema
        self.writer = pq.ParquetWriter(self.temp, source.schema_arrow, compression=self.compression)
        for group in range(source.num_row_groups):
            self.writer.write_table(source.read_row_group(group))

    def write(self, batch: pl.DataFrame) -> None:
        if self.pending is not None:
            self.pending.append(batch)
            return
        if self.schema is None:
            self.schema = batch.schema
            self.stream = _PolarsStream(self.temp, batch.schema, self.compression)
        elif batch.schema != self.schema:
            aligned = self._align(batch)
            if aligned is None:
                self._collect_from_now_on(batch)
                return
            batch = aligned
        if self.stream is not None:
            self.stream.put(batch)
            return
        assert self.writer is not None
        table = batch.to_arrow()
        if table.schema != self.writer.schema:
            table = table.cast(self.writer.schema)  # e.g. string_view vs the old file's string
        self.writer.write_table(table)

    def _align(self, batch: pl.DataFrame) -> pl.DataFrame | None:
        assert self.schema is not None
        if any(c not in self.schema for c in batch.columns):
            return None
        try:
            return batch.select(
                pl.col(c).cast(t, strict=True) if c in batch.columns else pl.lit(None, t).alias(c)
                for c, t in self.schema.items()
            )
        except pl.exceptions.PolarsError:
            return None

    def _close_open_writer(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _collect_from_now_on(self, batch: pl.DataFrame) -> None:
        self._close_open_writer()
        self.pending = [pl.read_parquet(self.temp), batch]

    def finish(self) -> None:
        if self.pending is not None:
            pl.concat(self.pending, how="diagonal_relaxed").write_parquet(
                self.temp, compression=self.compression
            )
        elif self.stream is not None or self.writer is not None:
            self._close_open_writer()
        else:
            pl.DataFrame().write_parquet(self.temp)
        with open(self.temp, "rb+") as fh:
            os.fsync(fh.fileno())

    def discard(self) -> None:
        with contextlib.suppress(Exception):  # discarding anyway: a failed writer keeps nothing worth having
            self._close_open_writer()
        self.temp.unlink(missing_ok=True)
