"""The file formats of the `file` connector: one module per format, each a reader and a writer.

A reader is `read(path, options, limit, batch_rows)` (an iterator of DataFrames), `schema(path,
options)` when the schema is cheap to know, and `locate(path, options, row)` for error messages.
A writer streams batches into a temporary file (`write`), completes it (`finish`) or deletes it
(`discard`); the sink renames the finished file onto the target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from engine.connectors.formats import csv, excel, json, parquet, xml
from engine.connectors.formats.common import ReadOptions, WriteOptions


class Writer(Protocol):
    def write(self, batch: pl.DataFrame) -> None: ...
    def finish(self) -> None: ...
    def discard(self) -> None: ...


@dataclass(frozen=True)
class Format:
    read: Callable[[Path, ReadOptions, int | None, int], Iterator[pl.DataFrame]]
    locate: Callable[[Path, ReadOptions, int], dict]
    writer: Callable[[Path, WriteOptions, Path, bool], Any]
    schema: Callable[[Path, ReadOptions], pl.Schema | None] | None = None


FORMATS: dict[str, Format] = {
    "csv": Format(csv.read, csv.locate, csv.Writer, csv.schema),
    "json": Format(json.read_json, json.locate_record, json.JsonWriter),
    "ndjson": Format(json.read_ndjson, json.locate_line, json.NdjsonWriter, json.ndjson_schema),
    "parquet": Format(parquet.read, parquet.locate, parquet.Writer, parquet.schema),
    "excel": Format(excel.read, excel.locate, excel.Writer),
    "xml": Format(xml.read, xml.locate, xml.Writer),
}

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "excel",
    ".xlsm": "excel",
    ".xls": "excel",
    ".xml": "xml",
}


def format_of(path: str, declared: str | None) -> str:
    """The declared format, or the one the extension names; a ValueError lists the choices."""
    if declared:
        return declared
    suffix = Path(path).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    shown = suffix or "no extension"
    raise ValueError(
        f"cannot tell the file format from '{shown}': set `format` (allowed: {', '.join(FORMATS)})"
    )
