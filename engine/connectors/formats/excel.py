"""Excel (.xlsx): read by fastexcel (calamine), written by xlsxwriter, both through Polars.

A workbook is small by nature and cannot be appended to in place, so both directions hold one sheet
in memory. `sheet` is a sheet name or a 0-based index (default: the first sheet).

Before calamine reads an .xlsx/.xlsm sheet, `guard_sheet` streams through the sheet's XML once and
checks the cell references: calamine allocates the whole rectangle from A1 to the farthest cell, so
one broken reference (`XFD1048576` in a 17 KB file) would make it allocate billions of cells. A
sheet whose rectangle is far larger than its cells is refused, naming the cell.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from engine.connectors.formats.common import ReadOptions, WriteOptions, first_line, to_text_frame
from engine.errors import ConnectorError, DataError

# Excel's own limits: columns A..XFD, rows 1..1048576.
MAX_COLUMNS, MAX_ROWS = 16_384, 1_048_576
# A rectangle up to this many cells is read whatever its shape (a few hundred MB at most); beyond
# it, it must be mostly filled: at most SPARSE_FACTOR times the number of cells present.
FREE_AREA, SPARSE_FACTOR = 5_000_000, 4
# Only cells (`<c r="B7">`) have an `r` of letters and digits; rows have digits only.
_CELL = re.compile(rb' r="([A-Za-z]+)([0-9]+)"')
_CELL_COLUMN = re.compile(rb' r="([A-Za-z]+)[0-9]')
_CELL_ROW = re.compile(rb' r="[A-Za-z]+([0-9]+)"')
_SHEET = re.compile(rb"<(?:\w+:)?sheet\b[^>]*?>")
_ATTR = re.compile(rb'([\w:]+)="([^"]*)"')
_RELATIONSHIP = re.compile(rb"<(?:\w+:)?Relationship\b[^>]*?>")


def _column_number(letters: bytes) -> int:
    number = 0
    for char in letters.upper():
        number = number * 26 + char - ord("A") + 1
    return number


def _sheet_part(book: zipfile.ZipFile, sheet: str | int | None) -> tuple[str, str] | None:
    """(sheet name, its XML part in the zip) for a sheet name or 0-based index; None if not found
    (the reader then reports the missing sheet itself)."""
    try:
        sheets = [dict(_ATTR.findall(m)) for m in _SHEET.findall(book.read("xl/workbook.xml"))]
        rels = [
            dict(_ATTR.findall(m)) for m in _RELATIONSHIP.findall(book.read("xl/_rels/workbook.xml.rels"))
        ]
    except KeyError:
        return None
    if isinstance(sheet, str):
        chosen = next((s for s in sheets if s.get(b"name", b"").decode() == sheet), None)
    else:
        index = sheet or 0
        chosen = sheets[index] if 0 <= index < len(sheets) else None
    if chosen is None:
        return None
    rel_id = next((v for k, v in chosen.items() if k.endswith(b":id")), None)
    target = next((r.get(b"Target") for r in rels if r.get(b"Id") == rel_id), None)
    if target is None:
        return None
    name = target.decode().lstrip("/")
    return chosen.get(b"name", b"?").decode(), name if name.startswith("xl/") else f"xl/{name}"


def _chunks(book: zipfile.ZipFile, part: str) -> Iterator[bytes]:
    """The sheet's XML in chunks of about 1 MiB, each cut before a `<` so that no tag is split."""
    with book.open(part) as stream:
        tail = b""
        while chunk := stream.read(1 << 20):
            data = tail + chunk
            cut = data.rfind(b"<")
            data, tail = (data[:cut], data[cut:]) if cut > 0 else (data, b"")
            yield data
        yield tail


def _cell_error(path: Path, name: str, ref: str, why: str) -> DataError:
    return DataError(f"sheet '{name}' cell {ref}: {why}", file=str(path))


