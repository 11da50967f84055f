"""The `modbus` connector: polls Modbus TCP/RTU devices and emits TAG_SCHEMA batches.

One connection per device (serving one request at a time), each device polled
on its own interval by its own asyncio task, all on the source's own loop and thread; the
devices' first rounds are spread evenly over the interval (n devices: device i starts i/n of an
interval later), so their batches do not reach the pipeline all at once. A poll
round reads the device's planned requests one after another, decodes every block and emits ONE
batch for the round. A failed request marks only its own tags bad (`timeout`, `exception_<code>`,
`bad_length`, `comm_lost`) and makes that device back off, exponentially and capped, while the
other devices keep their rate. A timeout or a dropped link also ends the round and reconnects:
an answer that comes late must not be taken for the next request's.

A device that cannot be reached says so at once, in one line: its session turns `lost` with
`modbus://host:port: connection refused; retrying every 2 s, backing off to 30 s`, and stays so
(no flapping through `reconnecting`) until the device answers. A block that cannot be decoded
marks that block's tags bad (`decode_error`) and is counted and logged; the other blocks flow.
A float register holding NaN or infinity is a bad record (`not_finite`), not a value.
pymodbus' own log lines ("Failed to connect", "Repeating....") go to the log at debug level, never
to the console.

TCP devices are read by our own lean client (protocols/modbus/tcp.py: MBAP framing, one request in
flight, the answer decoded with one struct call), because at 800 requests a second pymodbus'
generic per-request machinery was most of the source's CPU; RTU devices keep pymodbus.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from engine.connectors.base import Connector, SessionState, StreamingSource
from engine.connectors.chatter import demote_library_logs
from engine.connectors.registry import register
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.lazy import lazy_module
from engine.runs.retry import backoff_delay
from engine.tags import COMM_LOST, LEAN_ROWS, TagBatch, TagBatchBuilder, epoch_us, tag_schema, utc_now
from protocols.connect_errors import os_error_reason, retrying
from protocols.event_loop import new_event_loop
from protocols.modbus.config import BIT_TABLES, ModbusDevice, ModbusSourceConfig
from protocols.modbus.planner import ReadRequest, plan_requests
from protocols.modbus.tcp import ModbusTcpClient, RequestFailed

pl = lazy_module("polars")
np = lazy_module("numpy")

__all__ = ["ModbusSource", "ModbusTcpClient", "RequestFailed", "make_client", "read_block"]

STATE_RANK = {
    "connected": 0,
    "subscribed": 0,
    "connecting": 1,
    "reconnecting": 2,
    "lost": 3,
    "stopped": 4,
    "failed": 5,
}
DECODE_ERROR = "decode_error"
NOT_FINITE = "not_finite"  # a float register held NaN or infinity
READERS = {
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
    "holding": "read_holding_registers",
    "input": "read_input_registers",
}


def make_client(device: ModbusDevice) -> Any:
    """Our lean Modbus/TCP client for TCP (protocols/modbus/tcp.py: the read path is the hot
    loop), pymodbus' async serial client for RTU; reconnection is ours (reconnect_delay 0 turns
    pymodbus' off)."""
    timeout = device.timeout_ms / 1000
    if device.transport == "rtu":
        from pymodbus.client import AsyncModbusSerialClient

        return AsyncModbusSerialClient(
            device.serial_port,
            baudrate=device.baudrate,
            parity=device.parity,
            stopbits=device.stopbits,
            bytesize=8,
            timeout=timeout,
            retries=device.retries,
            reconnect_delay=0,
        )
    return ModbusTcpClient(device.host, device.port, timeout, device.retries)


def describe_os_error(exc: BaseException, timeout_ms: int) -> str:
    """A connection failure as a plant engineer reads it: `connection refused`, `no answer
    within 1000 ms`, `unknown host`... (protocols/connect_errors.py)"""
    return os_error_reason(exc, f"{timeout_ms} ms") or f"{type(exc).__name__}: {exc}"


async def why_unreachable(device: ModbusDevice, client: Any = None) -> str:
    """Why a connection to the device failed: the TCP client's own error when it names one, else
    (pymodbus' connect() only says False) one more plain connection attempt, after a failure
    only, to name the reason."""
    if device.transport != "tcp":
        return f"cannot open {device.serial_port}"
    if isinstance(client, ModbusTcpClient) and (reason := client.describe_error()):
        return reason
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(device.host, device.port), device.timeout_ms / 1000
        )
    except (TimeoutError, OSError) as exc:
        return describe_os_error(exc, device.timeout_ms)
    writer.close()
    return "the connection failed"  # it works now: the failure was transient


