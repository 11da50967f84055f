"""CSV: streamed by Polars' scanner; errors located by re-reading the file as text (error path only)."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from engine.connectors.formats.common import (
    ReadOptions,
    WriteOptions,
    cast_expr,
    first_line,
    is_utf8,
    to_text_frame,
)
from engine.errors import ConnectorError, DataError
from engine.recovery import remove_temp

HEAD_BYTES = 1 << 16  # the first chunk, where the line endings are told apart
GIANT_LINE_BYTES = 1 << 16  # a header alone longer than this, with no line break, is not a CSV


def _cr_only(path: Path) -> bool:
    """Old Mac line endings: a carriage return and no line feed in the first chunk."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    return b"\r" in head and b"\n" not in head


@contextlib.contextmanager
def _polars_readable(path: Path, encoding: str) -> Iterator[Path]:
    """Polars reads UTF-8 with \n or \r\n line endings only: other encodings, and CR-only line
    endings, are converted in chunks (streaming) to a temporary file."""
    cr_only = _cr_only(path)
    if is_utf8(encoding) and not cr_only:
        yield path
        return
    fd, name = tempfile.mkstemp(suffix=".csv", prefix="aggregator-")
    try:
        # Universal newlines turn each lone \r into \n; otherwise line endings are kept as they are.
        with (
            open(path, encoding=encoding, newline=None if cr_only else "") as src,
            os.fdopen(fd, "w", encoding="utf-8", newline="") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
        yield Path(name)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not valid {encoding} text ({exc.reason} at byte {exc.start})", file=str(path)
        ) from None
    finally:
        os.unlink(name)


def _check_not_one_giant_line(path: Path, shown: Path) -> None:
    """A non-empty file that gave no rows: fine for a header alone, but a long line without any
    line break is a file whose records are not separated by \n, \r\n or \r (so not rows at all)."""
    size = path.stat().st_size
    if size <= GIANT_LINE_BYTES:
        return
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            if b"\n" in chunk or b"\r" in chunk:
                return
    raise DataError(
        f"one line of {size} bytes with no line break, so no rows: records must end with \\n, \\r\\n"
        " or \\r (is this a CSV file?)",
        file=str(shown),
        line=1,
    )


# Polars' CSV reader parses ahead in chunks of this many bytes. Its default holds 550 MB of parsed
# read-ahead while a slower consumer (a DuckDB insert) catches up; 4 MiB chunks hold 340 MB at the
# same speed (measured on a 783 MB file). An explicit setting in the environment wins.
os.environ.setdefault("POLARS_CSV_CHUNK_SIZE", str(4 << 20))


def _scan(path: Path, opts: ReadOptions, *, as_text: bool = False) -> pl.LazyFrame:
    return pl.scan_csv(
        path,
        separator=opts.delimiter,
        has_header=opts.header,
        infer_schema=not as_text,
        # Declared columns are read as text and cast by `apply_declared`, which names the bad line.
        schema_overrides={c: pl.String for c in opts.declared} or None,
        # Without a header, columns are column_1, column_2... (1-based, whatever Polars' default).
        with_column_names=None if opts.header else _numbered,
        glob=False,
    )


def _numbered(names: list[str]) -> list[str]:
    return [f"column_{i}" for i in range(1, len(names) + 1)]


def read(path: Path, opts: ReadOptions, limit: int | None, batch_rows: int) -> Iterator[pl.DataFrame]:
    with _polars_readable(path, opts.encoding) as src:
        lf = _scan(src, opts)
        if limit is not None:
            lf = lf.head(limit)
        rows = 0
        try:
            for batch in lf.collect_batches(chunk_size=batch_rows):
                rows += batch.height
                yield batch
        except pl.exceptions.NoDataError:
            return
        except pl.exceptions.PolarsError as exc:
            raise _diagnose(path, src, opts, exc) from None
        if rows == 0 and limit != 0:
            _check_not_one_giant_line(src, path)


def schema(path: Path, opts: ReadOptions) -> pl.Schema | None:
    if not is_utf8(opts.encoding) or _cr_only(path):
        return None
    try:
        found = _scan(path, opts).collect_schema()
    except pl.exceptions.NoDataError:
        return pl.Schema()
    if all(t == pl.String for t in found.values()) and _header_only(path, opts):
        # A header without rows: the columns are known, their types are not (Polars says String).
        # Null is "any type" to the checks, so a numeric step on them is not an invalid spec.
        return pl.Schema({c: pl.String if c in opts.declared else pl.Null for c in found})
    return found


def _header_only(path: Path, opts: ReadOptions) -> bool:
    try:
        return _scan(path, opts, as_text=True).head(1).collect().height == 0
    except pl.exceptions.PolarsError:
        return False


def locate(path: Path, opts: ReadOptions, row: int) -> dict:
    """The 1-based line where data row `row` starts (quoted line breaks and blank lines counted)."""
    with open(path, encoding=opts.encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=opts.delimiter)
        if opts.header:
            next(reader, None)
        start = reader.line_num + 1
        for index, _ in enumerate(reader):
            if index == row:
                return {"line": start}
            start = reader.line_num + 1
    return {"line": start}


def _diagnose(path: Path, src: Path, opts: ReadOptions, exc: Exception) -> DataError:
    """Turn a Polars parse error into one line naming the file, the line and the field."""
    try:
        return _locate_parse_error(path, src, opts, exc)
    except (pl.exceptions.PolarsError, csv.Error, OSError, UnicodeDecodeError):
        return DataError(first_line(exc), file=str(path))  # too broken to locate


