"""A DNP3 outstation modelling the wind farm's substation RTU, with fault injection.

The application layer is dnp3py's `Outstation` (its database, event buffers and request handling).
The TCP side is our own small loop instead of dnp3py's `OutstationTcpRunner`, because that runner
only ever answers requests: it never sends the unsolicited responses `Outstation.generate_unsolicited`
builds, and it has no hooks for faults. Here a pusher task sends them (and re-sends an unconfirmed
one after the confirm timeout, as IEEE 1815-2012 4.6.3 asks), and every fault is a flag the loop
looks at.

Points, for `feeders` = n (values from protocols/windfarm.py at model time t):
- BI i        feeder i breaker closed                        class 1
- AI i        feeder i voltage, volts (g30v1 carries integers) class 2
- AI n + i    feeder i active power, kW                       class 2
- CTR i       feeder i exported energy, kWh                   class 3
`points()` gives the matching connector point list (kV and MW through `scale`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from protocols import windfarm
from protocols.dnp3.config import Dnp3Point
from protocols.serving import serve

log = logging.getLogger(__name__)

ONLINE = 0x01
RESTART = 0x02
COMM_LOST = 0x04
OVER_RANGE = 0x20


class Dnp3Simulator:
    """`Dnp3Simulator(port=0, feeders=4).start()`; `port` is the bound port once started.

    `update_interval_s=None` freezes the model: values change only through `set_time(t)` or
    `set_value`, which is what tests want; otherwise model time runs with the wall clock from
    `start_t`.
    """

    def __init__(
        self,
        port: int = 0,
        feeders: int = 4,
        *,
        host: str = "127.0.0.1",
        address: int = 10,
        master_address: int = 1,
        update_interval_s: float | None = 0.5,
        start_t: float = 0.0,
        confirm_timeout_s: float = 2.0,
    ):
        self.host, self.port, self.feeders = host, port, feeders
        self.address, self.master_address = address, master_address
        self.update_interval_s, self.start_t = update_interval_s, start_t
        self.confirm_timeout_s = confirm_timeout_s
        self.t = start_t
        self.stalled = False
        self.restarts = 0
        self.unsolicited_sent = 0
        self._forced_flags: dict[tuple[str, int], int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task] = set()
        self._ready = threading.Event()
        self._outstation = self._build_outstation()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Dnp3Simulator:
        self._thread = threading.Thread(target=self._run, name="dnp3-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("DNP3 simulator did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> Dnp3Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"dnp3://{self.host}:{self.port} (outstation {self.address}, master {self.master_address})"

    @property
    def point_count(self) -> int:
        return 4 * self.feeders

    def points(self) -> list[Dnp3Point]:
        """The connector's point list for this RTU: readable tag names, kV and MW."""
        n = self.feeders
        points: list[Dnp3Point] = []
        for i in range(n):
            feeder = f"substation.feeder{i + 1}"
            points += [
                Dnp3Point(type="binary_input", index=i, tag=f"{feeder}.breaker_closed"),
                Dnp3Point(type="analog_input", index=i, tag=f"{feeder}.voltage_kv", scale=0.001, unit="kV"),
                Dnp3Point(type="analog_input", index=n + i, tag=f"{feeder}.power_mw", scale=0.001, unit="MW"),
                Dnp3Point(type="counter", index=i, tag=f"{feeder}.energy_kwh", unit="kWh"),
            ]
        return points

    def model_values(self, t: float) -> dict[tuple[str, int], float]:
        """(point type, index) -> the raw value the RTU serves at model time `t`."""
        values: dict[tuple[str, int], float] = {}
        for i in range(self.feeders):
            values["binary_input", i] = float(windfarm.breaker_closed(t, i))
            values["analog_input", i] = float(round(windfarm.feeder_voltage_kv(t, i) * 1000))
            values["analog_input", self.feeders + i] = float(round(windfarm.meter_power_kw(t, i)))
            values["counter", i] = float(int(windfarm.meter_energy_kwh(t, i)))
        return values

    # -- faults and controls (thread-safe: each runs on the simulator's loop) ---------------------

    def set_time(self, t: float) -> None:
        """Move model time to `t` and update every point; changes become class 1-3 events."""
        self._call(lambda: self._apply(t))

    def set_value(
        self, point_type: str, index: int, value: float, flags: int = ONLINE, at: datetime | None = None
    ) -> None:
        """Set one point; `at` is the event's time (only counter events carry it on the wire, g22v5)."""
        self._call(lambda: self._update(point_type, index, value, flags, at))

    def set_flags(self, point_type: str, index: int, flags: int) -> None:
        """Force a point's flag octet (COMM_LOST, OVER_RANGE...) until `clear_flags`; makes an event."""

        def apply() -> None:
            self._forced_flags[point_type, index] = flags
            self._apply(self.t)

        self._call(apply)

    def clear_flags(self) -> None:
        def apply() -> None:
            self._forced_flags.clear()
            self._apply(self.t)

        self._call(apply)

    def restart(self) -> None:
        """A device restart: the connection drops, the database comes back with DEVICE_RESTART set
        and fresh values (events from before the restart are lost, as on a real RTU)."""

        def apply() -> None:
            self.restarts += 1
            self._drop_connection()
            self._outstation = self._build_outstation()
            self._apply(self.t)

        self._call(apply)

    def stall(self) -> None:
        """Stop answering (the TCP connection stays open, requests are read and ignored)."""
        self.stalled = True

    def resume(self) -> None:
        self.stalled = False

    def garbage(self, size: int = 64) -> None:
        """Write bytes that are no DNP3 frame (plus a frame start with a broken CRC) to the master."""

        def apply() -> None:
            if self._writer is not None:
                self._writer.write(os.urandom(size) + b"\x05\x64\x05\xc4\x01\x00\x0a\x00\xff\xff")

        self._call(apply)

    def snapshot(self) -> dict[tuple[str, int], tuple[float, int]]:
        """(point type, index) -> (raw value, flags) as the database holds them now."""

        def read() -> dict[tuple[str, int], tuple[float, int]]:
            db = self._outstation.database
            out: dict[tuple[str, int], tuple[float, int]] = {}
            for kind, points in (
                ("binary_input", db.binary_inputs),
                ("analog_input", db.analog_inputs),
                ("counter", db.counters),
            ):
                for index, point in points.items():
                    out[kind, index] = (float(point.value), int(point.quality))
            return out

        return self._call(read)

    def pending_events(self) -> int:
        return self._call(lambda: self._outstation.database.event_buffer.total_count)

    # -- the outstation ---------------------------------------------------------------------------

    def _build_outstation(self) -> Any:
        from dnp3.database import Database, DatabaseConfig
        from dnp3.database.event_buffer import EventBufferConfig
        from dnp3.database.point import AnalogInputConfig, BinaryInputConfig, CounterConfig, EventClass
        from dnp3.outstation.config import OutstationConfig
        from dnp3.outstation.outstation import Outstation

        n = self.feeders
        events = max(100, 8 * n)
        db_config = DatabaseConfig(
            max_binary_inputs=n,
            max_analog_inputs=2 * n,
            max_counters=n,
            event_buffer_config=EventBufferConfig(events, events, events),
        )
        db = Database(config=db_config)
        for i in range(n):
            db.add_binary_input(i, BinaryInputConfig(event_class=EventClass.CLASS_1))
            db.add_analog_input(i, AnalogInputConfig(event_class=EventClass.CLASS_2))
            db.add_analog_input(n + i, AnalogInputConfig(event_class=EventClass.CLASS_2))
            db.add_counter(i, CounterConfig(event_class=EventClass.CLASS_3))
        config = OutstationConfig(
            address=self.address,
            master_address=self.master_address,
            time_sync_required=False,
            confirm_timeout=self.confirm_timeout_s,
        )
        return Outstation(config=config, database=db)

    def _apply(self, t: float) -> None:
        self.t = t
        for (kind, index), value in self.model_values(t).items():
            self._update(kind, index, value, ONLINE)

    def _update(self, kind: str, index: int, value: float, flags: int, at: datetime | None = None) -> None:
        """Write a point only when its value or flags change: dnp3py makes an event on every write."""
        from dnp3.core.flags import AnalogQuality, BinaryQuality, CounterQuality
        from dnp3.core.timestamp import DNP3Timestamp

        stamp = DNP3Timestamp.from_datetime(at) if at is not None else None
        flags = self._forced_flags.get((kind, index), flags)
        db = self._outstation.database
        if kind == "binary_input":
            point = db.binary_inputs[index]
            if point.value != bool(value) or int(point.quality) != flags:
                db.update_binary_input(index, bool(value), BinaryQuality(flags), stamp)
        elif kind == "analog_input":
            point = db.analog_inputs[index]
            if point.value != value or int(point.quality) != flags:
                db.update_analog_input(index, value, AnalogQuality(flags), stamp)
        elif kind == "counter":
            point = db.counters[index]
            if point.value != int(value) or int(point.quality) != flags:
                db.update_counter(index, int(value), CounterQuality(flags), stamp)
        else:
            raise ValueError(
                f"DNP3 simulator: no point type '{kind}' (allowed: binary_input, analog_input, counter)"
            )

    # -- the event loop ---------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        if self._loop is None:
            return fn()

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
            self._ready.set()
            loop.run_forever()
        finally:
            self._drop_connection()
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            loop.close()

    async def _open(self) -> None:
        self._apply(self.start_t)
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.update_interval_s:
            self._spawn(self._tick())

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _tick(self) -> None:
        began = time.monotonic()
        while True:
            await asyncio.sleep(self.update_interval_s or 0.5)
            self._apply(self.start_t + time.monotonic() - began)

    def _drop_connection(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # DNP3 over TCP is point to point: a new master replaces the old connection.
        self._drop_connection()
        self._writer = writer
        link = _Link(self, writer)
        pusher = self._spawn(link.push_unsolicited())
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                if not self.stalled:
                    await link.receive(data)
        except (ConnectionError, OSError) as exc:
            log.debug("DNP3 simulator: connection ended: %s", exc)
        finally:
            pusher.cancel()
            if self._writer is writer:
                self._writer = None
            writer.close()


class _Link:
    """Link and transport layers of one master connection, around dnp3py's application layer."""

    def __init__(self, sim: Dnp3Simulator, writer: asyncio.StreamWriter):
        from dnp3.datalink.parser import FrameParser
        from dnp3.transport.reassembler import Reassembler
        from dnp3.transport.segmenter import Segmenter

        self.sim, self.writer = sim, writer
        self.outstation = sim._outstation
        self.parser = FrameParser()
        self.reassembler = Reassembler(max_fragment_size=self.outstation.config.max_fragment_size)
        self.segmenter = Segmenter()
        self.lock = asyncio.Lock()
        self.connection = self.outstation.new_connection_id()
        # A new association: an unsolicited response the last master never confirmed is not owed.
        self.outstation._state.unsolicited.pending_confirm = False

    async def receive(self, data: bytes) -> None:
        from dnp3.core.enums import LinkFunctionCode
        from dnp3.datalink.builder import build_ack, build_link_status
        from dnp3.outstation.peer import PeerId
        from dnp3.transport.segment import TransportSegment

        me, master = self.sim.address, self.sim.master_address
        for frame in self.parser.feed(data):
            if frame.header.destination != me or not frame.header.control.prm:
                continue
            code = frame.header.control.function_code
            if code in (LinkFunctionCode.PRI_RESET_LINK_STATE, LinkFunctionCode.PRI_TEST_LINK_STATE):
                await self._write(build_ack(master, me, False).to_bytes())
                continue
            if code == LinkFunctionCode.PRI_REQUEST_LINK_STATUS:
                await self._write(build_link_status(master, me, False).to_bytes())
                continue
            if code == LinkFunctionCode.PRI_CONFIRMED_USER_DATA:
                await self._write(build_ack(master, me, False).to_bytes())
            elif code != LinkFunctionCode.PRI_UNCONFIRMED_USER_DATA:
                continue
            if not frame.user_data:
                continue
            fragment = self.reassembler.add(TransportSegment.from_bytes(frame.user_data))
            if fragment is None:
                continue
            peer = PeerId(source=frame.header.source, connection=self.connection)
            responses = self.outstation.process_request(fragment.data, peer=peer)
            for i, response in enumerate(responses):
                raw = bytearray(response.to_bytes())
                if i < len(responses) - 1:
                    raw[0] |= 0x20  # CON on non-final fragments; we do not wait for the confirm
                await self.send_fragment(bytes(raw))

    async def send_fragment(self, fragment: bytes) -> None:
        from dnp3.datalink.builder import build_unconfirmed_user_data

        async with self.lock:  # segments of two fragments must never interleave
            for segment in self.segmenter.segment(fragment):
                frame = build_unconfirmed_user_data(
                    destination=self.sim.master_address,
                    source=self.sim.address,
                    dir_from_master=False,
                    user_data=segment.to_bytes(),
                )
                await self._write(frame.to_bytes())

    async def push_unsolicited(self) -> None:
        """Send pending events unsolicited (once the master enabled it); re-send until confirmed."""
        state = self.outstation._state.unsolicited
        last: bytes | None = None
        sent_at = 0.0
        while True:
            await asyncio.sleep(0.05)
            if self.sim.stalled or self.outstation is not self.sim._outstation:
                continue
            if state.pending_confirm:
                if last is not None and time.monotonic() - sent_at > self.sim.confirm_timeout_s:
                    await self.send_fragment(last)  # same sequence: a retry, not new data
                    sent_at = time.monotonic()
                continue
            response = self.outstation.generate_unsolicited()
            if response is None:
                continue
            last, sent_at = response.to_bytes(), time.monotonic()
            self.sim.unsolicited_sent += 1
            await self.send_fragment(last)

    async def _write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


def run_cli(port: int, tags: int, seconds: float | None) -> None:
    """Serve a substation RTU with about `tags` points until Ctrl-C (or `seconds`)."""
    feeders = max(1, -(-tags // 4))
    sim = Dnp3Simulator(port=port, feeders=feeders).start()
    print(f"DNP3 outstation on {sim.endpoint}: {sim.point_count} points ({feeders} feeders)", flush=True)
    serve(sim.stop, seconds)
