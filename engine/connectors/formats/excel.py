"""Excel (.xlsx): read by fastexcel (calamine), written by xlsxwriter, both through Polars.

A workbook is small by nature and cannot be appended to in place, so both directions hold one sheet
in memory. `sheet` is a sheet name or a 0-based index (default: the first sheet).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from engine.connectors.formats.common import ReadOptions, WriteOptions, first_line, to_text_frame
from engine.errors import ConnectorError, DataError


def _load(path: Path, sheet: str | int | None, header: bool, limit: int | None = None) -> pl.DataFrame:
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
