"""The `file` connector: CSV, JSON, NDJSON, Parquet, Excel and XML files, as source and destination.

Sources take a path or a glob (`*`, `?`, `[..]`, `**`); matching files are read one after another
in name order (hidden files are skipped, so our own temporary files never match). A zero-byte file
gives no rows and a warning. Destinations write a temporary file beside the target and rename it
onto the target at `close()`, so the target is never half written.
"""

from __future__ import annotations

import codecs
import glob
import os
import secrets
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from engine.connectors.base import DEFAULT_BATCH_ROWS, Connector, ConnectorConfig, Sink, Source
from engine.connectors.formats import FORMATS, Format, format_of
from engine.connectors.formats.common import (
    FieldType,
    ReadOptions,
    WriteOptions,
    apply_declared,
    declared_dtypes,
    first_line,
)
from engine.connectors.registry import register
from engine.diskspace import as_no_space, fsync_dir
from engine.errors import AggregatorError, ConnectorError, DataError
from engine.lazy import lazy_module
from engine.recovery import remove_temp
from engine.secrets import is_inside, is_protected, protected_paths, real_path

pl = lazy_module("polars")

FormatName = Literal["csv", "json", "ndjson", "parquet", "excel", "xml"]
_OPTION_FORMATS = {
    "delimiter": "csv",
    "header": "csv",
    "encoding": "csv",
    "sheet": "excel",
    "record_path": "xml",
    "compression": "parquet",
}


class FileOptions(ConnectorConfig):
    delimiter: str | None = Field(None, description="csv: the field separator (default `,`; tab for .tsv)")
    header: bool | None = Field(None, description="csv: the first line names the columns (default true)")
    encoding: str | None = Field(None, description="csv: text encoding, e.g. utf8 or latin1 (default utf8)")
    sheet: str | int | None = Field(None, description="excel: sheet name or 0-based index (default: first)")
    record_path: str | None = Field(
        None, description="xml: record elements, e.g. `orders/order` or `//order`"
    )
    compression: Literal["snappy", "zstd", "lz4", "uncompressed"] | None = Field(
        None,
        description="parquet destination: snappy (default; fast), zstd (about half the size), lz4, uncompressed",
    )

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError("the delimiter must be one character")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(f"unknown encoding '{value}' (e.g. utf8, latin1, cp1252)") from None
        return value


class _FileConfig(ConnectorConfig):
    path: str = Field(description="file path, relative to the pipeline file's folder")
    format: FormatName | None = Field(None, description="default: from the file extension")
    options: FileOptions = Field(default_factory=FileOptions)

    @model_validator(mode="after")
    def _format_and_options_agree(self):
        fmt = format_of(self.path, self.format)  # raises a ValueError listing the formats
        for key in self.options.model_fields_set:
            if getattr(self.options, key) is not None and _OPTION_FORMATS[key] != fmt:
                raise ValueError(f"options.{key} applies to {_OPTION_FORMATS[key]} files, not {fmt}")
        return self

    @property
    def resolved_format(self) -> str:
        return format_of(self.path, self.format)

    def _option_values(self) -> dict:
        o = self.options
        tsv = Path(self.path).suffix.lower() == ".tsv"
        return {
            "delimiter": o.delimiter or ("\t" if tsv else ","),
            "header": True if o.header is None else o.header,
            "encoding": o.encoding or "utf8",
            "sheet": o.sheet,
            "record_path": o.record_path,
        }


# The spec names the option `schema`, which shadows pydantic's deprecated `BaseModel.schema()`; an
# alias would leak the Python name into dumps and error messages, so the warning is silenced instead.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "schema"')

    class FileSourceConfig(_FileConfig):
        path: str = Field(
            description="file path or glob (`*`, `?`, `[..]`, `**`), relative to the pipeline's folder"
        )
        schema: dict[str, FieldType] | None = Field(  # type: ignore[assignment]
            None, description="force column types: {column: string|int|float|bool|date|datetime}"
        )


