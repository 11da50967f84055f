"""The connector contract (architecture rule 5, after Telegraf's Input/ServiceInput/Output).

- A polled source implements `read()`: an iterator of Polars DataFrame batches.
- A streaming source implements `start(emit)` and `stop()` (field protocols, MQTT).
- A sink implements `open()`, `write(batch)` and `close()`; `close()` commits atomically and
  `abort()` throws away everything written so far (no partial file, no half-written table).
- Every connector implements `check()` for "test connection".
The executor owns retries, statistics and logging so that connectors do not reinvent them.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from engine.context import RunContext
from engine.lazy import lazy_module

pl = lazy_module("polars")

# Rows per batch. Measured on the 10 M-row benchmark: 300 k rows keep the run as fast as 500 k did
# and hold 100-150 MB less in flight (each stage of the pipeline holds about one batch).
DEFAULT_BATCH_ROWS = 300_000


class ConnectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


def normalize_type(name: str) -> str:
    """`"REST API"`, `"rest-api"` and `"rest_api"` are the same connector type."""
    return re.sub(r"[\s\-]+", "_", name.strip()).lower()


class Connector(ABC):
    connector_type: ClassVar[str]
    title: ClassVar[str] = ""
    SourceConfig: ClassVar[type[ConnectorConfig] | None] = None
    SinkConfig: ClassVar[type[ConnectorConfig] | None] = None

    @classmethod
    def roles(cls) -> list[str]:
        return [r for r, m in (("source", cls.SourceConfig), ("destination", cls.SinkConfig)) if m]

    # The classes a node of this type runs, built as cls(config, ctx, name); a connector that
    # needs more than that overrides make_source / make_sink instead.
    source_class: ClassVar[Callable[..., Source | StreamingSource] | None] = None
    sink_class: ClassVar[Callable[..., Sink] | None] = None

    @classmethod
    def make_source(cls, config: ConnectorConfig, ctx: RunContext, name: str) -> Source | StreamingSource:
        if cls.source_class is None:
            raise NotImplementedError(f"{cls.connector_type} is not a source")
        return cls.source_class(config, ctx, name)

    @classmethod
    def make_sink(cls, config: ConnectorConfig, ctx: RunContext, name: str) -> Sink:
        if cls.sink_class is None:
            raise NotImplementedError(f"{cls.connector_type} is not a destination")
        return cls.sink_class(config, ctx, name)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "connector_type": cls.connector_type,
            "title": cls.title or cls.connector_type,
            "roles": cls.roles(),
            "source_schema": cls.SourceConfig.model_json_schema() if cls.SourceConfig else None,
            "destination_schema": cls.SinkConfig.model_json_schema() if cls.SinkConfig else None,
        }


class Source(ABC):
    """A polled source. `read` yields batches; it never builds a whole-file Python list."""

    def __init__(self, config: ConnectorConfig, ctx: RunContext, name: str = "source"):
        self.config = config
        self.ctx = ctx
        self.name = name

    @abstractmethod
    def read(self, limit: int | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pl.DataFrame]:
        """Yield the data as DataFrame batches; at most `limit` rows in all when given."""

    def schema(self) -> pl.Schema | None:
        """The output schema when it is cheap to know (used by validation); None if unknown."""
        return None

    def check(self) -> str | None:
        """Raise a ConnectorError with a clear message when the source cannot be reached; may
        return one line on what answered (a server's version, the login's permissions)."""


SessionState = Literal["stopped", "connecting", "connected", "subscribed", "lost", "reconnecting", "failed"]
# Session states in which the source delivers values; "failed" means it never will again (its
# thread died): the run must not look healthy.
UP_STATES = ("connected", "subscribed")
ITEM_LOG_INTERVAL_S = 1.0  # one item's failures are logged at most this often (the rest summed)


def one_line_error(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line, cut short (an error may echo a whole payload)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if hasattr(exc, "one_line"):
        text = exc.one_line()
    elif not isinstance(exc, OSError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class StreamingSource(ABC):
    """A source that runs until stopped (Telegraf's ServiceInput): field protocols, MQTT.

    - `start(emit)` returns at once. The source runs on its own thread (usually an asyncio loop of
      its own) and delivers batches by calling `emit(batch)`; protocol sources emit frames with
      `engine.tags.TAG_SCHEMA`. `emit` may block for a while: that is the runtime's back-pressure,
      and a source must not buffer without bound meanwhile (it coalesces or counts drops).
    - `stop()` ends the source and waits for it; after it returns, `emit` is never called again.
    - `state` is the session state; the runtime sets `on_state` to hear of every change, with a
      one-line detail (the error that broke the link, the server that answered...).
    - `counters` are the protocol's own statistics (reads, notifications, errors, reconnects,
      dropped), read by the runtime for metrics and the GUI.

    The rule (no single bad item stops a source), in one place so that no protocol reinvents it:
    - `with self.guard(item):` around the handling of one item (a message, a register block, a
      metric) catches any exception, counts it (`counters["item_errors"]`) and logs it with the
      item (at most once a second per item, the rest summed); `item_failed` does the same for a
      caller that marks the item's records bad itself.
    - `self.spawn(target)` starts the source's thread: an exception that escapes it turns the
      session `failed` with its reason (`fail`), so a dead source never looks like a running one
      and the run does not end SUCCESS.
    - The runtime wraps `emit` (engine/streaming/runner.py): a batch that is not a frame of the
      source's schema is rejected with its reason and counted, and `emit` never raises into the
      source.
    """

    def __init__(self, config: ConnectorConfig, ctx: RunContext, name: str = "source"):
        self.config, self.ctx, self.name = config, ctx, name
        self.state: SessionState = "stopped"
        self.state_detail: str | None = None
        self.on_state: Callable[[str, SessionState, str | None], None] | None = None
        self.counters: Counter[str] = Counter()
        self._item_log: dict[str, list[float]] = {}  # item -> [last logged (monotonic), unlogged]
        self._item_lock = threading.Lock()

    @abstractmethod
    def start(self, emit: Callable[[pl.DataFrame], None]) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    # ---- ack after commit and source rejects (message queues; protocol sources ignore them) ----
    on_reject: Callable[[pl.DataFrame], None] | None = None  # set by the runtime

    def acknowledge(self, tokens: list[Any]) -> None:
        """The batches emitted with these tokens (`emit(batch, ack=token)`, offered when `emit`
        has `takes_ack`) are committed by every destination: the source may acknowledge them to
        its broker now. Called on the runtime's thread. Default: nothing."""

    def reject(self, rows: pl.DataFrame) -> None:
        """Records the source could not make into its frames (a message that is not JSON), with
        the reason in `_reject_reason`: the runtime keeps them in the reject store; without a
        runtime (a preview) they are only counted."""
        self.counters["rejected"] += rows.height
        if self.on_reject is not None:
            self.on_reject(rows)

    def set_state(self, state: SessionState, detail: str | None = None) -> None:
        if state == self.state and detail == self.state_detail:
            return
        if self.state == "failed" and state != "stopped":
            return  # a dead source stays dead until stopped: a late "connected" must not hide it
        self.state, self.state_detail = state, detail
        if self.on_state is not None:
            self.on_state(self.name, state, detail)

    # ---- the rule: one bad item never stops the source -------------------------------------
    def item_failed(self, item: str, exc: BaseException | str) -> str:
        """Count and log the failure of one item (an exception, or the reason as text); return its
        one-line reason (for bad records)."""
        reason = exc if isinstance(exc, str) else one_line_error(exc)
        self.counters["item_errors"] += 1
        now = time.monotonic()
        with self._item_lock:
            entry = self._item_log.setdefault(item, [float("-inf"), 0])
            if now - entry[0] < ITEM_LOG_INTERVAL_S:
                entry[1] += 1
                return reason
            more, entry[0], entry[1] = entry[1], now, 0
        also = f" ({more} more since the last line)" if more else ""
        self.ctx.log("warning", f"{item}: {reason}{also}", self.name)
        return reason

    @contextmanager
    def guard(self, item: str) -> Iterator[None]:
        """`with source.guard("message on topic x"):` an exception inside is counted, logged with
        the item and swallowed; the source goes on with the next item."""
        try:
            yield
        except Exception as exc:
            self.item_failed(item, exc)

    def fail(self, reason: str) -> None:
        """The source cannot go on (its thread died): session `failed`, logged, counted."""
        self.counters["failures"] += 1
        self.ctx.log("error", f"source failed: {reason}", self.name)
        self.set_state("failed", reason)

    def spawn(self, target: Callable[..., None], *args: Any, name: str | None = None) -> threading.Thread:
        """Start the source's thread (daemon) running `target(*args)`; if anything escapes it,
        the session turns `failed` with the reason instead of the thread dying silently."""

        def body() -> None:
            try:
                target(*args)
            except BaseException as exc:
                self.fail(f"{threading.current_thread().name} stopped: {one_line_error(exc)}")

        thread = threading.Thread(target=body, name=name or f"source-{self.name}", daemon=True)
        thread.start()
        return thread

    def schema(self) -> pl.Schema | None:
        from engine.tags import tag_schema

        return tag_schema()

    def emits_tag_records(self) -> bool:
        """Are this source's records tag records (`engine.tags`: its `schema()` is the one above)?
        Then it may hand over `TagBatch`es, which the stream takes as they are."""
        return type(self).schema is StreamingSource.schema

    def sample(
        self, seconds: float = 2.0, limit: int | None = None, first_within: float | None = None
    ) -> pl.DataFrame:
        """A short live sample (previews): run for `seconds` or until `limit` rows, then stop. With
        `first_within` (seconds, more than `seconds`): a source that has handed over nothing yet and
        is still on its way up (not `lost`, `reconnecting` or `failed`: a slow connect, a device's
        first poll on a loaded machine) is listened to until its first batch, that long at most."""
        import threading
        import time

        from engine.tags import as_frame, empty_tags

        frames: list[pl.DataFrame] = []
        rows = 0
        enough = threading.Event()

        def collect(batch: pl.DataFrame) -> None:
            nonlocal rows
            if enough.is_set():
                return
            frames.append(as_frame(batch))  # a preview is a frame (a `TagBatch` too)
            rows += batch.height
            if limit is not None and rows >= limit:
                enough.set()

        self.start(collect)
        try:
            began = time.monotonic()
            deadline, latest = began + seconds, began + max(seconds, first_within or 0.0)
            while not enough.is_set() and not self.ctx.cancel.is_set():
                now = time.monotonic()
                if now >= deadline and (
                    rows or now >= latest or self.state in ("lost", "reconnecting", "failed")
                ):
                    break
                enough.wait(0.05)
        finally:
            self.stop()
        frame = pl.concat(frames, how="diagonal_relaxed") if frames else empty_tags()
        return frame.head(limit) if limit is not None else frame

    def check(self) -> None:
        """Raise a ConnectorError with a clear message when the peer cannot be reached."""


class Sink(ABC):
    def __init__(self, config: ConnectorConfig, ctx: RunContext, name: str = "destination"):
        self.config = config
        self.ctx = ctx
        self.name = name

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def write(self, batch: pl.DataFrame) -> None: ...

    def flush(self) -> None:
        """No more batches are coming: write anything held back, so that errors show before any
        destination of the run commits. Optional."""

    @abstractmethod
    def close(self) -> None:
        """Commit: make everything written visible at once (rename, COMMIT)."""

    @abstractmethod
    def abort(self) -> None:
        """Discard everything written since open(); leave the destination as it was."""

    def check(self) -> str | None:
        """As Source.check: raise when the destination cannot be reached; may return one line."""
        return None

    def describe_target(self) -> str:
        """Where the data went, for the run summary (a path, `historian.duckdb:orders`...)."""
        return self.name
