"""The `opc_ua` streaming source: subscriptions (or polling) on an OPC UA server, delivered as
micro-batches of tag records, kept alive across server restarts.

Session states: connecting -> connected -> subscribed; on loss: lost -> reconnecting -> connected
-> subscribed. Each reconnect is a fresh session: node ids are resolved again (browse paths may
point elsewhere after a server update) and the subscription is created again. While the link is
down every known tag gets a gap record (bad, comm_lost) at once and then every `gap_interval_s`.

The source runs its own asyncio loop on a thread. `emit` runs on a separate one-thread executor,
so a slow consumer never stalls the OPC UA keep-alives; values keep collecting meanwhile, up to
`max_pending` (beyond that they are counted in `counters["dropped"]`, never silently lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.connectors.base import Connector, ConnectorConfig, StreamingSource
from engine.connectors.registry import register
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.lazy import lazy_module
from engine.runs.retry import backoff_delays as shared_backoff
from engine.tags import LEAN_ROWS, TagBatch, TagBatchBuilder, epoch_us, from_epoch_us, split_value
from protocols.opcua.config import OpcUaConfig
from protocols.timestamps import (
    IMPLAUSIBLE,
    PLAUSIBLE_AHEAD,
    PLAUSIBLE_AHEAD_US,
    PLAUSIBLE_FROM,
    PLAUSIBLE_FROM_US,
)
from protocols.timestamps import implausible as implausible_reason

BATCH_VALUES = 50_000  # emit early when this many values are waiting
MAX_PENDING = 2_000_000  # values held while `emit` is blocked; more are counted as dropped
pl = lazy_module("polars")  # imported on first use: a few values a second travel as a TagBatch


def backoff_delays(initial: float, maximum: float, jitter: float, rng: random.Random | None = None):
    """Jittered exponential back-off: initial, 2x, 4x ... capped at maximum, each +-jitter. The
    shared back-off of engine/runs/retry.py with OPC UA's doubling (this name stays for callers)."""
    return shared_backoff(initial, 2.0, maximum, jitter, rng)


def _as_config(config: ConnectorConfig | dict[str, Any]) -> OpcUaConfig:
    if isinstance(config, OpcUaConfig):
        return config
    data = config.model_dump() if isinstance(config, ConnectorConfig) else config
    return OpcUaConfig.model_validate(data)


