"""DNP3 master source: polls an outstation (integrity and event polls), takes its unsolicited
responses, and emits TAG_SCHEMA batches.

dnp3py's `MasterTcpRunner` owns the link, transport and application layers; this module owns the
schedule, the link-loss policy (backoff, gap records) and the point -> tag mapping. The master runs
on an asyncio loop of its own thread; dnp3py is imported there, so importing this module is cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import polars as pl

from engine.connectors.base import Connector, StreamingSource
from engine.connectors.registry import register
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.tags import COMM_LOST, TagBatchBuilder, utc_now
from protocols.dnp3.config import Dnp3Point, Dnp3SourceConfig, default_tag
from protocols.dnp3.flags import quality_of

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.5


class PointMap:
    """(point type, index) -> tag, scale; records every tag it has named (for gap records)."""

    def __init__(self, points: list[Dnp3Point]):
        self._points = {(p.type, p.index): p for p in points}
        self.known: dict[str, None] = {p.tag_name: None for p in points}  # ordered set

    def tag(self, point_type: str, index: int) -> tuple[str, float]:
        point = self._points.get((point_type, index))
        tag = point.tag_name if point else default_tag(point_type, index)
        self.known.setdefault(tag)
        return tag, (point.scale if point else 1.0)


class TagCollector:
    """dnp3py SOE handler: values go straight into a TagBatchBuilder (solicited and unsolicited
    apart, because an unsolicited fragment may arrive in the middle of a poll's burst)."""

    def __init__(self, source: str, points: PointMap, counters: Any):
        self.points, self.counters = points, counters
        self.solicited = TagBatchBuilder(source)
        self.unsolicited = TagBatchBuilder(source)

    def _add(self, point_type: str, values: list[Any], info: Any) -> None:
        builder = self.unsolicited if info.is_unsolicited else self.solicited
        now = utc_now()
        for v in values:
            tag, scale = self.points.tag(point_type, v.index)
            value = v.value if isinstance(v.value, bool) else v.value * scale
            quality, reason = quality_of(point_type, int(v.quality))
            # The outstation's event time when the object carries one (g22v5, g2v2, g32v3...).
            builder.add(
                tag, value, timestamp=v.timestamp or now, quality=quality, reason=reason, received_at=now
            )

    def on_binary_input(self, values: list[Any], info: Any) -> None:
        self._add("binary_input", values, info)

    def on_analog_input(self, values: list[Any], info: Any) -> None:
        self._add("analog_input", values, info)

    def on_counter(self, values: list[Any], info: Any) -> None:
        self._add("counter", values, info)

    def on_binary_output(self, values: list[Any], info: Any) -> None:
        self._add("binary_output_status", values, info)

    def on_analog_output(self, values: list[Any], info: Any) -> None:
        self._add("analog_output_status", values, info)

    def on_frozen_counter(self, values: list[Any], info: Any) -> None:
        self.counters["ignored_frozen_counters"] += len(values)  # not a configurable point type


def _make_master(
    config: Dnp3SourceConfig, collector: TagCollector, on_unsolicited: Callable[[], None]
) -> Any:
    from dnp3.master.config import MasterConfig
    from dnp3.master.master import Master

    class FragmentMaster(Master):
        """Tells us when an unsolicited fragment has been fully handed to the collector."""

        def process_response(self, data: bytes) -> Any:
            info = super().process_response(data)
            if info is not None and info.is_unsolicited:
                on_unsolicited()
            return info

    master_config = MasterConfig(
        address=config.master_address,
        outstation_address=config.outstation_address,
        response_timeout=config.timeout_s,
        enable_unsolicited=config.accept_unsolicited,
    )
    return FragmentMaster(config=master_config, handler=collector)


def _make_runner(config: Dnp3SourceConfig, master: Any) -> Any:
    from dnp3.master.tcp_runner import MasterTcpRunner

    return MasterTcpRunner(
        master=master, host=config.host, port=config.port, response_timeout=config.timeout_s
    )


def _where(config: Dnp3SourceConfig) -> str:
    return f"DNP3 outstation {config.outstation_address} at {config.host}:{config.port}"


class Dnp3Source(StreamingSource):
    config: Dnp3SourceConfig

    def __init__(self, config: Dnp3SourceConfig, ctx: RunContext, name: str = "source"):
        super().__init__(config, ctx, name)
        self.points = PointMap(config.points)
        self._emit: Callable[[pl.DataFrame], None] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, emit: Callable[[pl.DataFrame], None]) -> None:
        self._emit = emit
        self._stopping.clear()
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name=f"dnp3-{self.name}", daemon=True
        )
        self._thread.start()
        started.wait(5)

    def stop(self) -> None:
        self._stopping.set()
        thread, loop, task = self._thread, self._loop, self._task
        deadline = time.monotonic() + self.config.timeout_s + 5
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            # Cancel again until it takes: Python 3.11's wait_for (inside dnp3py) can lose a
            # cancellation that lands just as its read completes.
            if loop is not None and task is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(task.cancel)
            thread.join(0.2)
        self._emit = None  # the contract: no emit after stop() returns, even from a stuck thread
        self._thread = self._loop = self._task = None
        self.set_state("stopped")

    def _run(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._task = loop.create_task(self._main())
        started.set()
        try:
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug, not a link problem: say so and stop
            log.exception("%s: DNP3 master stopped", self.name)
            self.set_state("stopped", "internal error, see log")
        finally:
            loop.close()

    def check(self) -> None:
        async def probe() -> None:
            collector = TagCollector(self.name, self.points, self.counters)
            runner = _make_runner(self.config, _make_master(self.config, collector, lambda: None))
            try:
                await runner.open()
                await runner.integrity_poll()
            finally:
                await runner.close()

        try:
            _run_blocking(probe)
        except Exception as exc:
            raise ConnectorError(f"{_where(self.config)}: integrity poll failed: {_one_line(exc)}") from exc

    # -- the master --------------------------------------------------------------------------------

    async def _main(self) -> None:
        from dnp3.master.tcp_runner import MasterRunnerError, ResponseTimeoutError

        collector = TagCollector(self.name, self.points, self.counters)

        def unsolicited_done() -> None:
            self.counters["unsolicited"] += 1
            self._flush(collector.unsolicited, events=True)

        master = _make_master(self.config, collector, unsolicited_done)
        backoff = FIRST_BACKOFF_S
        first = True
        while not self._stopping.is_set():
            self.set_state("connecting" if first else "reconnecting", _where(self.config))
            runner = _make_runner(self.config, master)
            try:
                await runner.open()
                self.set_state("connected", _where(self.config))
                await self._poll(runner, collector, integrity=True)
                if self.config.accept_unsolicited:
                    await runner.enable_unsolicited()
                    self.set_state("subscribed", f"{_where(self.config)}, unsolicited enabled")
                backoff = FIRST_BACKOFF_S
                await self._serve(runner, collector)
            except (MasterRunnerError, OSError) as exc:
                self.counters["errors"] += 1
                self._flush(collector.solicited)  # values that did arrive are real
                reason = "timeout" if isinstance(exc, ResponseTimeoutError) else COMM_LOST
                self._gap(collector, reason)
                self.set_state("lost", f"{_where(self.config)}: {_one_line(exc)}")
            finally:
                await runner.close()
            first = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.reconnect_max_s)
            self.counters["reconnects"] += 1

    async def _serve(self, runner: Any, collector: TagCollector) -> None:
        """Poll on schedule; between polls, listen for unsolicited responses."""
        loop = asyncio.get_running_loop()
        next_integrity = loop.time() + self.config.integrity_poll_interval_s
        next_events = loop.time() + self.config.event_poll_interval_s
        while not self._stopping.is_set():
            now = loop.time()
            if now >= next_integrity:
                await self._poll(runner, collector, integrity=True)
                next_integrity = now + self.config.integrity_poll_interval_s
                next_events = now + self.config.event_poll_interval_s  # the integrity poll read them
            elif now >= next_events:
                await self._poll(runner, collector, integrity=False)
                next_events = now + self.config.event_poll_interval_s
            elif self.config.accept_unsolicited:
                # Values reach the collector (and are emitted) inside process_response.
                await runner.listen_unsolicited(timeout=min(next_integrity, next_events) - now)
            else:
                await asyncio.sleep(min(next_integrity, next_events) - now)

    async def _poll(self, runner: Any, collector: TagCollector, *, integrity: bool) -> None:
        if integrity:
            await runner.integrity_poll()
            self.counters["integrity_polls"] += 1
        else:
            await runner.class_poll()
            self.counters["event_polls"] += 1
        self._flush(collector.solicited, events=not integrity)

    def _flush(self, builder: TagBatchBuilder, events: bool = False) -> None:
        if not len(builder) or self._emit is None:
            return
        batch = builder.take()
        self.counters["values"] += batch.height
        if events:
            self.counters["events"] += batch.height
        self._emit(batch)

    def _gap(self, collector: TagCollector, reason: str) -> None:
        if self.points.known and self._emit is not None:
            builder = collector.solicited
            builder.gap(list(self.points.known), reason)
            self.counters["gap_records"] += len(builder)
            self._emit(builder.take())


def _run_blocking(make_coro: Callable[[], Any]) -> Any:
    """asyncio.run, also from a thread whose own loop is running (the engine's loop, a GUI bridge)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make_coro()).result()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@register
class Dnp3Connector(Connector):
    connector_type: ClassVar[str] = "dnp3"
    title: ClassVar[str] = "DNP3 (IEEE 1815) master"
    SourceConfig = Dnp3SourceConfig

    @classmethod
    def make_source(cls, config: Any, ctx: RunContext, name: str) -> Dnp3Source:
        if not isinstance(config, Dnp3SourceConfig):
            config = Dnp3SourceConfig.model_validate(config)
        return Dnp3Source(config, ctx, name)
