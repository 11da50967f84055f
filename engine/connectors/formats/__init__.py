"""The file formats of the `file` connector: one module per format, each a reader and a writer.

A reader is `read(path, options, limit, batch_rows)` (an iterator of DataFrames), `schema(path,
options)` when the schema is cheap to know, and `locate(path, options, row)` for error messages.
A writer streams batches into a temporary file (`write`), completes it (`finish`) or deletes it
(`discard`); the sink renames the finished file onto the target.

A format's module is imported when the format is first used (`FORMATS[name]`): the streaming sinks
and the spec models import this package for the file sink's configuration, and a process that never
reads or writes a file (an idle Modbus -> historian pipeline) does not carry the readers and writers
of six formats (XML's parser among them; issue 12, docs/performance.md "Idle memory and CPU").
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.connectors.formats.common import ReadOptions, WriteOptions
from engine.lazy import lazy_module

pl = lazy_module("polars")


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


# Each format: its module (in this package) and the names of read, locate, writer and schema there.
# packaging/bundle_modules.py reads this table for the bundle's hidden imports (imported by name).
_PARTS: dict[str, tuple[str, str, str, str, str | None]] = {
    "csv": ("csv", "read", "locate", "Writer", "schema"),
    "json": ("json", "read_json", "locate_record", "JsonWriter", None),
    "ndjson": ("json", "read_ndjson", "locate_line", "NdjsonWriter", "ndjson_schema"),
    "parquet": ("parquet", "read", "locate", "Writer", "schema"),
    "excel": ("excel", "read", "locate", "Writer", None),
    "xml": ("xml", "read", "locate", "Writer", None),
}


class _Formats(Mapping[str, Format]):
    """The formats by name, each built (its module imported) on first use; thread-safe."""

    def __init__(self) -> None:
        self._built: dict[str, Format] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Format:
        found = self._built.get(name)
        if found is not None:
            return found
        module_name, read, locate, writer, schema = _PARTS[name]  # KeyError for an unknown format
        with self._lock:
            if name not in self._built:
                module = importlib.import_module(f"{__name__}.{module_name}")
                self._built[name] = Format(
                    getattr(module, read),
                    getattr(module, locate),
                    getattr(module, writer),
                    getattr(module, schema) if schema else None,
                )
            return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_PARTS)

    def __len__(self) -> int:
        return len(_PARTS)


FORMATS: Mapping[str, Format] = _Formats()

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
