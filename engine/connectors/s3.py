"""The `aws_s3` connector: objects in S3 (or any S3-compatible store) in the `file` formats.

Objects are moved by obstore (Rust `object_store`: one wheel, no Python dependencies; streamed
downloads, multipart uploads). Each object is streamed to a local temporary file (gunzipped on the
way when it ends in `.gz` or `compression` says gzip) and read by the `file` connector's own format
readers; a destination writes its temporary file with the `file` connector's writers and uploads it
at the commit. An upload is one PUT or a multipart upload completed at its end, so no reader ever
sees half an object and a failed run leaves none.

Keys: `bucket`, and `key` (one object), `path` (a key or a glob: `*`, `?`, `[..]`, `**`) or
`prefix` (every object under it; `path`/`key` are then relative to it); `region`,
`access_key_id`, `secret_access_key` and `session_token` (secrets: write `{"secret": NAME}`),
`endpoint_url` (MinIO, Ceph, moto...), `format` and `options` as for `file`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import re
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field, PrivateAttr, field_validator, model_validator

from engine.connectors.base import DEFAULT_BATCH_ROWS, Connector, ConnectorConfig, Sink, Source
from engine.connectors.file import _OPTION_FORMATS, FileOptions, FormatName
from engine.connectors.formats import FORMATS, format_of
from engine.connectors.formats.common import FieldType, ReadOptions, WriteOptions, apply_declared, first_line
from engine.connectors.registry import register
from engine.errors import AggregatorError, ConnectorError, DataError

_GLOB = re.compile(r"[*?\[]")
_CHUNK = 8 << 20  # bytes per streamed download chunk


class _S3Config(ConnectorConfig):
    bucket: str = Field(description="bucket name")
    key: str | None = Field(None, description="one object's key")
    path: str | None = Field(None, description="a key or a glob (`*`, `?`, `[..]`, `**`)")
    prefix: str | None = Field(None, description="a folder of keys; `key`/`path` are relative to it")
    region: str = Field("us-east-1", description="the bucket's region")
    access_key_id: str | None = Field(None, description="access key id (default: the environment's)")
    secret_access_key: str | None = Field(None, description='secret key: {"secret": NAME}')
    session_token: str | None = Field(None, description='temporary credentials\' token: {"secret": NAME}')
    endpoint_url: str | None = Field(
        None, description="an S3-compatible endpoint (MinIO, Ceph...); http:// is allowed"
    )
    format: FormatName | None = Field(None, description="default: from the key's extension (.gz ignored)")
    compression: Literal["auto", "gzip", "none"] = Field(
        "auto", description="gzip objects: auto (keys ending in .gz), gzip, none"
    )
    options: FileOptions = Field(default_factory=FileOptions)
    connection_timeout: float = Field(30.0, gt=0, le=600, description="seconds to connect")
    retry_attempts: int = Field(3, ge=0, le=20, description="more tries after the first, on errors worth it")

    _clear: list[str] = PrivateAttr(default_factory=list)

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$", value):
            raise ValueError("bucket must be 3-63 characters: lower-case letters, digits, '.' and '-'")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("endpoint_url must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.key is not None and self.path is not None:
            raise ValueError("give key or path, not both")
        fmt = self.resolved_format  # raises a ValueError listing the formats
        for name in self.options.model_fields_set:
            if getattr(self.options, name) is not None and _OPTION_FORMATS[name] != fmt:
                raise ValueError(f"options.{name} applies to {_OPTION_FORMATS[name]} files, not {fmt}")
        from engine.spec.plan import SECRET_MASK

        self._clear = [
            k
            for k in ("secret_access_key", "session_token")
            if getattr(self, k) not in (None, "", SECRET_MASK)
        ]
        return self

    @property
    def pattern(self) -> str:
        """The key, glob or prefix, joined with `prefix`."""
        tail = self.key if self.key is not None else self.path or ""
        prefix = (self.prefix or "").lstrip("/")
        if prefix and tail:
            return prefix.rstrip("/") + "/" + tail.lstrip("/")
        if prefix:  # a folder: every object under it
            return prefix.rstrip("/") + "/"
        return tail.lstrip("/")

    @property
    def gzipped(self) -> bool:
        if self.compression == "auto":
            return self.pattern.lower().endswith(".gz")
        return self.compression == "gzip"

    @property
    def resolved_format(self) -> str:
        name = self.pattern
        if name.lower().endswith(".gz"):
            name = name[:-3]
        if not self.format and (not name or name.endswith("/")):
            raise ValueError("set `format`: a prefix has no extension to tell it from")
        return format_of(name, self.format)

    def _option_values(self) -> dict:
        o = self.options
        tsv = self.pattern.lower().removesuffix(".gz").endswith(".tsv")
        return {
            "delimiter": o.delimiter or ("\t" if tsv else ","),
            "header": True if o.header is None else o.header,
            "encoding": o.encoding or "utf8",
            "sheet": o.sheet,
            "record_path": o.record_path,
        }

    def url(self, key: str | None = None) -> str:
        return f"s3://{self.bucket}/{self.pattern if key is None else key}"

    def clear_secrets(self) -> list[str]:
        return list(self._clear)


with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "schema"')

    class S3SourceConfig(_S3Config):
        schema: dict[str, FieldType] | None = Field(  # type: ignore[assignment]
            None, description="force column types: {column: string|int|float|bool|date|datetime}"
        )


class S3SinkConfig(_S3Config):
    mode: Literal["overwrite", "append"] = Field(
        "overwrite", description="append: the object's old content, then the new rows (one new object)"
    )

    @model_validator(mode="after")
    def _one_object(self):
        if not self.pattern or self.pattern.endswith("/"):
            raise ValueError("a destination needs `key` (or `path`): the object to write")
        if _GLOB.search(self.pattern):
            raise ValueError("a destination's key cannot be a glob")
        return self


def make_store(config: _S3Config) -> Any:
    from obstore.store import S3Store

    kwargs: dict[str, Any] = {"region": config.region}
    if config.endpoint_url:
        kwargs["endpoint"] = config.endpoint_url
    if config.access_key_id:
        kwargs["access_key_id"] = config.access_key_id
    if config.secret_access_key:
        kwargs["secret_access_key"] = config.secret_access_key
    if config.session_token:
        kwargs["session_token"] = config.session_token
    client = {
        "allow_http": bool(config.endpoint_url and config.endpoint_url.lower().startswith("http://")),
        "connect_timeout": timedelta(seconds=config.connection_timeout),
    }
    try:
        retry = {
            "max_retries": config.retry_attempts,
            "retry_timeout": timedelta(seconds=config.connection_timeout * (config.retry_attempts + 1)),
            "backoff": {
                "init_backoff": timedelta(milliseconds=200),
                "max_backoff": timedelta(seconds=10),
                "base": 2,
            },
        }
        return S3Store(config.bucket, client_options=client, retry_config=retry, **kwargs)
    except Exception as exc:
        raise ConnectorError(f"aws_s3 {config.url('')}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """obstore's errors are several lines with the request's details: S3's own code and message
    when the answer carries them, else the first meaningful line; never a key."""
    text = str(exc)
    code = re.search(r"<Code>([^<]*)</Code>", text)
    message = re.search(r"<Message>([^<]*)</Message>", text)
    status = re.search(r"status code: (\d{3}[^:,]*)", text)
    if code:
        line = f"{code.group(1)}: {message.group(1) if message else ''}".rstrip(": ")
        if status:
            line = f"HTTP {status.group(1).strip()}, {line}"
    else:
        for marker in ("Client error with status", "Server error with status"):
            if marker in text:
                text = text[text.index(marker) :]
                break
        parts = [ln.strip() for ln in text.splitlines() if ln.strip()]
        line = " ".join(" ".join(parts[:2]).split()) if parts else type(exc).__name__
    for secret in ("secret_access_key", "session_token"):
        line = re.sub(rf"{secret}[^,\s]*", f"{secret}=***", line)
    return line if len(line) <= 300 else line[:299] + "…"


def _not_found(exc: BaseException) -> bool:
    return type(exc).__name__ == "NotFoundError" or "404" in str(exc).split("\n", 1)[0]


def _host(config: _S3Config) -> str:
    return config.endpoint_url or f"s3.{config.region}.amazonaws.com"


def _scratch(ctx: Any) -> str | None:
    """Where objects are staged: the data directory's tmp/ (on its disk, owner-only), not /tmp
    (often a RAM disk); the system's temporary folder when it cannot be made."""
    folder = Path(ctx.data_dir) / "tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(folder)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A key glob as a regex: `**` crosses `/`, `*` and `?` do not; `[..]` as in fnmatch."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape("["))
                i += 1
            else:
                out.append(fnmatch.translate(pattern[i : end + 1])[4:-3])
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