class FileSinkConfig(_FileConfig):
    mode: Literal["overwrite", "append"] = "overwrite"


SMALL_FILE_BYTES = 256 << 20
SMALL_FILE_BATCH_ROWS = 250_000


def _batch_rows_for(path: Path, batch_rows: int) -> int:
    """Smaller batches for smaller files, so that reading, transforming and writing still overlap
    (a file of one batch runs its stages one after the other); large files keep bigger batches,
    which cost less per-batch overhead."""
    return min(batch_rows, SMALL_FILE_BATCH_ROWS) if _size(path) < SMALL_FILE_BYTES else batch_rows


class FileSource(Source):
    config: FileSourceConfig

    @property
    def _format(self) -> Format:
        return FORMATS[self.config.resolved_format]

    def _options(self) -> ReadOptions:
        return ReadOptions(**self.config._option_values(), declared=dict(self.config.schema or {}))

    def files(self) -> list[Path]:
        pattern = self.ctx.resolve_path(self.config.path)
        if glob.has_magic(str(pattern)):
            found = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if os.path.isfile(p))
            if not found:
                raise ConnectorError(f"{pattern}: no file matches")
        elif pattern.is_dir():  # a folder named where a file belongs: say so, not "not found"
            raise ConnectorError(
                f"{pattern} is a folder, not a file (name a file, or a glob such as {pattern / '*.csv'})"
            )
        elif not pattern.is_file():
            raise ConnectorError(f"{pattern}: file not found")
        else:
            found = [pattern]
        from engine.spec.paths_policy import allowed_roots, confine

        protected = protected_paths(self.ctx.data_dir)
        roots = allowed_roots()
        for path in found:
            if real_path(path) in protected:
                raise ConnectorError(f"{path}: the secret store's files are not readable by a pipeline")
            # The spec's path was checked at validation; what a glob matched, or a symbolic link
            # inside an allowed folder, is checked here, where the file is really opened.
            outside = confine(str(path), None, roots)
            if outside:
                raise ConnectorError(outside)
        return found

    def read(self, limit: int | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pl.DataFrame]:
        if limit is not None and limit <= 0:
            return
        files = self.files()
        opts = self._options()
        union = self._union_schema(files, opts) if len(files) > 1 else None
        remaining = limit
        for path in files:
            if _size(path) == 0:
                self.ctx.log("warning", f"{path}: empty file, no rows", self.name)
                continue
            first_row = 0
            rows = _batch_rows_for(path, batch_rows)
            for batch in _guarded(self._format.read(path, opts, remaining, rows), path):
                if remaining is not None and batch.height > remaining:
                    batch = batch.head(remaining)
                if opts.declared:
                    batch = apply_declared(
                        batch,
                        opts.declared,
                        file=path,
                        first_row=first_row,
                        locate=lambda row, p=path: self._format.locate(p, opts, row),
                        fixed_columns=self.config.resolved_format != "xml",
                    )
                first_row += batch.height
                if union is not None:
                    batch = batch.select(
                        pl.col(c).cast(t) if c in batch.columns else pl.lit(None, t).alias(c)
                        for c, t in union.items()
                    )
                yield batch
                if remaining is not None:
                    remaining -= batch.height
                    if remaining <= 0:
                        return
            if first_row == 0 and (empty := self._empty_frame(path, opts, union)) is not None:
                yield empty  # a header without rows: no data, but the columns are known

    def _empty_frame(self, path: Path, opts: ReadOptions, union: pl.Schema | None) -> pl.DataFrame | None:
        if union is not None:
            return pl.DataFrame(schema=union)
        found = self._format.schema(path, opts) if self._format.schema else None
        if not found:
            return None
        return pl.DataFrame(
            schema={c: declared_dtypes().get(opts.declared.get(c, ""), t) for c, t in found.items()}
        )

    def _union_schema(self, files: list[Path], opts: ReadOptions) -> pl.Schema | None:
        """Files of one glob are unioned by column name. Where every file's schema is known up front
        (CSV, Parquet), each batch is given the union's columns and types; other formats keep each
        file's own columns (the consumer concatenates batches by name)."""
        if self.config.resolved_format not in ("csv", "parquet"):
            return None
        try:
            return self._schema_of(files, opts)
        except (pl.exceptions.PolarsError, OSError):
            return None  # the bad file's own read reports the problem, with its line

    def _schema_of(self, files: list[Path], opts: ReadOptions) -> pl.Schema | None:
        reader = self._format.schema
        if reader is None:
            return None
        schemas = []
        for path in files:
            if path.stat().st_size == 0:
                continue
            found = reader(path, opts)
            if found is None:
                return None
            schemas.append(
                pl.Schema({c: declared_dtypes().get(opts.declared.get(c, ""), t) for c, t in found.items()})
            )
        if not schemas:
            return None
        return pl.concat([pl.DataFrame(schema=s) for s in schemas], how="diagonal_relaxed").schema

    def schema(self) -> pl.Schema | None:
        try:
            return self._schema_of(self.files(), self._options())
        except (AggregatorError, pl.exceptions.PolarsError, OSError):
            return None

    def check(self) -> None:
        for path in self.files():
            try:
                with open(path, "rb") as fh:
                    fh.read(1)
            except OSError as exc:
                raise ConnectorError(f"{path}: cannot read ({exc.strerror})") from None


