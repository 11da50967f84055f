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
from datetime import datetime
from typing import Any

import polars as pl

from engine.connectors.base import Connector, ConnectorConfig, StreamingSource
from engine.connectors.registry import register
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.tags import TagBatchBuilder
from protocols.opcua.config import OpcUaConfig

BATCH_VALUES = 50_000  # emit early when this many values are waiting
MAX_PENDING = 2_000_000  # values held while `emit` is blocked; more are counted as dropped


def backoff_delays(initial: float, maximum: float, jitter: float, rng: random.Random | None = None):
    """Jittered exponential back-off: initial, 2x, 4x ... capped at maximum, each +-jitter."""
    rng = rng or random.Random()
    delay = initial
    while True:
        yield max(0.0, delay * (1.0 + rng.uniform(-jitter, jitter)))
        delay = min(maximum, delay * 2)


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

    # --- the contract ------------------------------------------------------------------------

    def start(self, emit: Callable[[pl.DataFrame], None]) -> None:
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
        asyncio.run(_check(self.config, self.counters))

    def read_once(self) -> pl.DataFrame:
        """One read of every configured tag (previews), without subscribing."""
        return asyncio.run(_read_once(self.config, self.name, self.counters))

    # --- the loop ------------------------------------------------------------------------------

    def _run(self, emit: Callable[[pl.DataFrame], None], started: threading.Event) -> None:
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

    async def _main(self, emit: Callable[[pl.DataFrame], None], emitter: ThreadPoolExecutor) -> None:
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
            reason = "connection lost"
            session = OpcUaSession(cfg, self.counters)
            try:
                await session.connect(on_lost=lambda exc, lost=lost: lost.set())
                self.set_state("connected", cfg.endpoint)
                nodes = await session.tag_nodes()
                self.tags = [n.tag for n in nodes]
                if cfg.mode == "subscribe":
                    _, refused = await session.subscribe(nodes, self._on_value)
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
                    await _first(stopping.wait(), lost.wait())
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
            self.set_state("lost", reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=next(delays))

    async def _poll(self, session: Any, nodes: list[Any], lost: asyncio.Event) -> str:
        from protocols.opcua.client import one_line

        interval = self.config.publishing_interval_ms / 1000.0
        stopping = self._stopping
        assert stopping is not None
        while not stopping.is_set() and not lost.is_set():
            try:
                await session.read_values(nodes, self._on_value)
            except Exception as exc:
                self.counters["errors"] += 1
                return f"OPC UA {self.config.endpoint}: read failed: {one_line(exc)}"
            assert self._wake is not None
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)
        return "connection lost"

    # --- values and batches --------------------------------------------------------------------

    def _on_value(
        self, tag: str, value: Any, code: int, source_ts: datetime | None, server_ts: datetime | None
    ) -> None:
        builder = self._builder
        if len(builder) >= MAX_PENDING:
            self.counters["dropped"] += 1
            return
        add_value(builder, tag, value, code, source_ts, server_ts)
        self.counters["notifications"] += 1
        if len(builder) >= BATCH_VALUES and self._wake is not None:
            self._wake.set()
        elif not self._wake_scheduled and self._loop is not None:
            # Hand the values over once this publish response is walked (call_soon runs after it),
            # not at the flusher's next tick: that tick added up to a publishing interval of latency.
            self._wake_scheduled = True
            self._loop.call_soon(self._wake_after_publish)

    def _wake_after_publish(self) -> None:
        self._wake_scheduled = False
        if self._wake is not None:
            self._wake.set()

    def _refused(self, refused: dict[str, int]) -> None:
        """Nodes the server would not monitor (unknown node id...): one bad record each, with why."""
        from protocols.opcua.client import status_quality

        for tag, code in refused.items():
            _, reason = status_quality(code)
            self._builder.add(tag, None, quality="bad", reason=reason)
            self.counters["errors"] += 1

    def _gap(self) -> None:
        self._builder.gap(self.tags)
        self.counters["gaps"] += len(self.tags)

    async def _flush_loop(
        self, emit: Callable[[pl.DataFrame], None], emitter: ThreadPoolExecutor, link_down: asyncio.Event
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
            await self._flush(emit, emitter)

    async def _flush(self, emit: Callable[[pl.DataFrame], None], emitter: ThreadPoolExecutor) -> None:
        if not len(self._builder):
            return
        batch = self._builder.take()
        try:
            await asyncio.get_running_loop().run_in_executor(emitter, emit, batch)
        except Exception as exc:  # the consumer failed: count it, keep the session alive
            self.counters["errors"] += 1
            self.ctx.log("error", f"emit failed: {exc}", self.name)


async def _first(*aws: Any) -> None:
    """Wait until the first of `aws` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _check(config: OpcUaConfig, counters: Any) -> None:
    from protocols.opcua.client import OpcUaSession, one_line

    async with OpcUaSession(config, counters) as session:
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
) -> None:
    """One OPC UA value as a tag record: the source timestamp (the server's when the source gave
    none), both timestamps kept, the StatusCode as quality and reason."""
    from protocols.opcua.client import status_quality

    quality, reason = ("good", None) if code == 0 else status_quality(code)
    builder.add(
        tag,
        value,
        timestamp=source_ts or server_ts,
        server_timestamp=server_ts,
        quality=quality,
        reason=reason,
    )


async def _read_once(config: OpcUaConfig, name: str, counters: Any) -> pl.DataFrame:
    from functools import partial

    from protocols.opcua.client import OpcUaSession

    builder = TagBatchBuilder(name)
    async with OpcUaSession(config, counters) as session:
        await session.read_values(await session.tag_nodes(), partial(add_value, builder))
    return builder.take()


def read_once(config: OpcUaConfig | dict[str, Any], name: str = "opc_ua") -> pl.DataFrame:
    """One read of every configured tag as a TAG_SCHEMA frame (previews, the tag browser)."""
    from collections import Counter

    return asyncio.run(_read_once(_as_config(config), name, Counter()))


@register
class OpcUaConnector(Connector):
    connector_type = "opc_ua"
    title = "OPC UA"
    SourceConfig = OpcUaConfig

    @classmethod
    def make_source(cls, config: ConnectorConfig, ctx: RunContext, name: str) -> OpcUaSource:
        return OpcUaSource(config, ctx, name)

    @classmethod
    def browse(cls, config: dict, node_id: str | None = None) -> list[dict]:
        """The tag browser (the GUI reaches it through the registry, never importing protocols):
        the children of `node_id` (default: Objects), connecting as the source's config says."""
        from protocols.opcua.client import browse

        options = {k: v for k, v in config.items() if k not in ("endpoint", "nodes", "browse_root")}
        return browse(config["endpoint"], node_id, **options)