def guard_sheet(path: Path, sheet: str | int | None) -> None:
    """Refuse a sheet whose cell references would make the reader allocate far more than the sheet
    holds (one DataError naming the sheet and the cell); one streaming pass, no sheet in memory."""
    try:
        book = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return  # not an .xlsx (an .xls, or broken): the reader reports it
    with book:
        found = _sheet_part(book, sheet)
        if found is None or found[1] not in book.namelist():
            return
        name, part = found
        cells, max_row, max_col = 0, 0, 0
        for data in _chunks(book, part):
            columns = _CELL_COLUMN.findall(data)  # the per-cell work stays in C: regex, set, map
            if not columns:
                continue
            cells += len(columns)
            max_col = max(max_col, *map(_column_number, set(columns)))
            max_row = max(max_row, *map(int, set(_CELL_ROW.findall(data))))
        area = max_row * max_col
        bad_reference = max_row > MAX_ROWS or max_col > MAX_COLUMNS
        if not bad_reference and (area <= FREE_AREA or area <= SPARSE_FACTOR * cells):
            return
        # The error path: find the cell to name (the first invalid one, or the farthest).
        farthest, far = "?", 0
        for data in _chunks(book, part):
            for letters, digits in _CELL.findall(data):
                col, row = _column_number(letters), int(digits)
                ref = (letters + digits).decode()
                if bad_reference and (col > MAX_COLUMNS or row > MAX_ROWS):
                    raise _cell_error(
                        path, name, ref, "not a valid cell reference (the last cell of a sheet is XFD1048576)"
                    )
                if row * col > far:
                    farthest, far = ref, row * col
    raise _cell_error(
        path,
        name,
        farthest,
        f"reading up to it would take {area:,} cells for the {cells:,} the sheet holds"
        " (a broken cell reference?)",
    )


def _load(path: Path, sheet: str | int | None, header: bool, limit: int | None = None) -> pl.DataFrame:
    guard_sheet(path, sheet)
    where: dict = {"sheet_name": sheet} if isinstance(sheet, str) else {"sheet_id": (sheet or 0) + 1}
    try:
        return pl.read_excel(
            path,
            **where,
            has_header=header,
            infer_schema_length=None,
            raise_if_empty=False,
            read_options={"n_rows": limit} if limit is not None else None,
        )
    except ValueError as exc:
        if "no matching sheet" in str(exc):
            raise ConnectorError(
                f"{path}: no sheet {sheet!r} (sheets: {', '.join(_sheet_names(path))})"
            ) from None
        raise DataError(f"not a readable Excel file: {first_line(exc)}", file=str(path)) from None
    except Exception as exc:  # fastexcel raises its own exception types
        raise DataError(f"not a readable Excel file: {first_line(exc)}", file=str(path)) from None


def _sheet_names(path: Path) -> list[str]:
    import fastexcel

    return list(fastexcel.read_excel(path).sheet_names)


def read(path: Path, opts: ReadOptions, limit: int | None, batch_rows: int) -> Iterator[pl.DataFrame]:
    frame = _load(path, opts.sheet, opts.header, limit)
    for offset in range(0, frame.height, batch_rows):
        yield frame.slice(offset, batch_rows)


def locate(path: Path, opts: ReadOptions, row: int) -> dict:
    return {"record": row + 1}


class Writer:
    """Collects the batches and writes the workbook at finish. Append rewrites the workbook with
    the old rows of the sheet followed by the new ones (other sheets are not kept)."""

    def __init__(self, temp: Path, opts: WriteOptions, target: Path, append: bool):
        self.temp, self.opts = temp, opts
        self.frames: list[pl.DataFrame] = []
        if append and target.exists():
            self.frames.append(_load(target, opts.sheet, opts.header))

    def write(self, batch: pl.DataFrame) -> None:
        if batch.width:
            self.frames.append(to_text_frame(batch, nested_as_json=True))

    def finish(self) -> None:
        frame = pl.concat(self.frames, how="diagonal_relaxed") if self.frames else pl.DataFrame()
        sheet = self.opts.sheet if isinstance(self.opts.sheet, str) else f"Sheet{(self.opts.sheet or 0) + 1}"
        if frame.width == 0:
            import xlsxwriter

            book = xlsxwriter.Workbook(str(self.temp))
            book.add_worksheet(sheet)
            book.close()
        else:
            frame.write_excel(self.temp, worksheet=sheet, include_header=self.opts.header, autofit=True)
        with open(self.temp, "rb+") as fh:
            os.fsync(fh.fileno())

    def discard(self) -> None:
        self.frames.clear()
        self.temp.unlink(missing_ok=True)