class S3Source(Source):
    config: S3SourceConfig

    def _fail(self, what: str, exc: BaseException) -> ConnectorError:
        return ConnectorError(f"aws_s3 {what} (host {_host(self.config)}): {_reason(exc)}")

    def keys(self, store: Any) -> list[str]:
        """The objects to read, in key order (hidden names, such as our temporary keys, skipped)."""
        import obstore

        pattern = self.config.pattern
        magic = _GLOB.search(pattern)
        if not magic and pattern and not pattern.endswith("/"):
            try:
                obstore.head(store, pattern)
            except Exception as exc:
                if _not_found(exc):
                    raise ConnectorError(
                        f"aws_s3 {self.config.url()} (host {_host(self.config)}): object not found"
                    ) from None
                raise self._fail(self.config.url(), exc) from None
            return [pattern]
        literal = pattern[: magic.start()] if magic else pattern
        list_prefix = literal[: literal.rfind("/") + 1] if "/" in literal else ""
        regex = _glob_regex(pattern) if magic else None
        found: list[str] = []
        try:
            for chunk in obstore.list(store, list_prefix or None, chunk_size=1000):
                for meta in chunk:
                    key = meta["path"]
                    if key.rsplit("/", 1)[-1].startswith("."):
                        continue
                    if regex is not None and not regex.match(key):
                        continue
                    if regex is None and not key.startswith(pattern):
                        continue
                    found.append(key)
        except Exception as exc:
            raise self._fail(f"listing {self.config.url(list_prefix)}", exc) from None
        if not found:
            raise ConnectorError(f"aws_s3 {self.config.url()} (host {_host(self.config)}): no object matches")
        return sorted(found)

    def _download(self, store: Any, key: str, local: Path) -> None:
        import obstore

        gz = self.config.compression == "gzip" or (
            self.config.compression == "auto" and key.lower().endswith(".gz")
        )
        try:
            result = obstore.get(store, key)
            raw = local.with_name(local.name + ".gz") if gz else local
            with open(raw, "wb") as fh:
                for chunk in result.stream(min_chunk_size=_CHUNK):
                    fh.write(chunk)
        except Exception as exc:
            if _not_found(exc):
                raise ConnectorError(
                    f"aws_s3 {self.config.url(key)} (host {_host(self.config)}): object not found"
                ) from None
            raise self._fail(f"reading {self.config.url(key)}", exc) from None
        if gz:
            try:
                with gzip.open(raw, "rb") as src, open(local, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
            except (OSError, EOFError) as exc:
                raise DataError(
                    f"not a valid gzip file: {first_line(exc)}", file=self.config.url(key)
                ) from None
            finally:
                raw.unlink(missing_ok=True)

    def read(self, limit: int | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pl.DataFrame]:
        if limit is not None and limit <= 0:
            return
        self._warn_clear()
        store = make_store(self.config)
        keys = self.keys(store)
        fmt = FORMATS[self.config.resolved_format]
        opts = ReadOptions(**self.config._option_values(), declared=dict(self.config.schema or {}))
        remaining = limit
        with tempfile.TemporaryDirectory(prefix="aggregator-s3-", dir=_scratch(self.ctx)) as tmp:
            for n, key in enumerate(keys):
                url = self.config.url(key)
                suffix = Path(key.removesuffix(".gz").removesuffix(".GZ")).suffix
                local = Path(tmp) / f"object-{n}{suffix}"
                forget = [
                    self.ctx.track("file", str(p)) for p in (local, local.with_name(local.name + ".gz"))
                ]
                try:
                    self._download(store, key, local)
                except BaseException:
                    local.unlink(missing_ok=True)
                    for f in forget:
                        f()
                    raise
                if local.stat().st_size == 0:
                    self.ctx.log("warning", f"{url}: empty object, no rows", self.name)
                    local.unlink()
                    for f in forget:
                        f()
                    continue
                first_row = 0
                try:
                    for batch in fmt.read(local, opts, remaining, batch_rows):
                        if remaining is not None and batch.height > remaining:
                            batch = batch.head(remaining)
                        if opts.declared:
                            batch = apply_declared(
                                batch,
                                opts.declared,
                                file=url,
                                first_row=first_row,
                                locate=lambda row, p=local: fmt.locate(p, opts, row),
                                fixed_columns=self.config.resolved_format != "xml",
                            )
                        first_row += batch.height
                        yield batch
                        if remaining is not None:
                            remaining -= batch.height
                            if remaining <= 0:
                                return
                except AggregatorError as exc:
                    raise _renamed(exc, local, url) from None
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"not valid {exc.encoding} text (at byte {exc.start})", file=url
                    ) from None
                except (pl.exceptions.PolarsError, ValueError, OSError) as exc:
                    raise DataError(f"cannot read the object: {first_line(exc)}", file=url) from None
                finally:
                    local.unlink(missing_ok=True)
                    for f in forget:
                        f()

    def _warn_clear(self) -> None:
        if self.config.clear_secrets():
            self.ctx.log(
                "warning",
                f"{', '.join(self.config.clear_secrets())} given in clear text: store it as a secret "
                'and write {"secret": "NAME"} in its place',
                self.name,
            )

    def check(self) -> None:
        self.keys(make_store(self.config))