def _locate_parse_error(path: Path, src: Path, opts: ReadOptions, exc: Exception) -> DataError:
    message = str(exc)
    if "more fields than" in message:
        return _ragged_line(path, opts) or DataError(first_line(exc), file=str(path))
    if "could not parse" in message:
        found = _first_unfit_value(src, opts)
        if found:
            row, column, value, dtype = found
            return DataError(
                f"value {value!r} is not a valid {dtype}, the type inferred from the first rows"
                " (set the column's type in `schema`)",
                file=str(path),
                field=column,
                **locate(path, opts, row),
            )
    return DataError(first_line(exc), file=str(path))


def _first_unfit_value(src: Path, opts: ReadOptions) -> tuple[int, str, str, str] | None:
    """Re-read the file as text and find the first value that does not fit its inferred type."""
    names = {pl.Int64: "int", pl.Float64: "float", pl.Boolean: "bool", pl.Date: "date"}
    inferred = _scan(src, opts).collect_schema()
    typed = {
        c: names.get(t, "datetime") for c, t in inferred.items() if t != pl.String and c not in opts.declared
    }
    checks = {c: cast_expr(pl.col(c), pl.String(), t) for c, t in typed.items()}  # type: ignore[arg-type]
    if not checks:
        return None
    bad = pl.any_horizontal([pl.col(c).str.strip_chars().ne("") & e.is_null() for c, e in checks.items()])
    hit = _scan(src, opts, as_text=True).with_row_index("_row").filter(bad).head(1).collect()
    if hit.height == 0:
        return None
    row = hit.row(0, named=True)
    for column, expr in checks.items():
        value = row[column]
        if value is not None and value.strip() and hit.select(expr).item() is None:
            return row["_row"], column, value, typed[column]
    return None


def _ragged_line(path: Path, opts: ReadOptions) -> DataError | None:
    with open(path, encoding=opts.encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=opts.delimiter)
        expected = None
        start = 1
        for fields in reader:
            if expected is None:
                expected = len(fields)
            elif len(fields) > expected:
                return DataError(
                    f"line has {len(fields)} fields, the header has {expected}", file=str(path), line=start
                )
            start = reader.line_num + 1
    return None


class Writer:
    """Streams batches into the temporary file: the header once, then rows; `finish` syncs it."""

    def __init__(self, temp: Path, opts: WriteOptions, target: Path, append: bool):
        self.temp, self.opts, self.target = temp, opts, target
        self.columns: list[str] | None = None
        if append and target.exists() and target.stat().st_size > 0:
            self._copy_existing(target)
        self.fh = open(temp, "ab")  # noqa: SIM115 - kept open across write() calls

    def _copy_existing(self, existing: Path) -> None:
        """Append = the old rows (re-encoded to UTF-8 while we write) followed by the new ones."""
        with open(existing, encoding=self.opts.encoding, newline="") as src:
            if self.opts.header:
                self.columns = next(csv.reader([src.readline()], delimiter=self.opts.delimiter), None)
                src.seek(0)
            with open(self.temp, "w", encoding="utf-8", newline="") as dst:
                last = ""
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                    last = chunk[-1]
                if last not in ("\n", ""):
                    dst.write("\n")

    def write(self, batch: pl.DataFrame) -> None:
        if batch.width == 0:
            return
        batch = to_text_frame(batch, nested_as_json=True)
        header = False
        if self.columns is None:
            self.columns, header = batch.columns, self.opts.header
        else:
            new = [c for c in batch.columns if c not in self.columns]
            if new and not self.opts.header:
                raise ConnectorError(f"{self.target}: new column '{new[0]}' in a CSV without a header")
            if new:
                self._widen(new)
            batch = batch.select(
                pl.col(c) if c in batch.columns else pl.lit(None, pl.String).alias(c) for c in self.columns
            )
        batch.write_csv(self.fh, include_header=header, separator=self.opts.delimiter)

    def _widen(self, new: list[str]) -> None:
        """A batch brought new columns: rewrite what is written so far with the wider header."""
        self.fh.close()
        wider = self.temp.with_name(self.temp.name + ".w")
        rows = pl.scan_csv(self.temp, separator=self.opts.delimiter, infer_schema=False, glob=False)
        rows.with_columns(pl.lit(None, pl.String).alias(c) for c in new).sink_csv(
            wider, separator=self.opts.delimiter
        )
        os.replace(wider, self.temp)
        self.columns = [*(self.columns or []), *new]
        self.fh = open(self.temp, "ab")  # noqa: SIM115

    def finish(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        if not is_utf8(self.opts.encoding):
            encoded = self.temp.with_name(self.temp.name + ".enc")
            try:
                with (
                    open(self.temp, encoding="utf-8", newline="") as src,
                    open(encoded, "w", encoding=self.opts.encoding, newline="") as dst,
                ):
                    shutil.copyfileobj(src, dst, 1 << 20)
                    dst.flush()
                    os.fsync(dst.fileno())
            except UnicodeEncodeError as exc:
                encoded.unlink(missing_ok=True)
                raise DataError(
                    f"value {exc.object[exc.start : exc.end]!r} cannot be written as {self.opts.encoding}",
                    file=str(self.target),
                ) from None
            os.replace(encoded, self.temp)

    def discard(self) -> None:
        self.fh.close()
        remove_temp(self.temp)