async def read_block(client: Any, device: ModbusDevice, request: ReadRequest) -> list:
    """The registers (or bits) of one request; RequestFailed says why not."""
    if type(client) is ModbusTcpClient:
        return await client.read(request)
    from pymodbus.exceptions import ConnectionException, ModbusIOException

    where = f"{request.table} {request.address}+{request.count}"
    try:
        response = await getattr(client, READERS[request.table])(
            request.address, count=request.count, device_id=request.unit_id
        )
    except ConnectionException as exc:
        raise RequestFailed(COMM_LOST, f"{where}: {exc}", link=True) from None
    except ModbusIOException as exc:
        if "No response" in str(exc):
            # On TCP a late answer could be taken for the next request's: reconnect. On a serial
            # line a silent unit is normal and the line is shared: keep it.
            detail = f"{where}: no answer within {device.timeout_ms} ms"
            raise RequestFailed("timeout", detail, link=device.transport == "tcp") from None
        raise RequestFailed("bad_response", f"{where}: {exc}", link=True) from None
    if response.isError():
        code = getattr(response, "exception_code", 0)
        raise RequestFailed(f"exception_{code}", f"{where}: exception code {code}")
    block = response.bits if request.table in BIT_TABLES else response.registers
    if len(block) < request.count or (request.table not in BIT_TABLES and len(block) != request.count):
        raise RequestFailed("bad_length", f"{where}: {len(block)} values in the answer")
    return block