def _renamed(exc: AggregatorError, local: Path, url: str) -> AggregatorError:
    """A reader's error names our temporary file: name the object instead."""
    text = str(exc).replace(str(local), url)
    return type(exc)(text) if isinstance(exc, ConnectorError) else DataError(text)


class S3Sink(Sink):
    """Writes a local temporary file with the `file` writers; the commit uploads it.

    `publish()` keeps the old object under a hidden key (`.<name>.bak-<random>`, a server-side copy)
    and uploads the new one (one PUT, or a multipart upload completed at its end: atomic);
    `unpublish()` copies the old object back (or deletes a new one that had no predecessor);
    `finalize()` deletes the kept copy. `close()` is `publish()` then `finalize()`."""

    config: S3SinkConfig

    def __init__(self, config: S3SinkConfig, ctx: Any, name: str = "destination"):
        super().__init__(config, ctx, name)
        self.key = config.pattern
        self.tmpdir: tempfile.TemporaryDirectory | None = None
        self.temp: Path | None = None
        self.writer: Any = None
        self.store: Any = None
        self.backup: str | None = None
        self._forget: list[Any] = []
        self.published = False
        self.upload: Path | None = None

    def _fail(self, what: str, exc: BaseException) -> ConnectorError:
        return ConnectorError(f"aws_s3 {what} (host {_host(self.config)}): {_reason(exc)}")

    def open(self) -> None:
        import obstore

        if self.config.clear_secrets():
            self.ctx.log(
                "warning",
                f"{', '.join(self.config.clear_secrets())} given in clear text: store it as a secret "
                'and write {"secret": "NAME"} in its place',
                self.name,
            )
        self.store = make_store(self.config)
        self.tmpdir = tempfile.TemporaryDirectory(prefix="aggregator-s3-", dir=_scratch(self.ctx))
        try:
            self._open_writer(obstore)
        except BaseException:
            self.abort()
            raise

    def _open_writer(self, obstore: Any) -> None:
        assert self.tmpdir is not None
        suffix = Path(self.key.removesuffix(".gz")).suffix
        folder = Path(self.tmpdir.name)
        self.temp = folder / f"new{suffix}"
        existing = folder / f"old{suffix}"
        # recorded with the run: a killed run's local files are removed at the next start
        self._forget = [
            self.ctx.track("file", str(p))
            for p in (self.temp, self.temp.with_name(self.temp.name + ".gz"), existing)
        ]
        append = self.config.mode == "append"
        if append:  # the writers append to a local target: fetch the object's current content
            source = S3Source(S3SourceConfig.model_validate(self._source_fields()), self.ctx, self.name)
            try:
                obstore.head(self.store, self.key)
                source._download(self.store, self.key, existing)
            except ConnectorError:
                raise
            except Exception as exc:
                if not _not_found(exc):
                    raise self._fail(f"reading {self.config.url()}", exc) from None
        opts = WriteOptions(
            **self.config._option_values(), compression=self.config.options.compression or "snappy"
        )
        try:
            self.writer = FORMATS[self.config.resolved_format].writer(self.temp, opts, existing, append)
        except Exception as exc:
            self.abort()
            raise DataError(f"cannot write: {first_line(exc)}", file=self.config.url()) from None

    def _source_fields(self) -> dict[str, Any]:
        data = self.config.model_dump(exclude={"mode"})
        data["key"], data["path"], data["prefix"] = self.key, None, None
        return data

    def write(self, batch: pl.DataFrame) -> None:
        if self.writer is None:
            raise ConnectorError(f"{self.config.url()}: write() before open()")
        try:
            self.writer.write(batch)
        except AggregatorError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise DataError(f"cannot write: {first_line(exc)}", file=self.config.url()) from None

    def flush(self) -> None:
        """Complete the local file (and gzip it): every data error shows before any commit."""
        if self.writer is None:
            return
        try:
            self.writer.finish()
            self.writer = None
            assert self.temp is not None
            if self.config.gzipped:
                packed = self.temp.with_name(self.temp.name + ".gz")
                with open(self.temp, "rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
                self.temp.unlink()
                self.upload = packed
            else:
                self.upload = self.temp
        except AggregatorError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise DataError(f"cannot write: {first_line(exc)}", file=self.config.url()) from None

    def publish(self) -> None:
        import obstore

        self.flush()
        if self.upload is None:
            raise ConnectorError(f"{self.config.url()}: close() before open()")
        try:
            try:
                obstore.head(self.store, self.key)
                exists = True
            except Exception as exc:
                if not _not_found(exc):
                    raise
                exists = False
            if exists:
                name = self.key.rsplit("/", 1)
                hidden = f".{name[-1]}.bak-{secrets.token_hex(4)}"
                self.backup = f"{name[0]}/{hidden}" if len(name) == 2 else hidden
                obstore.copy(self.store, self.key, self.backup)
            obstore.put(self.store, self.key, self.upload)  # atomic: one PUT or a completed multipart
            self.published = True
        except Exception as exc:
            self._drop_backup()
            raise self._fail(f"writing {self.config.url()}", exc) from None
        finally:
            self._drop_local()

    def unpublish(self) -> None:
        import obstore

        if not self.published:
            return
        if self.backup is not None:
            obstore.copy(self.store, self.backup, self.key)
            self._drop_backup()
        else:
            obstore.delete(self.store, self.key)
        self.published = False

    def finalize(self) -> None:
        self.published = False
        self._drop_backup()

    def close(self) -> None:
        self.publish()
        self.finalize()

    def abort(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):  # the folder goes anyway
                self.writer.discard()
            self.writer = None
        if not self.published:
            self._drop_backup()
        self._drop_local()

    def _drop_backup(self) -> None:
        import obstore

        if self.backup is not None and self.store is not None:
            try:
                obstore.delete(self.store, self.backup)
            except Exception as exc:
                self.ctx.log(
                    "warning", f"cannot delete {self.config.url(self.backup)}: {_reason(exc)}", self.name
                )
        self.backup = None

    def _drop_local(self) -> None:
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None
        for forget in self._forget:
            forget()
        self._forget = []
        self.temp = self.upload = None

    def check(self) -> None:
        """Write and delete a hidden probe object beside the target: proves the bucket is reachable
        and writable with these credentials."""
        import obstore

        store = make_store(self.config)
        folder = self.key.rsplit("/", 1)[0] + "/" if "/" in self.key else ""
        probe = f"{folder}.aggregator-probe-{secrets.token_hex(4)}"
        try:
            obstore.put(store, probe, b"")
            obstore.delete(store, probe)
        except Exception as exc:
            raise self._fail(f"writing {self.config.url(probe)}", exc) from None

    def describe_target(self) -> str:
        return self.config.url()


@register
class S3Connector(Connector):
    connector_type = "aws_s3"
    title = "Amazon S3 / object storage"
    SourceConfig = S3SourceConfig
    SinkConfig = S3SinkConfig

    source_class = S3Source
    sink_class = S3Sink