class OpcUaSource(StreamingSource):
    def __init__(self, config: ConnectorConfig | dict[str, Any], ctx: RunContext, name: str = "opc_ua"):
        super().__init__(_as_config(config), ctx, name)
        self.config: OpcUaConfig
        self.gap_interval_s = max(1.0, self.config.publishing_interval_ms / 1000.0)
        self.tags: list[str] = []  # the tags of the last resolution: gap records cover them
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._builder = TagBatchBuilder(name)
        self._wake: asyncio.Event | None = None
        self._wake_scheduled = False
        self._resync: asyncio.Event | None = None  # set when a publish response was undecodable
        self._problems_logged: set[tuple[str | None, str]] = set()

    # --- the contract ------------------------------------------------------------------------

    def start(self, emit: Callable[[Any], None]) -> None:
        if self._thread is not None:
            raise ConnectorError(f"OPC UA source '{self.name}' is already running")
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(emit, started), name=f"opcua-{self.name}", daemon=True
        )
        self._thread.start()
        started.wait(5)

    def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has just finished on its own
                loop.call_soon_threadsafe(stopping.set)
        thread.join(30)
        self._thread = None
        self.set_state("stopped")

    def check(self) -> None:
        asyncio.run(_check(self.config, self.counters, **self._session_options()))

    def read_once(self) -> pl.DataFrame:
        """One read of every configured tag (previews), without subscribing."""
        return asyncio.run(_read_once(self.config, self.name, self.counters, **self._session_options()))

    def _session_options(self) -> dict[str, Any]:
        """Server certificates trusted on first use are pinned in `<data directory>/pki`."""
        return {
            "pki_dir": self.ctx.data_dir / "pki",
            "log": lambda level, message: self.ctx.log(level, message, self.name),
        }

    # --- the loop ------------------------------------------------------------------------------

    def _run(self, emit: Callable[[Any], None], started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        started.set()
        emitter = ThreadPoolExecutor(1, thread_name_prefix=f"opcua-emit-{self.name}")
        try:
            loop.run_until_complete(self._main(emit, emitter))
        finally:
            emitter.shutdown(wait=True)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self, emit: Callable[[Any], None], emitter: ThreadPoolExecutor) -> None:
        link_down = asyncio.Event()  # set while the link is down: the flusher writes gap records
        flusher = asyncio.create_task(self._flush_loop(emit, emitter, link_down))
        try:
            await self._session_loop(link_down)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self._flush(emit, emitter)  # the last values; nothing is emitted after stop()

    async def _session_loop(self, link_down: asyncio.Event) -> None:
        from protocols.opcua.client import OpcUaSession, one_line

        cfg, stopping = self.config, self._stopping
        assert stopping is not None
        delays = backoff_delays(
            cfg.reconnect.initial_delay_s, cfg.reconnect.max_delay_s, cfg.reconnect.jitter
        )
        ever_connected = False
        while not stopping.is_set():
            self.set_state("reconnecting" if ever_connected else "connecting", cfg.endpoint)
            lost = asyncio.Event()
            reason = f"OPC UA {cfg.endpoint}: connection lost"
            session = OpcUaSession(cfg, self.counters, **self._session_options())
            try:
                await session.connect(on_lost=lambda exc, lost=lost: lost.set())
                self.set_state("connected", cfg.endpoint)
                nodes = await session.tag_nodes()
                self.tags = [n.tag for n in nodes]
                self._bad_nodes(session.unresolved)
                if cfg.mode == "subscribe":
                    self._resync = asyncio.Event()
                    _, refused = await session.subscribe(
                        nodes, self._on_value, self._on_problem, self._on_values
                    )
                    self._refused(refused)
                    self.set_state("subscribed", f"{len(nodes)} nodes on {cfg.endpoint}")
                if ever_connected:
                    self.counters["reconnects"] += 1
                ever_connected = True
                link_down.clear()
                delays = backoff_delays(
                    cfg.reconnect.initial_delay_s, cfg.reconnect.max_delay_s, cfg.reconnect.jitter
                )
                if cfg.mode == "poll":
                    reason = await self._poll(session, nodes, lost)
                else:
                    await self._watch(session, nodes, lost)
            except ConnectorError as exc:
                reason = str(exc)
                self.counters["errors"] += 1
            except Exception as exc:  # the link broke mid-request: treat as a loss
                reason = f"OPC UA {cfg.endpoint}: {one_line(exc)}"
                self.counters["errors"] += 1
            finally:
                await session.close()
            if stopping.is_set():
                break
            if not link_down.is_set():
                link_down.set()
                self._gap()  # at once, then the flusher repeats them until the link heals
            delay = next(delays)
            # One line, at once: which endpoint, why, and when the next attempt comes.
            self.set_state("lost", f"{reason}; retrying in {delay:.1f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)

    async def _watch(self, session: Any, nodes: list[Any], lost: asyncio.Event) -> None:
        """While subscribed: wait for the stop or the loss, and read every node again when a
        publish response could not be decoded (its values are gone; the read recovers the
        current ones and pins the fault on the node that carries it)."""
        stopping, resync = self._stopping, self._resync
        assert stopping is not None and resync is not None
        while not stopping.is_set() and not lost.is_set():
            await _first(stopping.wait(), lost.wait(), resync.wait())
            if resync.is_set() and not stopping.is_set() and not lost.is_set():
                resync.clear()
                await session.read_values(nodes, self._on_value, self._on_undecodable)
                assert self._wake is not None
                self._wake.set()

    async def _poll(self, session: Any, nodes: list[Any], lost: asyncio.Event) -> str:
        from protocols.opcua.client import one_line

        interval = self.config.publishing_interval_ms / 1000.0
        stopping = self._stopping
        assert stopping is not None
        while not stopping.is_set() and not lost.is_set():
            try:
                await session.read_values(nodes, self._on_value, self._on_undecodable)
            except Exception as exc:
                self.counters["errors"] += 1
                return f"OPC UA {self.config.endpoint}: read failed: {one_line(exc)}"
            assert self._wake is not None
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)
        return f"OPC UA {self.config.endpoint}: connection lost"

    # --- values and batches --------------------------------------------------------------------

    def _on_value(
        self, tag: str, value: Any, code: int, source_ts: datetime | None, server_ts: datetime | None
    ) -> None:
        builder = self._builder
        if len(builder) >= MAX_PENDING:
            self.counters["dropped"] += 1
            return
        try:
            implausible = add_value(builder, tag, value, code, source_ts, server_ts)
        except Exception as exc:  # a value we cannot store: a bad record with why, never a stop
            _realign(builder)
            self._on_problem(tag, exc)
            return
        if implausible is not None:  # kept, uncertain: counted and logged once per node
            self.counters["implausible_timestamps"] += 1
            if (tag, IMPLAUSIBLE) not in self._problems_logged:
                self._problems_logged.add((tag, IMPLAUSIBLE))
                self.ctx.log(
                    "warning", f"OPC UA {self.config.endpoint}: node {tag}: {implausible}", self.name
                )
        self._added(1)

    def _added(self, n: int) -> None:
        """`n` values joined the batch: counted, and the flusher woken for them."""
        self.counters["notifications"] += n
        if len(self._builder) >= BATCH_VALUES and self._wake is not None:
            self._wake.set()
        elif not self._wake_scheduled and self._loop is not None:
            # Hand the values over once this publish response is walked (call_soon runs after it),
            # not at the flusher's next tick: that tick added up to a publishing interval of latency.
            self._wake_scheduled = True
            self._loop.call_soon(self._wake_after_publish)

    def _on_values(
        self,
        tags: list[str],
        values: list[Any],
        codes: list[int],
        source_us: list[int | None],
        server_us: list[int | None],
        types: set[int],
    ) -> None:
        """A publish response's values in columns (notifications.py), appended in bulk: what
        `_on_value` does for each, with the same counters, drops, problems and log lines."""
        builder = self._builder
        n = len(tags)
        room = MAX_PENDING - len(builder)
        if room < n:
            self.counters["dropped"] += n - max(room, 0)
            if room <= 0:
                return
            n = room
            tags, values, codes = tags[:n], values[:n], codes[:n]
            source_us, server_us = source_us[:n], server_us[:n]
        try:
            implausible = extend_values(builder, tags, values, codes, source_us, server_us, types)
        except Exception:  # one value we cannot store: value by value, so only it is a bad record
            _realign(builder)
            for row in zip(tags, values, codes, source_us, server_us, strict=True):
                tag, value, code, src, srv = row
                self._on_value(tag, value, code, from_epoch_us(src), from_epoch_us(srv))
            return
        for tag, reason in implausible:  # kept, uncertain: counted and logged once per node
            self.counters["implausible_timestamps"] += 1
            if (tag, IMPLAUSIBLE) not in self._problems_logged:
                self._problems_logged.add((tag, IMPLAUSIBLE))
                self.ctx.log("warning", f"OPC UA {self.config.endpoint}: node {tag}: {reason}", self.name)
        self._added(n)

    def _wake_after_publish(self) -> None:
        self._wake_scheduled = False
        if self._wake is not None:
            self._wake.set()

    def _refused(self, refused: dict[str, int]) -> None:
        """Nodes the server would not monitor (unknown node id...): one bad record each, with why."""
        from protocols.opcua.client import status_quality

        self._bad_nodes({tag: status_quality(code)[1] or f"0x{code:08X}" for tag, code in refused.items()})

    def _bad_nodes(self, reasons: dict[str, str]) -> None:
        """Nodes that cannot be read (unknown, refused, a browse path to nowhere): one bad record
        each, with the reason, and one log line; the other nodes stream on."""
        for tag, reason in reasons.items():
            self._builder.add(tag, None, quality="bad", reason=reason)
            self.counters["errors"] += 1
            self.ctx.log("warning", f"OPC UA {self.config.endpoint}: node {tag}: {reason}", self.name)

    def _on_problem(self, tag: str | None, error: BaseException | str) -> None:
        """Something the value path could not deliver: counted, logged with its item (the first
        time for each item and kind), and never the end of the source. A value becomes a bad
        record with the reason; a publish response asyncua could not decode (tag None) has lost
        its values, so every node is read again."""
        from protocols.opcua.client import one_line

        text = error if isinstance(error, str) else one_line(error)
        if tag is not None:
            self._builder.add(tag, None, quality="bad", reason=f"undecodable: {text}"[:200])
            self.counters["bad_values"] += 1
        else:
            self.counters["undecodable"] += 1
            if isinstance(error, BaseException) and self._resync is not None:
                self._resync.set()
        self.counters["errors"] += 1
        key = (tag, text.split(":", 1)[0])
        if key not in self._problems_logged:
            self._problems_logged.add(key)
            what = f"node {tag}" if tag is not None else "a publish response"
            self.ctx.log("warning", f"OPC UA {self.config.endpoint}: {what}: {text}", self.name)

    def _on_undecodable(self, node: Any, error: BaseException) -> None:
        self._on_problem(node.tag, error)

    def _gap(self) -> None:
        self._builder.gap(self.tags)
        self.counters["gaps"] += len(self.tags)

    async def _flush_loop(
        self, emit: Callable[[Any], None], emitter: ThreadPoolExecutor, link_down: asyncio.Event
    ) -> None:
        interval = min(self.config.publishing_interval_ms / 1000.0, 1.0)
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        next_gap = loop.time() + self.gap_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
            if link_down.is_set():
                if loop.time() >= next_gap:
                    self._gap()
                    next_gap = loop.time() + self.gap_interval_s
            else:
                next_gap = loop.time() + self.gap_interval_s
            try:
                await self._flush(emit, emitter)
            except Exception as exc:  # the flusher never dies: that would stop the source unseen
                self.counters["errors"] += 1
                self.ctx.log(
                    "error", f"OPC UA {self.config.endpoint}: batch failed: {exc!r}"[:300], self.name
                )

    def _take(self) -> pl.DataFrame | TagBatch:
        """The collected values as a batch: a `TagBatch` when they fit `LEAN_ROWS`, else a frame
        (`TagBatchBuilder.take_small`). Text that is not UTF-8 (a server's bytes decoded with
        surrogate escapes) can enter neither Arrow nor the stream: it is stored with U+FFFD in its
        place, as `uncertain` with reason `invalid_utf8`, and logged with its tag. A few values are
        checked before they are taken (a TagBatch is not checked on the way); a frame checks its
        own text, so a large batch is only walked when making it failed."""
        builder = self._builder
        try:
            if len(builder) <= LEAN_ROWS:
                self._repaired(_repair_text(builder))
            try:
                return builder.take_small()
            except Exception:
                self._repaired(_repair_text(builder))
                return builder.take_small()
        except Exception as exc:
            held = len(builder)
            self._builder = TagBatchBuilder(self.name)
            self.counters["dropped"] += held
            self.counters["errors"] += 1
            self.ctx.log(
                "error",
                f"OPC UA {self.config.endpoint}: {held} values could not be batched: {exc!r}"[:300],
                self.name,
            )
            return TagBatchBuilder(self.name).take_batch()

    def _repaired(self, tags: list[str]) -> None:
        """Values whose text `_repair_text` repaired: counted, and logged once per tag."""
        for tag in tags:
            self.counters["bad_values"] += 1
            key = (tag, "invalid_utf8")
            if key not in self._problems_logged:
                self._problems_logged.add(key)
                self.ctx.log(
                    "warning",
                    f"OPC UA {self.config.endpoint}: node {tag}: text that is not UTF-8 (stored with U+FFFD)",
                    self.name,
                )

    async def _flush(self, emit: Callable[[Any], None], emitter: ThreadPoolExecutor) -> None:
        if not len(self._builder):
            return
        batch = self._take()
        if not batch.height:
            return
        handed = asyncio.get_running_loop().run_in_executor(emitter, emit, batch)
        handed.add_done_callback(self._emitted)
        # Taken values are handed over even if stop() cancels the flusher now: cancelling the
        # executor's future before its thread starts it would lose the batch (a loaded machine
        # saw that). The emitter keeps its order, and `_run` waits for it before stop() returns.
        with contextlib.suppress(Exception):  # counted and logged by `_emitted`
            await asyncio.shield(handed)

    def _emitted(self, handed: asyncio.Future) -> None:
        if handed.cancelled() or handed.exception() is None:
            return
        self.counters["errors"] += 1  # the consumer failed: counted, the session stays alive
        self.ctx.log("error", f"emit failed: {handed.exception()}", self.name)