class DevicePoller:
    """Polls one device on its interval: connect, read the planned requests, decode, emit."""

    def __init__(self, device: ModbusDevice, source: ModbusSource):
        from protocols.modbus.codec import BlockDecoder

        self.device, self.source = device, source
        self.requests = plan_requests(device)
        self.decoders = [BlockDecoder([device.tags[i] for i in r.tags], r.address) for r in self.requests]
        order = [i for r in self.requests for i in r.tags]  # rows of a round: tags in plan order
        self.all_names = [f"{device.name}.{device.tags[i].name}" for i in order]
        self._tag_column: pl.Series | None = None  # made for the first round that is a frame
        self.text_rows = [row for row, i in enumerate(order) if device.tags[i].type == "string"]
        self.ends = list(accumulate(len(r.tags) for r in self.requests))  # end row of each request
        self.interval = device.poll_interval_ms / 1000
        self.failures = 0
        self.client: Any = None

    def tag_column(self) -> pl.Series:
        """The tag column of this device's rounds, made once (for rounds that are frames)."""
        if self._tag_column is None:
            self._tag_column = pl.Series("tag", self.all_names, dtype=pl.String)
        return self._tag_column

    @property
    def backoff(self) -> float:
        """Seconds to wait after `failures` failed rounds in a row: doubling, capped (the shared
        back-off of engine/runs/retry.py)."""
        return backoff_delay(self.failures, self.interval, 2.0, self.device.backoff_max_ms / 1000)

    async def run(self, phase: float = 0.0) -> None:
        """Poll until cancelled; the first round waits `phase` (0 - 1) of the interval."""
        await asyncio.sleep(phase * self.interval)
        due = time.monotonic()
        while True:
            disconnected = self.client is None or not self.client.connected
            if disconnected and not await self.guarded_connect():
                self.failures += 1
                await asyncio.sleep(self.backoff)
                due = time.monotonic()
                continue
            now = time.monotonic()
            if now - due > self.interval / 2:
                self.source.counters["late_polls"] += 1
                due = now  # skip the missed rounds rather than bursting to catch up
            try:
                ok = await self.poll_round()
            except Exception as exc:  # a bug in one round must not end the polling
                self.source.item_failed(f"{self.device.name}: poll round", exc)
                ok = False
            self.failures = 0 if ok else self.failures + 1
            due += self.interval if ok else self.backoff
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def guarded_connect(self) -> bool:
        """connect(), and an unexpected error in it (a serial port that cannot be opened...) is a
        failed attempt with its reason, counted and logged, never the end of the polling."""
        try:
            return await self.connect()
        except Exception as exc:
            reason = self.source.item_failed(f"{self.device.name}: connect", exc)
            self.source.device_state(self.device.name, "lost", f"{self.device.url}: {reason}")
            self.source.deliver_gap(self.all_names, COMM_LOST)
            return False

    async def connect(self) -> bool:
        was_connected = self.client is not None
        if self.source.device_states.get(self.device.name) != "lost":  # while down, it stays `lost`
            self.source.device_state(self.device.name, "reconnecting" if was_connected else "connecting")
        self.source.counters["connects"] += 1
        if self.device.transport == "rtu":
            self.client, connected = await self.source.serial_client(self.device)
        else:
            if self.client is not None:
                self.client.close()
            self.client = make_client(self.device)
            connected = await self.client.connect()
        if connected:  # `connected` comes with the first answer (poll_round), not the TCP open
            return True
        self.source.counters[f"errors_{COMM_LOST}"] += 1
        reason = await why_unreachable(self.device, self.client)
        # The first wait after a failure (run() counts it before waiting), then the cap: the line
        # stays the same from one attempt to the next, so it is said once per outage.
        cap = self.device.backoff_max_ms / 1000
        first = backoff_delay(1, self.interval, 2.0, cap)
        self.source.device_state(
            self.device.name, "lost", f"{self.device.url}: {reason}; {retrying(first, cap)}"
        )
        self.source.deliver_gap(self.all_names, COMM_LOST)
        return False

    async def poll_round(self) -> bool:
        """Read every request once; emit one batch. False when anything failed. Each request's rows
        are stamped when its answer (or its failure) came: a round of 100 requests to a slow device
        takes a few hundred ms, and its last values were not read at the round's start."""
        counters = self.source.counters
        counters["polls"] += 1
        values: list = []
        failed: list[tuple[int, int, str]] = []  # (first row, end row, reason)
        stamps: list[tuple[int, int]] = []  # (end row, epoch µs of the answer or failure)
        answered = False  # the device answered a request (with values or an exception code)
        for index, (request, decoder) in enumerate(zip(self.requests, self.decoders, strict=True)):
            counters["requests"] += 1
            try:
                block = await read_block(self.client, self.device, request)
            except RequestFailed as failure:
                counters[f"errors_{failure.reason}"] += 1
                end = self.ends[index]
                answered = answered or not failure.link
                if failure.link:  # the rest of the round would wait for the same dead link
                    end = self.ends[-1]
                    if self.device.transport == "tcp" or failure.reason == COMM_LOST:
                        self.client.close()
                    self.source.device_state(self.device.name, "lost", f"{self.device.url}: {failure}")
                failed.append((len(values), end, failure.reason))
                values.extend([None] * (end - len(values)))
                stamps.append((end, time.time_ns() // 1000))
                if failure.link:
                    break
                continue
            stamps.append((self.ends[index], time.time_ns() // 1000))
            answered = True
            counters["registers" if request.table not in BIT_TABLES else "bits"] += request.count
            try:
                decoded = decoder.decode(block)
            except Exception as exc:  # garbage in one block: its tags are bad, the others flow
                item = f"{self.device.name}: {request.table} {request.address}+{request.count}"
                self.source.item_failed(item, exc)
                counters[f"errors_{DECODE_ERROR}"] += 1
                failed.append((len(values), self.ends[index], DECODE_ERROR))
                values.extend([None] * (self.ends[index] - len(values)))
                continue
            values.extend(decoded)
        counters["points"] += len(values)
        self.source.deliver(
            round_frame(
                self.all_names, values, self.text_rows, failed, stamps, self.source.name, self.tag_column
            )
        )
        if answered and self.source.device_states.get(self.device.name) != "connected":
            self.source.device_state(self.device.name, "connected", self.device.url)
        return not failed


def _failed_columns(rows: int, failed: list[tuple[int, int, str]]) -> tuple[list[str], list[str | None]]:
    """`quality` and `reason` of a round whose requests in `failed` (first row, end row, why) failed."""
    quality: list[str] = ["good"] * rows
    reason: list[str | None] = [None] * rows
    for first, end, why in failed:
        quality[first:end] = ["bad"] * (end - first)
        reason[first:end] = [why] * (end - first)
    return quality, reason


def round_frame(
    tags: list[str],
    values: list,
    text_rows: list[int],
    failed: list[tuple[int, int, str]],
    stamps: list[tuple[int, int]],
    source: str,
    tag_column: Callable[[], pl.Series] | None = None,
) -> pl.DataFrame | TagBatch:
    """One poll round as one TAG_SCHEMA batch, built column-wise: a `TagBatch` when it has at most
    `LEAN_ROWS` rows (no Polars: an idle few-tag pipeline never imports it), else a frame.

    Why not TagBatchBuilder: its take() converts one Python datetime per row, 58 ms for a round
    of 12,500 tags, against ~1.5 ms here. A round always carries every tag of the device in plan
    order (failed ones as bad nulls), so the tag column is built once per device (`tag_column`).
    `stamps`: (end row, epoch µs) per request, in row order, the last ending at the last row: each
    request's rows carry its own (one literal when they are all the same).
    """
    texts = None
    if text_rows:
        texts = [None] * len(values)
        for row in text_rows:
            texts[row], values[row] = values[row], None
    if len(values) <= LEAN_ROWS:
        return _round_batch(tags, values, texts, failed, stamps, source)
    series = tag_column() if tag_column is not None else pl.Series("tag", tags, dtype=pl.String)
    rows, time = len(values), tag_schema()["timestamp"]
    value = pl.Series("value", values, dtype=pl.Float64)
    if failed:
        quality, reason = _failed_columns(rows, failed)
        good = pl.Series("quality", quality, dtype=pl.String)
        why = pl.Series("reason", reason, dtype=pl.String)
    else:
        good, why = _repeat("quality", "good", pl.String, rows), _repeat("reason", None, pl.String, rows)
    # NaN/infinity in a float register: garbage, or the device's "no value". A finite sum (NULLs
    # skipped) means every value is finite: one pass, no query (`is_finite` and its mask are three).
    if not math.isfinite(value.sum()):
        at = (~value.is_finite()).fill_null(False).arg_true()
        value, good, why = value.scatter(at, None), good.scatter(at, "bad"), why.scatter(at, NOT_FINITE)
    # Series made one by one, no expressions: nothing for Polars' thread pool to wake for
    return pl.DataFrame(
        [
            _stamp_column(stamps, rows).cast(time),
            _repeat("server_timestamp", None, time, rows),
            series,
            value,
            pl.Series("value_text", texts, dtype=pl.String)
            if texts
            else _repeat("value_text", None, pl.String, rows),
            good,
            why,
            _repeat("source", source, pl.String, rows),
            # epoch µs, then cast: a tz-aware datetime made a Series costs ~0.3 ms more a round
            _repeat("received_at", epoch_us(utc_now()), pl.Int64, rows).cast(time),
        ]
    )


def _repeat(name: str, value: Any, dtype: Any, rows: int) -> pl.Series:
    """`value` `rows` times (a constant column, made without the expression engine)."""
    return pl.Series(name, [value], dtype=dtype).new_from_index(0, rows)


def _stamp_column(stamps: list[tuple[int, int]], rows: int) -> pl.Series:
    """The timestamp column (epoch µs, Int64) of `round_frame`: each request's stamp over its rows."""
    if len({us for _, us in stamps}) == 1:
        return _repeat("timestamp", stamps[0][1], pl.Int64, rows)
    ends = np.fromiter((end for end, _ in stamps), np.int64, len(stamps))
    at = np.fromiter((us for _, us in stamps), np.int64, len(stamps))
    return pl.Series("timestamp", np.repeat(at, np.diff(ends, prepend=0)))


def _round_batch(
    tags: list[str],
    values: list,
    texts: list | None,
    failed: list[tuple[int, int, str]],
    stamps: list[tuple[int, int]],
    source: str,
) -> TagBatch:
    """`round_frame`'s rows as a `TagBatch`: the same values, qualities, reasons and stamps."""
    rows = len(values)
    quality, reason = _failed_columns(rows, failed)
    numbers: list[float | None] = [None if v is None else float(v) for v in values]
    for row, number in enumerate(numbers):
        if number is not None and not math.isfinite(number):  # as round_frame: garbage or "no value"
            numbers[row], quality[row], reason[row] = None, "bad", NOT_FINITE
    at, begin = [], 0
    for end, us in stamps:
        at += [us] * (end - begin)
        begin = end
    return TagBatch(
        {
            "timestamp": at,
            "server_timestamp": [None] * rows,
            "tag": tags,
            "value": numbers,
            "value_text": texts or [None] * rows,
            "quality": quality,
            "reason": reason,
            "source": [source] * rows,
            "received_at": [epoch_us(utc_now())] * rows,
        }
    )


class ModbusSource(StreamingSource):
    def __init__(self, config: ModbusSourceConfig, ctx: RunContext, name: str = "modbus"):
        super().__init__(config, ctx, name)
        self.device_states: dict[str, SessionState] = {}
        self._emit: Callable[[pl.DataFrame], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pollers: list[DevicePoller] = []
        self._tasks: list[asyncio.Task] = []
        self._serial_clients: dict[str, Any] = {}
        self._serial_locks: dict[str, asyncio.Lock] = {}
        self._emit_lock = threading.Lock()

    # -- the contract ------------------------------------------------------------------------
    def start(self, emit: Callable[[pl.DataFrame], None]) -> None:
        if self._thread is not None:
            return
        self._emit = emit
        self._pollers = [DevicePoller(d, self) for d in self.config.devices]
        self.device_states = {d.name: "connecting" for d in self.config.devices}
        self.set_state("connecting")
        demote_library_logs("pymodbus")
        self._loop = new_event_loop(self.requests_per_s())
        self._thread = self.spawn(self._run, name=f"modbus-{self.name}")

    def requests_per_s(self) -> float:
        """The requests a second the planned rounds make: the event loop is chosen by it
        (protocols/event_loop.py). 0 with a serial device: pymodbus' serial transport has only run
        on asyncio's loop, and a serial line polls a few requests a second anyway."""
        if any(p.device.transport != "tcp" for p in self._pollers):
            return 0.0
        return sum(len(p.requests) / p.interval for p in self._pollers)

    def stop(self) -> None:
        if self._thread is None:
            return
        with self._emit_lock:
            self._emit = None  # nothing is emitted after stop() returns, even by a round in flight
        self._loop.call_soon_threadsafe(self._cancel_all)
        self._thread.join(10)
        self._thread = self._loop = None
        self.set_state("stopped")

    def check(self) -> None:
        """Connect to every device and read its first tag's register; one line on failure."""
        demote_library_logs("pymodbus")
        result: list[BaseException] = []
        thread = threading.Thread(target=lambda: result.extend(asyncio.run(_check_all(self.config.devices))))
        thread.start()
        thread.join()
        if result:
            raise result[0]

    # -- used by the pollers (on the loop thread) --------------------------------------------
    async def serial_client(self, device: ModbusDevice) -> tuple[Any, bool]:
        """Devices on one serial line share its one client (pymodbus serialises their requests)."""
        key = str(device.serial_port)
        lock = self._serial_locks.setdefault(key, asyncio.Lock())
        async with lock:
            client = self._serial_clients.get(key)
            if client is None or not client.connected:
                if client is not None:
                    client.close()
                client = self._serial_clients[key] = make_client(device)
                return client, bool(await client.connect())
            return client, True

    def deliver(self, batch: pl.DataFrame | TagBatch) -> None:
        with self._emit_lock:
            emit = self._emit
            if emit is None:
                self.counters["dropped_after_stop"] += batch.height
                return
            emit(batch)

    def deliver_gap(self, names: list[str], reason: str) -> None:
        builder = TagBatchBuilder(self.name)
        builder.gap(names, reason)
        self.deliver(builder.take_small())

    def device_state(self, device: str, state: SessionState, detail: str | None = None) -> None:
        """Per-device state; the source's state is the worst of them, naming that device."""
        if state == "lost" and self.device_states.get(device) != "lost":
            self.counters["links_lost"] += 1
        self.device_states[device] = state
        worst = max(self.device_states.items(), key=lambda item: STATE_RANK[item[1]])
        if STATE_RANK[worst[1]] == 0:
            one = len(self.device_states) == 1 and detail
            self.set_state("connected", detail if one else f"{len(self.device_states)} devices")
        elif worst[0] == device:
            if detail and len(self.device_states) > 1:
                detail = f"{device}: {detail}"
            self.set_state(worst[1], detail or device)
        elif self.state != worst[1]:
            self.set_state(worst[1], worst[0])

    # -- internals ---------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        # The devices' first rounds spread evenly over the interval: their batches then reach the
        # pipeline one after another instead of all at once (docs/performance.md, task M).
        n = len(self._pollers)
        self._tasks = [
            asyncio.create_task(p.run(i / n), name=p.device.name) for i, p in enumerate(self._pollers)
        ]
        tasks = self._tasks
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
            errors = [
                r
                for r in results
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
            ]
            if errors:  # a poller died: the devices it served deliver nothing more
                raise errors[0]
        finally:
            for poller in self._pollers:
                if poller.client is not None:
                    poller.client.close()

    def _cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()


async def _check_all(devices: list[ModbusDevice]) -> list[ConnectorError]:
    for device in devices:
        tag = device.tags[0]
        request = ReadRequest(tag.table, device.unit_id, tag.address, 1, (0,))
        client = make_client(device)
        try:
            if not await client.connect():
                why = await why_unreachable(device, client)
                return [
                    ConnectorError(
                        f"modbus device '{device.name}': cannot connect to {device.endpoint}: {why}"
                    )
                ]
            await read_block(client, device, request)
        except RequestFailed as failure:
            return [
                ConnectorError(
                    f"modbus device '{device.name}' ({device.endpoint}), tag '{tag.name}': {failure}"
                )
            ]
        finally:
            client.close()
    return []


@register
class ModbusConnector(Connector):
    connector_type = "modbus"
    title = "Modbus TCP/RTU"
    SourceConfig = ModbusSourceConfig

    source_class = ModbusSource
