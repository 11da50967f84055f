"""The `custom` connector: a class of the user's own, from the data directory's `plugins/` folder.

`{"connector_type": "custom", "implementation": "module.Class", "config": {...}}` loads `Class` from
`<data dir>/plugins/<module>.py` (the same trusted loader as `python` transforms: never from
`sys.path`, never code written in the spec) and calls it with `config`, a free-form dict (its
`{"secret": NAME}` references resolved).

As a source the class offers, fastest first:
- `fetch_batches()`: an iterable of Arrow tables / record batches or Polars frames;
- `fetch_data()`: the user guide's template, a list (or any iterable) of dicts, or one frame.
As a destination:
- `write_batch(frame)` for every batch (a Polars DataFrame; an Arrow table with
  `"batch_format": "arrow"`, a list of dicts with `"records"`), or `write_data(records)`;
- `commit()` when the run commits (make the data visible), `rollback()` when it fails (drop what
  `write_batch` was given). Both are optional, but without them the class cannot be atomic.
Both roles call `connect()` first and `close()` last when the class has them; "test connection" calls
`test_connection()` when the class has one, else `connect()` then `close()`.

Whatever the class raises is one line naming the class, the method and the error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import polars as pl
from pydantic import Field, field_validator

from engine.connectors.base import (
    DEFAULT_BATCH_ROWS,
    Connector,
    ConnectorConfig,
    Sink,
    Source,
    one_line_error,
)
from engine.connectors.registry import register
from engine.errors import AggregatorError, ConnectorError

_IMPLEMENTATION = r"^[A-Za-z_]\w*[.:][A-Za-z_]\w*$"


class CustomConfig(ConnectorConfig):
    implementation: str = Field(
        description="`module.Class`: the class `Class` in the data directory's plugins/<module>.py",
        json_schema_extra={"pattern": _IMPLEMENTATION},
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description='free-form settings handed to the class\'s constructor ({"secret": NAME} resolved)',
    )

    @field_validator("implementation")
    @classmethod
    def _module_dot_class(cls, ref: str) -> str:
        if not re.match(_IMPLEMENTATION, ref):
            raise ValueError(
                "implementation must be 'module.Class' (a plugins/<module>.py file in the data "
                "directory and its class; nothing else is loaded)"
            )
        return ref.replace(":", ".")

    @property
    def module_and_class(self) -> tuple[str, str]:
        module, _, name = self.implementation.partition(".")
        return module, name


class CustomSourceConfig(CustomConfig):
    pass


class CustomSinkConfig(CustomConfig):
    batch_format: Literal["polars", "arrow", "records"] = Field(
        "polars",
        description="what write_batch receives: a Polars DataFrame, an Arrow table, or a list of dicts",
    )


def load_class(config: CustomConfig, ctx: Any) -> type:
    """The plugin's class, loaded by the `python` transform's loader (plugins folder only)."""
    from engine.errors import TransformError
    from engine.transforms.code import load_plugin

    module, name = config.module_and_class
    try:
        found = load_plugin(f"{module}:{name}", ctx.plugins_dir)
    except TransformError as exc:
        text = str(exc).replace("has no function", "has no class")
        raise ConnectorError(f"custom connector {config.implementation}: {text}") from exc
    if not isinstance(found, type):
        raise ConnectorError(f"custom connector {config.implementation}: {name} is not a class")
    return found


class _Plugin:
    """One instance of the user's class, every call guarded into one line."""

    def __init__(self, config: CustomConfig, ctx: Any):
        self.ref = config.implementation
        cls = load_class(config, ctx)
        self.obj = self.call_on(cls, "__init__", dict(config.config))

    def call_on(self, target: Any, method: str, *args: Any) -> Any:
        try:
            return target(*args)
        except AggregatorError:
            raise
        except Exception as exc:
            raise self.failed(method, exc) from exc

    def failed(self, method: str, exc: BaseException) -> ConnectorError:
        return ConnectorError(f"custom connector {self.ref}: {method}() failed: {one_line_error(exc)}")

    def has(self, method: str) -> bool:
        return callable(getattr(self.obj, method, None))

    def call(self, method: str, *args: Any) -> Any:
        return self.call_on(getattr(self.obj, method), method, *args)

    def call_if(self, method: str, *args: Any) -> Any:
        return self.call(method, *args) if self.has(method) else None

    def test_connection(self) -> None:
        if self.has("test_connection"):
            result = self.call("test_connection")
            if result is False:
                raise ConnectorError(f"custom connector {self.ref}: test_connection() returned False")
            return
        self.call_if("connect")
        self.call_if("close")