def _nothing() -> None:
    pass


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise ConnectorError(f"{path}: {exc.strerror or exc}") from None


def _guarded(batches: Iterator[pl.DataFrame], path: Path) -> Iterator[pl.DataFrame]:
    """Whatever a reader raises becomes one clear line naming the file (never a traceback)."""
    try:
        yield from batches
    except AggregatorError:
        raise
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid {exc.encoding} text (at byte {exc.start})", file=str(path)) from None
    except OSError as exc:
        raise ConnectorError(f"{path}: {exc.strerror or exc}") from None
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise DataError(f"cannot read the file: {first_line(exc)}", file=str(path)) from None


class FileSink(Sink):
    """Writes a hidden temporary file beside the target (`.<name>.tmp-<random>`); `flush()` completes
    and syncs it; the commit renames it onto the target.

    The commit can be taken back until the run is over, so that a run with several destinations
    commits all of them or none: `publish()` renames, keeping the old target under a hidden name
    (`.<name>.bak-<random>`, a hard link: no copy), `unpublish()` puts the old content back (or
    removes a target that did not exist), `finalize()` drops the kept copy. `close()` is `publish()`
    then `finalize()`. Every hidden file is recorded with the run (`ctx.track`) before it is created,
    so a killed run's leftovers are removed when the data directory is next opened."""

    config: FileSinkConfig

    def __init__(self, config: FileSinkConfig, ctx, name: str = "destination"):
        super().__init__(config, ctx, name)
        self.target = ctx.resolve_path(config.path)
        if is_inside(self.target, ctx.plugins_dir) or is_protected(self.target, ctx.data_dir):
            what = "the plugins folder" if is_inside(self.target, ctx.plugins_dir) else "the secret store"
            raise ConnectorError(f"{self.target}: a pipeline may not write into {what}")
        self.temp: Path | None = None
        self.writer = None
        self.backup: Path | None = None  # the old target, kept until finalize()
        self.published = False  # renamed onto the target, not finalized yet
        self._forget_temp = self._forget_backup = _nothing

    def open(self) -> None:
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            full = as_no_space(exc, self.target.parent)
            raise full or ConnectorError(
                f"{self.target.parent}: cannot create the folder ({exc.strerror})"
            ) from None
        self.temp = self._hidden("tmp")
        self._forget_temp = self.ctx.track("file", str(self.temp))
        opts = WriteOptions(
            **self.config._option_values(), compression=self.config.options.compression or "snappy"
        )
        writer_class = FORMATS[self.config.resolved_format].writer
        try:
            self.writer = writer_class(self.temp, opts, self.target, self.config.mode == "append")
        except Exception as exc:
            raise self._failed(exc) from None

    def _hidden(self, kind: str) -> Path:
        return self.target.with_name(f".{self.target.name}.{kind}-{secrets.token_hex(4)}")

    def write(self, batch: pl.DataFrame) -> None:
        if self.writer is None:
            raise ConnectorError(f"{self.target}: write() before open()")
        try:
            self.writer.write(batch)
        except Exception as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        """Complete and sync the temporary file, and check that the rename can happen: everything
        that can fail happens here, before any destination of the run commits."""
        if self.writer is None:
            return
        try:
            self.writer.finish()
            self.writer = None
            if self.target.is_dir():
                raise ConnectorError(f"{self.target}: is a folder, not a file")
            if self.target.exists():
                shutil.copymode(self.target, self.temp)  # keep the permissions the old file had
        except Exception as exc:
            raise self._failed(exc) from None

    def publish(self) -> None:
        """Commit, reversibly: the new content takes the target's name; the old one is kept aside."""
        if self.temp is None:
            raise ConnectorError(f"{self.target}: close() before open()")
        self.flush()
        try:
            if self.target.is_file():
                backup = self._hidden("bak")
                self._forget_backup = self.ctx.track("file", str(backup))
                self.backup = backup
                try:
                    os.link(self.target, backup)
                except OSError:  # no hard links on this file system: a copy
                    shutil.copy2(self.target, backup)
            os.replace(self.temp, self.target)  # the one step that makes the new content visible
            self.published = True
            self.temp = None
            self._forget_temp()
            fsync_dir(self.target.parent)
        except Exception as exc:
            raise self._failed(exc) from None

    def unpublish(self) -> None:
        """Take a publish() back: the old content (or no file, where there was none) returns."""
        if not self.published:
            return
        if self.backup is not None:
            os.replace(self.backup, self.target)
            self.backup = None
            self._forget_backup()
        else:
            self.target.unlink(missing_ok=True)
        self.published = False
        fsync_dir(self.target.parent)

    def finalize(self) -> None:
        """The run is committed: drop the old content kept by publish()."""
        self.published = False
        if self.backup is not None:
            self.backup.unlink(missing_ok=True)
            self.backup = None
            self._forget_backup()

    def close(self) -> None:
        self.publish()
        self.finalize()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.discard()
            self.writer = None
        if self.temp is not None:
            remove_temp(self.temp)
            self.temp = None
            self._forget_temp()
        if self.backup is not None and not self.published:  # a publish() that failed half way
            self.backup.unlink(missing_ok=True)
            self.backup = None
            self._forget_backup()

    def _failed(self, exc: Exception) -> Exception:
        """Remove the temporary file; the error to raise, as one clear line."""
        self.abort()
        full = as_no_space(exc, self.target)
        if full is not None:
            return full
        if isinstance(exc, AggregatorError):
            return exc
        if isinstance(exc, OSError):
            return ConnectorError(f"{self.target}: {exc.strerror or exc}")
        return DataError(f"cannot write: {first_line(exc)}", file=str(self.target))

    def check(self) -> None:
        folder = self.target.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise ConnectorError(f"{folder}: is a file, not a folder; the destination folder is not writable")
        if not os.access(folder, os.W_OK):
            raise ConnectorError(f"{folder}: folder is not writable")

    def describe_target(self) -> str:
        return str(self.target)


@register
class FileConnector(Connector):
    connector_type = "file"
    title = "File"
    SourceConfig = FileSourceConfig
    SinkConfig = FileSinkConfig

    source_class = FileSource
    sink_class = FileSink
