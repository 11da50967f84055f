"""Parquet: scanned by Polars, written row group by row group with pyarrow's ParquetWriter."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

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


class Writer:
    """Batches go out as they come, cast to the first batch's schema. A batch with new columns
    (or types that will not cast) switches to collecting everything and writing once at finish."""

    def __init__(self, temp: Path, opts: WriteOptions, target: Path, append: bool):
        self.temp = temp
        self.writer: pq.ParquetWriter | None = None
        self.schema: pl.Schema | None = None
        self.pending: list[pl.DataFrame] | None = None  # set once we fell back to collecting
        if append and target.exists():
            self._copy_existing(target)

    def _copy_existing(self, target: Path) -> None:
        source = pq.ParquetFile(target)
        self.schema = pl.from_arrow(source.schema_arrow.empty_table()).schema
        self.writer = pq.ParquetWriter(self.temp, source.schema_arrow, compression="zstd")
        for group in range(source.num_row_groups):
            self.writer.write_table(source.read_row_group(group))

    def write(self, batch: pl.DataFrame) -> None:
        if self.pending is not None:
            self.pending.append(batch)
            return
        if self.schema is None:
            self.schema = batch.schema
            self.writer = pq.ParquetWriter(self.temp, batch.to_arrow().schema, compression="zstd")
        elif batch.schema != self.schema:
            aligned = self._align(batch)
            if aligned is None:
                self._collect_from_now_on(batch)
                return
            batch = aligned
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

    def _collect_from_now_on(self, batch: pl.DataFrame) -> None:
        assert self.writer is not None
        self.writer.close()
        self.writer = None
        self.pending = [pl.read_parquet(self.temp), batch]

    def finish(self) -> None:
        if self.pending is not None:
            pl.concat(self.pending, how="diagonal_relaxed").write_parquet(self.temp, compression="zstd")
        elif self.writer is not None:
            self.writer.close()
        else:
            pl.DataFrame().write_parquet(self.temp)
        with open(self.temp, "rb+") as fh:
            os.fsync(fh.fileno())

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.temp.unlink(missing_ok=True)
