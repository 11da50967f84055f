"""JSON (one array of objects) and NDJSON (one object per line).

Polars parses and writes; the stdlib parser runs only after a failure, to name the line and column.
Nested objects become struct columns and arrays list columns, and are written back the same way.

A key twice in one object (`{"a": 1, "a": 2}`) is an error naming the file, the record (JSON) or
line (NDJSON) and the key's path (`b.c`): Polars would silently keep one of the values. DuckDB,
which keeps duplicates visible, checks every record before Polars reads it: `json_keys` over the
record and over each object path of the Polars schema (struct columns, `[*]` for lists of
structs), against their distinct count (`list_unique`), in one vectorised pass. Only when it finds one does the
stdlib parser walk the file to name the first duplicate.

A field that is an object in one record and text in another is a string column: the schema says
nothing of the objects inside it. Their own keys are checked like any object's; when one holds a
further object or array (at any depth), the stdlib parser walks the file and decides, since
`json_keys` sees one level only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from engine.connectors.formats.common import ReadOptions, WriteOptions, first_line, to_text_frame
from engine.errors import ConnectorError, DataError


def _syntax_error(path: Path, exc: json.JSONDecodeError, line: int | None = None) -> DataError:
    return DataError(
        f"invalid JSON: {exc.msg} at column {exc.colno}",
        file=str(path),
        line=line if line is not None else exc.lineno,
    )


# ---- duplicate keys ----------------------------------------------------------------------------
class _Pairs(list):
    """An object as the parser saw it: its (key, value) pairs, duplicates included."""


def _duplicate_in(value: object, path: str = "") -> str | None:
    """The path of the first key that repeats within one object (`b.c`, `x[0].k`), or None."""
    if isinstance(value, _Pairs):
        seen: set[str] = set()
        for key, item in value:
            where = f"{path}.{key}" if path else key
            if key in seen:
                return where
            seen.add(key)
            if (found := _duplicate_in(item, where)) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _duplicate_in(item, f"{path}[{index}]")) is not None:
                return found
    return None


def _duplicate_error(path: Path, key_path: str, **where: int) -> DataError:
    key = key_path.rsplit(".", 1)[-1]
    at = "" if key == key_path else f" at {key_path}"
    return DataError(
        f"duplicate key {json.dumps(key)}{at} (each key once per object)", file=str(path), **where
    )


def _object_paths(dtype: pl.DataType, path: str = "$") -> list[tuple[str, bool]]:
    """JSON paths where a record may hold objects, each with whether it is a text path: structs,
    structs inside lists, and strings (a field that is an object in one record and text in another
    becomes a string column holding the object's JSON text, duplicates and all)."""
    if isinstance(dtype, pl.Struct):
        out = [(path, False)]
        for f in dtype.fields:
            name = f.name
            step = f".{name}" if name.replace("_", "a").isalnum() else "." + json.dumps(name)
            out += _object_paths(f.dtype, path + step)
        return out
    if isinstance(dtype, pl.List | pl.Array):
        return _object_paths(dtype.inner, f"{path}[*]")
    return [(path, True)] if dtype == pl.String else []


def _has_duplicate_keys(path: Path, schema: pl.Schema, fmt: str, limit: int | None) -> bool:
    """True when some record (of the first `limit`) has a key twice in one of its objects, or may
    have: an object under a text path that holds a further object or array, which `json_keys`
    (one level) cannot see into."""
    import duckdb

    paths = _object_paths(pl.Struct(schema))  # "$" (the record) first
    plain = [p for p, _ in paths if "[*]" not in p]
    listed = [p for p, _ in paths if "[*]" in p]
    # json_keys with a list of paths, or with a wildcard path, gives one key list per object
    columns = ["json_keys(json, ?::VARCHAR[]) AS k0"] + [
        f"json_keys(json, ?) AS k{i}" for i in range(1, len(listed) + 1)
    ]
    # a repeat: more keys than distinct keys (counting distinct keys is cheaper than building lists)
    repeats = [
        f"len(flatten(k{i})) <> list_sum(list_transform(k{i}, lambda x: list_unique(x)))"
        for i in range(len(columns))
    ]
    # under a text path, the types of an object's values and an array's items: a container there
    # is a nested object the schema does not describe
    texts = [p for p, text in paths if text]
    opaque = [
        "list_has_any(list_concat(json_type(json, ?), json_type(json, ?)), ['OBJECT', 'ARRAY'])"
        for _ in texts
    ]
    reader = "read_ndjson_objects(?)" if fmt == "ndjson" else "read_json_objects(?, format = 'array')"
    head = "" if limit is None else f" LIMIT {int(limit)}"
    sql = (
        f"SELECT EXISTS (SELECT 1 FROM (SELECT json, {', '.join(columns)} "
        f"FROM (SELECT json FROM {reader}{head})) WHERE {' OR '.join(repeats + opaque)})"
    )
    nested = [q for p in texts for q in (p + ".*", p + "[*]")]
    try:
        with duckdb.connect() as con:
            return bool(con.execute(sql, [plain, *listed, str(path), *nested]).fetchone()[0])
    except duckdb.Error:  # e.g. a record beyond DuckDB's object size: the stdlib parser decides
        return True


def _first_duplicate_ndjson(path: Path, limit: int | None) -> DataError | None:
    """The error path only: the first line holding a duplicate key, parsed line by line."""
    records = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            if limit is not None and records >= limit:
                break
            records += 1
            try:
                value = json.loads(line, object_pairs_hook=_Pairs)
            except json.JSONDecodeError:
                continue  # a syntax error is the Polars reader's to report
            if (found := _duplicate_in(value)) is not None:
                return _duplicate_error(path, found, line=number)
    return None


def _first_duplicate_json(path: Path, raw: bytes, limit: int | None) -> DataError | None:
    try:
        value = json.loads(raw, object_pairs_hook=_Pairs)
    except ValueError:
        return None
    items = [value] if isinstance(value, _Pairs) else value if isinstance(value, list) else []
    for index, item in enumerate(items[:limit] if limit is not None else items):
        if (found := _duplicate_in(item)) is not None:
            return _duplicate_error(path, found, record=index + 1)
    return None


# ---- JSON array --------------------------------------------------------------------------------
def read_json(path: Path, opts: ReadOptions, limit: int | None, batch_rows: int) -> Iterator[pl.DataFrame]:
    # A JSON array is one document: it is parsed whole, then handed on in slices of batch_rows.
    raw = path.read_bytes()
    if not raw.strip():
        return
    try:
        frame = pl.read_json(raw, infer_schema_length=None)
    except pl.exceptions.PolarsError as exc:
        raise _locate_json_error(path, raw, exc) from None
    if limit is not None:
        frame = frame.head(limit)
    if _has_duplicate_keys(path, frame.schema, "json", limit) and (
        bad := _first_duplicate_json(path, raw, limit)
    ):
        raise bad
    for offset in range(0, frame.height, batch_rows):
        yield frame.slice(offset, batch_rows)


def _locate_json_error(path: Path, raw: bytes, exc: Exception) -> DataError:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as bad:
        return _syntax_error(path, bad)
    except UnicodeDecodeError as bad:
        return DataError(f"not UTF-8 text (at byte {bad.start})", file=str(path))
    if not isinstance(value, list | dict):
        return DataError(f"expected an array of objects, found a {type(value).__name__}", file=str(path))
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                return DataError(
                    f"expected an object, found {json.dumps(item)[:40]}", file=str(path), record=index + 1
                )
    # Polars refuses some duplicates itself ("column with name 'c' has more than one occurrence")
    return _first_duplicate_json(path, raw, None) or DataError(first_line(exc), file=str(path))


def locate_record(path: Path, opts: ReadOptions, row: int) -> dict:
    return {"record": row + 1}


# ---- NDJSON ------------------------------------------------------------------------------------
def read_ndjson(path: Path, opts: ReadOptions, limit: int | None, batch_rows: int) -> Iterator[pl.DataFrame]:
    # Infer the schema from every line: a key that first appears late would otherwise be dropped
    # silently. A preview (limit) only needs the lines it shows.
    lf = pl.scan_ndjson(path, infer_schema_length=None if limit is None else max(limit, 100))
    if limit is not None:
        lf = lf.head(limit)
    try:
        # a key twice in one object: checked before any row is handed on (see the module text)
        if _has_duplicate_keys(path, lf.collect_schema(), "ndjson", limit) and (
            bad := _first_duplicate_ndjson(path, limit)
        ):
            raise bad
        yield from lf.collect_batches(chunk_size=batch_rows)
    except pl.exceptions.NoDataError:
        return
    except pl.exceptions.PolarsError as exc:
        raise _locate_ndjson_error(path, exc) from None


def ndjson_schema(path: Path, opts: ReadOptions) -> pl.Schema | None:
    try:  # for validation only: the first 1000 lines tell the types cheaply enough
        return pl.scan_ndjson(path, infer_schema_length=1000).collect_schema()
    except pl.exceptions.PolarsError:
        return None


def _locate_ndjson_error(path: Path, exc: Exception) -> DataError:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as bad:
                return _syntax_error(path, bad, line=number)
            if not isinstance(value, dict):
                return DataError(
                    f"expected an object, found {line.strip()[:40]}", file=str(path), line=number
                )
    return _first_duplicate_ndjson(path, None) or DataError(first_line(exc), file=str(path))


def locate_line(path: Path, opts: ReadOptions, row: int) -> dict:
    """The line of the `row`-th record (blank lines are skipped by the reader, so count them)."""
    seen = -1
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                seen += 1
                if seen == row:
                    return {"line": number}
    return {"record": row + 1}


# ---- writers -----------------------------------------------------------------------------------
def _object_lines(batch: pl.DataFrame) -> bytes:
    """The batch as NDJSON text, built by Polars (never per-row Python dicts)."""
    text = to_text_frame(batch, nested_as_json=False, decimal_as_float=True).write_ndjson()
    return text.encode()


def _fsync_close(fh) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()


class NdjsonWriter:
    def __init__(self, temp: Path, opts: WriteOptions, target: Path, append: bool):
        self.temp = temp
        self.fh = open(temp, "wb")  # noqa: SIM115 - kept open across write() calls
        if append and target.exists():
            with open(target, "rb") as src:
                last = b""
                while chunk := src.read(1 << 20):
                    self.fh.write(chunk)
                    last = chunk[-1:]
            if last not in (b"", b"\n"):
                self.fh.write(b"\n")

    def write(self, batch: pl.DataFrame) -> None:
        if batch.height:
            self.fh.write(_object_lines(batch))

    def finish(self) -> None:
        _fsync_close(self.fh)

    def discard(self) -> None:
        self.fh.close()
        self.temp.unlink(missing_ok=True)


class JsonWriter:
    """`[`, the objects separated by `,` + newline (one per line), `]`: streamed batch by batch."""

    def __init__(self, temp: Path, opts: WriteOptions, target: Path, append: bool):
        self.temp = temp
        self.has_rows = False
        self.fh = open(temp, "wb")  # noqa: SIM115 - kept open across write() calls
        if append and target.exists() and target.stat().st_size > 0:
            self._copy_open_array(target)
        else:
            self.fh.write(b"[")

    def _copy_open_array(self, target: Path) -> None:
        """Copy the existing array without its closing `]`, so that new objects continue it."""
        with open(target, "rb") as src:
            opening = src.read(64).lstrip()
            size = src.seek(0, os.SEEK_END)
            start = src.seek(max(0, size - 65536))
            body = src.read().rstrip()
            if not opening.startswith(b"[") or not body.endswith(b"]"):
                raise ConnectorError(f"{target}: cannot append, the file is not a JSON array")
            body = body[:-1].rstrip()
            if body.endswith(b"["):  # an empty array: start afresh
                self.fh.write(b"[")
                return
            src.seek(0)
            remaining = start + len(body)
            while remaining > 0 and (chunk := src.read(min(remaining, 1 << 20))):
                self.fh.write(chunk)
                remaining -= len(chunk)
            self.has_rows = True

    def write(self, batch: pl.DataFrame) -> None:
        if batch.height == 0:
            return
        lines = _object_lines(batch).rstrip(b"\n").replace(b"\n", b",\n")
        self.fh.write((b",\n" if self.has_rows else b"\n") + lines)
        self.has_rows = True

    def finish(self) -> None:
        self.fh.write(b"\n]\n" if self.has_rows else b"]\n")
        _fsync_close(self.fh)

    def discard(self) -> None:
        self.fh.close()
        self.temp.unlink(missing_ok=True)