def to_frame(item: Any, where: str) -> pl.DataFrame:
    """A frame from what a plugin hands back: Polars, Arrow, pandas, a dict of columns or records."""
    if isinstance(item, pl.DataFrame):
        return item
    if isinstance(item, pl.LazyFrame):
        return item.collect()
    module = type(item).__module__
    if module.startswith("pyarrow"):
        import pyarrow as pa

        if isinstance(item, pa.RecordBatch):
            item = pa.Table.from_batches([item])
        if isinstance(item, pa.Table):
            frame = pl.from_arrow(item)
            assert isinstance(frame, pl.DataFrame)
            return frame
    if module.startswith("pandas"):
        return pl.from_pandas(item)
    if isinstance(item, dict):  # columns: {"a": [...], "b": [...]}
        return pl.DataFrame(item)
    if isinstance(item, list | tuple):
        if item and not all(isinstance(r, dict) for r in item):
            bad = next(r for r in item if not isinstance(r, dict))
            raise ValueError(f"{where} returned a list holding {type(bad).__name__}, not dicts")
        return pl.from_dicts(item, infer_schema_length=None) if item else pl.DataFrame()
    raise ValueError(
        f"{where} returned {type(item).__name__}; expected a list of dicts, a Polars DataFrame or an Arrow table"
    )


class CustomSource(Source):
    config: CustomSourceConfig

    def read(self, limit: int | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pl.DataFrame]:
        if limit is not None and limit <= 0:
            return
        plugin = _Plugin(self.config, self.ctx)
        remaining = limit
        plugin.call_if("connect")
        try:
            if plugin.has("fetch_batches"):
                method = "fetch_batches"
                items = plugin.call("fetch_batches")
                if not isinstance(items, Iterable) or isinstance(items, dict):
                    items = [items]
            elif plugin.has("fetch_data"):
                method = "fetch_data"
                data = plugin.call("fetch_data")
                if isinstance(data, list | tuple) or not isinstance(data, Iterable) or isinstance(data, dict):
                    items = [data]
                else:  # a generator of dicts: gathered a batch at a time
                    items = _chunks(data, batch_rows)
            else:
                raise ConnectorError(
                    f"custom connector {plugin.ref}: the class has neither fetch_batches() nor fetch_data()"
                )
            for frame in self._frames(plugin, method, items):
                for start in range(0, max(frame.height, 1), batch_rows):
                    part = frame.slice(start, batch_rows)
                    if remaining is not None and part.height > remaining:
                        part = part.head(remaining)
                    yield part
                    if remaining is not None:
                        remaining -= part.height
                        if remaining <= 0:
                            return
        finally:
            plugin.call_if("close")

    def _frames(self, plugin: _Plugin, method: str, items: Iterable[Any]) -> Iterator[pl.DataFrame]:
        iterator = iter(items)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except AggregatorError:
                raise
            except Exception as exc:
                raise plugin.failed(method, exc) from exc
            try:
                frame = to_frame(item, f"{method}()")
            except (ValueError, TypeError, pl.exceptions.PolarsError) as exc:
                text = " ".join(str(exc).split())
                if not isinstance(exc, ValueError) or isinstance(exc, pl.exceptions.PolarsError):
                    text = f"{method}() returned data that is not a table: {text}"
                raise ConnectorError(f"custom connector {plugin.ref}: {text}") from None
            yield frame

    def check(self) -> None:
        _Plugin(self.config, self.ctx).test_connection()


def _chunks(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class CustomSink(Sink):
    """`open()` builds the class and connects; `write` hands it each batch; `close()` commits (and
    closes); `abort()` rolls back (and closes)."""

    config: CustomSinkConfig

    def __init__(self, config: CustomSinkConfig, ctx: Any, name: str = "destination"):
        super().__init__(config, ctx, name)
        self.plugin: _Plugin | None = None

    def open(self) -> None:
        plugin = _Plugin(self.config, self.ctx)
        if not (plugin.has("write_batch") or plugin.has("write_data")):
            raise ConnectorError(
                f"custom connector {plugin.ref}: the class has neither write_batch() nor write_data()"
            )
        plugin.call_if("connect")
        self.plugin = plugin

    def write(self, batch: pl.DataFrame) -> None:
        plugin = self.plugin
        if plugin is None:
            raise ConnectorError(f"custom connector {self.config.implementation}: write() before open()")
        if plugin.has("write_batch"):
            fmt = self.config.batch_format
            payload: Any = (
                batch.to_arrow() if fmt == "arrow" else batch.to_dicts() if fmt == "records" else batch
            )
            plugin.call("write_batch", payload)
        else:
            plugin.call("write_data", batch.to_dicts())

    def close(self) -> None:
        plugin, self.plugin = self.plugin, None
        if plugin is None:
            return
        try:
            plugin.call_if("commit")
        except BaseException:
            try:
                plugin.call_if("rollback")
            finally:
                self._close(plugin)
            raise
        self._close(plugin)

    def abort(self) -> None:
        plugin, self.plugin = self.plugin, None
        if plugin is None:
            return
        try:
            plugin.call_if("rollback")
        finally:
            self._close(plugin)

    def _close(self, plugin: _Plugin) -> None:
        try:
            plugin.call_if("close")
        except ConnectorError as exc:  # the data is committed (or rolled back) already: say so, go on
            self.ctx.log("warning", str(exc), self.name)

    def check(self) -> None:
        _Plugin(self.config, self.ctx).test_connection()

    def describe_target(self) -> str:
        return f"custom {self.config.implementation}"


@register
class CustomConnector(Connector):
    connector_type = "custom"
    title = "Custom (plugin class)"
    SourceConfig = CustomSourceConfig
    SinkConfig = CustomSinkConfig

    source_class = CustomSource
    sink_class = CustomSink