def _realign(builder: TagBatchBuilder) -> None:
    """After an add() that failed half way: every column back to the rows that are whole."""
    columns = [v for v in vars(builder).values() if isinstance(v, list)]
    whole = min(len(c) for c in columns)
    for column in columns:
        del column[whole:]


def _repair_text(builder: TagBatchBuilder) -> list[str]:
    """Replace text that cannot be UTF-8 encoded in the builder's columns; a good row it touches
    becomes `uncertain` (`invalid_utf8`). Returns the (repaired) tags of those rows."""
    touched: list[str] = []
    for i in range(len(builder.tag)):
        hit = False
        for column in (builder.tag, builder.value_text, builder.reason):
            text = column[i]
            if text is None or text.isascii():
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                column[i] = _as_utf8(text)
                hit = True
        if hit:
            if builder.quality[i] == "good":
                builder.quality[i], builder.reason[i] = "uncertain", "invalid_utf8"
            touched.append(builder.tag[i])
    return touched


def _as_utf8(text: str) -> str:
    try:  # the server's own bytes, as asyncua decoded them (surrogateescape), then U+FFFD for each bad byte
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


async def _first(*aws: Any) -> None:
    """Wait until the first of `aws` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _check(config: OpcUaConfig, counters: Any, **options: Any) -> None:
    from protocols.opcua.client import OpcUaSession, one_line

    async with OpcUaSession(config, counters, **options) as session:
        try:
            state = await session.server_state()
        except Exception as exc:
            raise ConnectorError(
                f"OPC UA {config.endpoint}: cannot read the server state: {one_line(exc)}"
            ) from exc
        if state != "Running":
            raise ConnectorError(f"OPC UA {config.endpoint}: the server state is {state}, not Running")


def add_value(
    builder: TagBatchBuilder,
    tag: str,
    value: Any,
    code: int,
    source_ts: datetime | None,
    server_ts: datetime | None,
) -> str | None:
    """One OPC UA value as a tag record: the source timestamp (the server's when the source gave
    none), both timestamps kept, the StatusCode as quality and reason. A source time outside
    1990-01-01..now+1 day (a PLC clock never set) is no time either: the value is kept `uncertain`
    with the reason, which is returned (None when the time is plausible)."""
    from protocols.opcua.client import status_quality

    quality, reason = ("good", None) if code == 0 else status_quality(code)
    implausible = None
    if source_ts is not None and not PLAUSIBLE_FROM <= source_ts <= datetime.now(UTC) + PLAUSIBLE_AHEAD:
        shown = source_ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
        implausible = implausible_reason(f"source time {shown}")
        source_ts = None
        quality = "uncertain" if quality == "good" else quality
        reason = implausible if reason is None else f"{reason}; {implausible}"
    builder.add(
        tag,
        value,
        timestamp=source_ts or server_ts,
        server_timestamp=server_ts,
        quality=quality,
        reason=reason,
    )
    return implausible


_FLOATS = frozenset({10, 11})  # Variant Float, Double: the values are floats already
_NUMBERS = frozenset(range(1, 12))  # Boolean, SByte..UInt64, Float, Double: float() of each
_QUALITIES: dict[int, tuple[str, str | None]] = {}  # status code -> (quality, reason)
_GOOD: tuple[str, str | None] = ("good", None)


def _quality(code: int) -> tuple[str, str | None]:
    known = _QUALITIES.get(code)
    if known is None:
        from protocols.opcua.client import status_quality

        if len(_QUALITIES) >= 4096:
            _QUALITIES.clear()
        known = _QUALITIES[code] = status_quality(code)
    return known


def extend_values(
    builder: TagBatchBuilder,
    tags: list[str],
    values: list[Any],
    codes: list[int],
    source_us: list[int | None],
    server_us: list[int | None],
    types: set[int],
) -> list[tuple[str, str]]:
    """`add_value` for columns (epoch microseconds): the source time (the server's when the source
    gave none), the StatusCode as quality and reason, an implausible source time dropped and the
    value kept `uncertain`. Returns (tag, reason) of each implausible source time."""
    n = len(tags)
    if types <= _FLOATS:
        numbers, texts = values, None
    elif types <= _NUMBERS:
        numbers, texts = [float(v) for v in values], None
    else:
        split = [split_value(v) for v in values]
        numbers, texts = [p[0] for p in split], [p[1] for p in split]
    if any(codes):
        pairs = [_quality(c) if c else _GOOD for c in codes]
        quality: Any = [p[0] for p in pairs]
        reason: Any = [p[1] for p in pairs]
    else:
        quality, reason = "good", None
    implausible: list[tuple[str, str]] = []
    low = PLAUSIBLE_FROM_US
    high = epoch_us(datetime.now(UTC)) + PLAUSIBLE_AHEAD_US
    plain = None not in source_us
    if not plain or (n and not low <= min(source_us) <= max(source_us) <= high):  # type: ignore[type-var]
        source_us = list(source_us)
        for i, us in enumerate(source_us):
            if us is None or low <= us <= high:
                continue
            if isinstance(quality, str):
                quality, reason = [quality] * n, [reason] * n
            shown = from_epoch_us(us).isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]
            why = implausible_reason(f"source time {shown}")
            implausible.append((tags[i], why))
            source_us[i] = None
            quality[i] = "uncertain" if quality[i] == "good" else quality[i]
            reason[i] = why if reason[i] is None else f"{reason[i]}; {why}"
        stamps = [s if s is not None else v for s, v in zip(source_us, server_us, strict=True)]
    else:
        stamps = source_us
    builder.extend_columns(tags, numbers, texts, stamps, server_us, quality, reason)
    return implausible


async def _read_once(config: OpcUaConfig, name: str, counters: Any, **options: Any) -> pl.DataFrame:
    from functools import partial

    from protocols.opcua.client import OpcUaSession, one_line

    builder = TagBatchBuilder(name)
    async with OpcUaSession(config, counters, **options) as session:
        nodes = await session.tag_nodes()
        for tag, reason in session.unresolved.items():  # one bad record each; the others are read
            builder.add(tag, None, quality="bad", reason=reason)
        await session.read_values(
            nodes,
            partial(add_value, builder),
            lambda node, exc: builder.add(
                node.tag, None, quality="bad", reason=f"undecodable: {one_line(exc)}"
            ),
        )
    try:
        return builder.take()
    except Exception:  # text that is not UTF-8: repaired, marked uncertain
        _repair_text(builder)
        return builder.take()


def read_once(
    config: OpcUaConfig | dict[str, Any], name: str = "opc_ua", *, data_dir: Path | None = None
) -> pl.DataFrame:
    """One read of every configured tag as a TAG_SCHEMA frame (previews, the tag browser).
    `data_dir`: whose `pki` folder holds certificates trusted on first use (default: the default
    data directory's)."""
    from collections import Counter

    pki = {"pki_dir": data_dir / "pki"} if data_dir is not None else {}
    return asyncio.run(_read_once(_as_config(config), name, Counter(), **pki))


@register
class OpcUaConnector(Connector):
    connector_type = "opc_ua"
    title = "OPC UA"
    SourceConfig = OpcUaConfig

    source_class = OpcUaSource

    @classmethod
    def browse(cls, config: dict, node_id: str | None = None, *, data_dir: Path | None = None) -> list[dict]:
        """The tag browser (the GUI reaches it through the registry, never importing protocols):
        the children of `node_id` (default: Objects), connecting as the source's config says.
        `data_dir`: whose `pki` folder holds certificates trusted on first use (default: the
        default data directory's)."""
        from protocols.opcua.client import browse

        options = {k: v for k, v in config.items() if k not in ("endpoint", "nodes", "browse_root")}
        return browse(config["endpoint"], node_id, pki_dir=data_dir / "pki" if data_dir else None, **options)
