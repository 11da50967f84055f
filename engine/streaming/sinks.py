"""Destinations of a real-time pipeline: one commit per micro-batch.

- `SessionSink` serves sinks made for streaming, which have a `commit()` (the tag historian): one
  open() for the stream, write() + commit() per micro-batch, close() at the end. After a failed
  micro-batch the sink is aborted and a fresh one opened for the next attempt.
- `TransactionalSink` drives any other batch sink through open / write / close for each
  micro-batch, so each micro-batch is one transaction (DuckDB: BEGIN ... COMMIT; `upsert` one MERGE).
- `FileAppender` appends each micro-batch to a CSV or NDJSON file and fsyncs it. The batch sink's
  append (copy the old file, rename the new one) would rewrite the whole file every micro-batch.
  A failed append is cut off again, and a torn last line left by a crash is cut off at start, so
  the file only ever holds whole micro-batches.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from engine.connectors.base import Sink
from engine.connectors.file import FileSinkConfig
from engine.connectors.formats.common import is_utf8, to_text_frame
from engine.context import RunContext
from engine.errors import ConnectorError, DataError
from engine.executor import dead_letter_rows
from engine.lazy import lazy_module
from engine.tags import as_frame

pl = lazy_module("polars")

APPENDABLE_FORMATS = ("csv", "ndjson")


class MicroBatchSink(Protocol):
    name: str

    def commit(self, frame: pl.DataFrame) -> None: ...

    def close_stream(self) -> None: ...

    def describe_target(self) -> str: ...


class SessionSink:
    def __init__(self, name: str, make: Callable[[], Sink]):
        self.name, self._make = name, make
        self.sink = make()
        self.opened = False

    def commit(self, frame: pl.DataFrame) -> None:
        # A destination whose micro-batches must not overlap another stream's (the tag historian's
        # shared rows) gives a lock to hold around each: write and commit, in this thread.
        lock = getattr(self.sink, "commit_lock", None)
        try:
            with lock if lock is not None else contextlib.nullcontext():
                if not self.opened:
                    self.sink.open()
                    self.opened = True
                # a `TagBatch` goes as it is to a sink that writes it (the tag historian)
                self.sink.write(frame if getattr(self.sink, "takes_tag_batches", False) else as_frame(frame))
                self.sink.commit()  # type: ignore[attr-defined]
        except BaseException:
            try:
                self.sink.abort()
            finally:
                self.sink, self.opened = self._make(), False
            raise

    def close_stream(self) -> None:
        if self.opened:
            self.opened = False
            self.sink.close()

    def describe_target(self) -> str:
        return self.sink.describe_target()


class TransactionalSink:
    def __init__(self, name: str, make: Callable[[], Sink]):
        self.name, self._make = name, make
        self.sink = make()

    def commit(self, frame: pl.DataFrame) -> None:
        sink = self.sink
        try:
            sink.open()
            sink.write(as_frame(frame))
            sink.close()
        except BaseException:
            try:
                sink.abort()
            finally:
                self.sink = self._make()  # nothing cached from the failed transaction carries over
            raise

    def close_stream(self) -> None:
        pass

    def describe_target(self) -> str:
        return self.sink.describe_target()


class FileAppender:
    def __init__(self, config: FileSinkConfig, ctx: RunContext, name: str):
        self.name, self.config = name, config
        self.format = config.resolved_format
        if self.format not in APPENDABLE_FORMATS:
            raise ConnectorError(
                f"destination '{name}': a real-time pipeline appends to csv or ndjson files, not {self.format}"
            )
        values = config._option_values()
        self.delimiter, self.header, self.encoding = values["delimiter"], values["header"], values["encoding"]
        self.target: Path = ctx.resolve_path(config.path)
        self.columns: list[str] | None = None
        self._prepare()

    def _prepare(self) -> None:
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            if self.config.mode == "overwrite":  # the stream starts the file afresh, then appends
                with open(self.target, "wb"):
                    pass
            elif self.target.is_file():
                _cut_torn_tail(self.target)
                if self.format == "csv" and self.header and self.target.stat().st_size:
                    with open(self.target, encoding=self.encoding, newline="") as fh:
                        self.columns = next(csv.reader([fh.readline()], delimiter=self.delimiter), None)
        except OSError as exc:
            raise ConnectorError(f"{self.target}: {exc.strerror or exc}") from None

    def commit(self, frame: pl.DataFrame) -> None:
        if frame.height == 0 and self.columns is not None:
            return
        data = self._encode(as_frame(frame))
        try:
            with open(self.target, "ab") as fh:
                start = fh.tell()
                try:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                except BaseException:
                    fh.truncate(start)  # the file keeps whole micro-batches only
                    raise
        except OSError as exc:
            raise ConnectorError(f"{self.target}: {exc.strerror or exc}") from None

    def _encode(self, frame: pl.DataFrame) -> bytes:
        if self.format == "ndjson":
            text = to_text_frame(frame, nested_as_json=False, decimal_as_float=True).write_ndjson()
            return text.encode()
        frame = to_text_frame(frame, nested_as_json=True)
        header = False
        if self.columns is None:
            self.columns, header = list(frame.columns), self.header
        else:
            new = [c for c in frame.columns if c not in self.columns]
            if new:
                raise DataError(
                    f"column '{new[0]}' is not in the file's columns ({', '.join(self.columns)}); a live CSV"
                    " keeps its columns: write to a new file, or to ndjson or duckdb",
                    file=str(self.target),
                )
            frame = frame.select(
                pl.col(c) if c in frame.columns else pl.lit(None, pl.String).alias(c) for c in self.columns
            )
        text = frame.write_csv(include_header=header, separator=self.delimiter)
        if is_utf8(self.encoding):
            return text.encode()
        try:
            return text.encode(self.encoding)
        except UnicodeEncodeError as exc:
            raise DataError(
                f"value {exc.object[exc.start : exc.end]!r} cannot be written as {self.encoding}",
                file=str(self.target),
            ) from None

    def close_stream(self) -> None:
        pass

    def describe_target(self) -> str:
        return str(self.target)


def _cut_torn_tail(path: Path) -> None:
    """A crash in the middle of an append leaves a last line without its newline: cut it off."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "r+b") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        block = 1 << 16
        end = size
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                fh.truncate(start + cut + 1)
                return
            end = start
        fh.truncate(0)


class DeadLetterAppender:
    """`dead_letter_queue.storage` as a file in a real-time pipeline: each micro-batch's rejected
    records (with `_run_id` and `_node_id`) are appended as NDJSON with the micro-batch's commit,
    through the same `FileAppender` as a live NDJSON destination (whole micro-batches only)."""

    def __init__(self, ctx: RunContext, path: str):
        config = FileSinkConfig(path=path, format="ndjson", mode="append")
        self.ctx = ctx
        self.file = FileAppender(config, ctx, "dead-letter file")

    def commit(self, rejects: list[tuple[str, pl.DataFrame]]) -> None:
        frames = [dead_letter_rows(f, self.ctx.run_id, nid) for nid, f in rejects if f.height]
        if frames:
            self.file.commit(pl.concat(frames, how="diagonal_relaxed"))


def make_committer(connector_type: str, config, ctx: RunContext, name: str, make: Callable[[], Sink]):
    """The micro-batch committer of a destination node."""
    if connector_type == "file":
        return FileAppender(config, ctx, name)
    committer = TransactionalSink(name, make)
    if callable(getattr(committer.sink, "commit", None)):
        return SessionSink(name, make)
    return committer
