"""A DNP3 outstation modelling the wind farm's substation RTU, on opendnp3, with fault injection.

opendnp3 (the `yadnp3` wheel) is the whole outstation: link, transport, application layer, the
database, event buffers, unsolicited responses with confirm and retry, select-before-operate,
time sync and the IIN bits (DEVICE_RESTART, NEED_TIME, EVENT_BUFFER_OVERFLOW, which clears once
the master has read the buffer). This module feeds it the model's values, applies controls to its
points and records time syncs.

opendnp3's Python binding gives every point type the same number of points, so the RTU serves
`2 * feeders` points of each of the seven types. For feeder i of n (values from protocols/windfarm.py
at model time t):

| type                  | index i                          | index n + i                        |
|-----------------------|----------------------------------|------------------------------------|
| binary_input          | breaker closed                   | earth switch closed                |
| double_bit_binary     | breaker position (on = closed)   | earth switch position              |
| analog_input          | voltage, V                       | active power, kW                   |
| counter               | exported energy, kWh             | breaker operations                 |
| frozen_counter        | exported energy at the last freeze | breaker operations at the freeze |
| binary_output_status  | breaker (CROB i: close/trip)     | earth switch (CROB n + i)          |
| analog_output_status  | power limit, kW (analog output i) | voltage set point, V              |

Every point is in class 1 (opendnp3's default). The database is loaded at start without events; a
later change of value or flags is an event carrying the time of the change, so timed event variations (g2v2, g32v3...) give the outstation's time.
`points()` gives the matching connector point list (kV and MW through `scale`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any, get_args

from protocols import windfarm
from protocols.dnp3.config import Dnp3Point, PointType
from protocols.serving import serve

log = logging.getLogger(__name__)
STACK_LOG = logging.getLogger("protocols.dnp3.opendnp3")

ONLINE = 0x01
RESTART = 0x02
COMM_LOST = 0x04
OVER_RANGE = 0x20

POINT_TYPES: tuple[str, ...] = get_args(PointType)  # the master's point types, in its order
# IEEE 1815 double-bit states
INTERMEDIATE, DETERMINED_OFF, DETERMINED_ON, INDETERMINATE = 0, 1, 2, 3
FREEZE_EVERY_S = 900.0  # model time: frozen counters follow the counters every 15 minutes
DEFAULT_POWER_LIMIT_KW = 12_000.0
DEFAULT_VOLTAGE_SET_POINT_V = 33_000.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (opendnp3 cannot bind port 0 and tell us which it got)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class Dnp3Simulator:
    """`Dnp3Simulator(port=0, feeders=4).start()`; `port` is the bound port once started.

    `update_interval_s=None` freezes the model: values change only through `set_time(t)`,
    `set_value` or controls, which is what tests want; otherwise model time runs with the wall
    clock from `start_t`. `event_buffer` is the number of events of each type the outstation
    keeps; when more happen before the master reads them, it reports EVENT_BUFFER_OVERFLOW.
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
        event_buffer: int | None = None,
        need_time: bool = True,
    ):
        self.host, self.port, self.feeders = host, port, feeders
        self.address, self.master_address = address, master_address
        self.update_interval_s, self.start_t = update_interval_s, start_t
        self.confirm_timeout_s = confirm_timeout_s
        self.event_buffer = event_buffer or max(100, 16 * feeders)
        self.t = start_t
        self.restarts = 0
        self.need_time = need_time
        self.time_syncs: list[datetime] = []  # every time a master wrote (g50v1/g50v3)
        self.controls: list[dict[str, Any]] = []  # every operate the RTU applied (or refused)
        self.errors = 0  # exceptions in opendnp3 callbacks (caught and logged)
        self._clock_offset_ms = 0  # what time syncs set: our clock = wall clock + offset
        self._forced_flags: dict[tuple[str, int], int] = {}
        self._overrides: dict[tuple[str, int], float] = {}  # point values set by controls
        self._operations: dict[int, int] = {}  # feeder -> breaker operations (counter n + i)
        self._values: dict[tuple[str, int], tuple[float, int]] = {}  # what the database holds
        self._frozen_at: int | None = None
        self._lock = threading.RLock()
        self._manager: Any = None
        self._channel: Any = None
        self._outstation: Any = None
        self._keep: list[Any] = []
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Dnp3Simulator:
        import opendnp3

        self._manager = opendnp3.DNP3Manager(1, _log_handler())
        self._stopping.clear()
        tries = 5 if self.port == 0 else 1
        for attempt in range(tries):
            port = self.port or free_port(self.host)
            try:
                self._serve(port)
                break
            except RuntimeError as exc:  # "Unable to bind server to the specified port: ..."
                if attempt == tries - 1:
                    self._manager.Shutdown()
                    self._manager = None
                    raise RuntimeError(
                        f"DNP3 simulator: cannot listen on {self.host}:{port}: {_reason(exc)}"
                    ) from None
        self.port = port
        if self.update_interval_s:
            self._ticker = threading.Thread(target=self._tick, name="dnp3-simulator", daemon=True)
            self._ticker.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.join(5)
            self._ticker = None
        manager, self._manager = self._manager, None
        self._channel = self._outstation = None
        if manager is not None:
            manager.Shutdown()

    def __enter__(self) -> Dnp3Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"dnp3://{self.host}:{self.port} (outstation {self.address}, master {self.master_address})"

    @property
    def per_type(self) -> int:
        return 2 * self.feeders

    @property
    def point_count(self) -> int:
        return len(POINT_TYPES) * self.per_type

    def points(self) -> list[Dnp3Point]:
        """The connector's point list for this RTU: readable tag names, kV and MW."""
        n = self.feeders
        points: list[Dnp3Point] = []
        for i in range(n):
            f = f"substation.feeder{i + 1}"
            points += [
                Dnp3Point(type="binary_input", index=i, tag=f"{f}.breaker_closed"),
                Dnp3Point(type="binary_input", index=n + i, tag=f"{f}.earth_switch_closed"),
                Dnp3Point(type="double_bit_binary", index=i, tag=f"{f}.breaker_position"),
                Dnp3Point(type="double_bit_binary", index=n + i, tag=f"{f}.earth_switch_position"),
                Dnp3Point(type="analog_input", index=i, tag=f"{f}.voltage_kv", scale=0.001, unit="kV"),
                Dnp3Point(type="analog_input", index=n + i, tag=f"{f}.power_mw", scale=0.001, unit="MW"),
                Dnp3Point(type="counter", index=i, tag=f"{f}.energy_kwh", unit="kWh"),
                Dnp3Point(type="counter", index=n + i, tag=f"{f}.breaker_operations"),
                Dnp3Point(type="frozen_counter", index=i, tag=f"{f}.energy_kwh_frozen", unit="kWh"),
                Dnp3Point(type="frozen_counter", index=n + i, tag=f"{f}.breaker_operations_frozen"),
                Dnp3Point(type="binary_output_status", index=i, tag=f"{f}.breaker_command"),
                Dnp3Point(type="binary_output_status", index=n + i, tag=f"{f}.earth_switch_command"),
                Dnp3Point(type="analog_output_status", index=i, tag=f"{f}.power_limit_kw", unit="kW"),
                Dnp3Point(type="analog_output_status", index=n + i, tag=f"{f}.voltage_set_point_v", unit="V"),
            ]
        return points

    def model_values(self, t: float) -> dict[tuple[str, int], float]:
        """(point type, index) -> the raw value the RTU serves at model time `t` (controls included)."""
        n = self.feeders
        values: dict[tuple[str, int], float] = {}
        with self._lock:
            overrides = dict(self._overrides)
            operations = {i: float(self._operations.get(i, 0)) for i in range(n)}
        for i in range(n):
            closed = overrides.get(("binary_input", i), float(windfarm.breaker_closed(t, i)))
            earth = overrides.get(("binary_input", n + i), 0.0)
            energy = float(int(windfarm.meter_energy_kwh(t, i)))
            values["binary_input", i] = closed
            values["binary_input", n + i] = earth
            values["double_bit_binary", i] = float(DETERMINED_ON if closed else DETERMINED_OFF)
            values["double_bit_binary", n + i] = float(DETERMINED_ON if earth else DETERMINED_OFF)
            values["analog_input", i] = float(round(windfarm.feeder_voltage_kv(t, i) * 1000))
            values["analog_input", n + i] = float(round(windfarm.meter_power_kw(t, i)))
            values["counter", i] = energy
            values["counter", n + i] = operations[i]
            values["binary_output_status", i] = closed
            values["binary_output_status", n + i] = earth
            values["analog_output_status", i] = overrides.get(
                ("analog_output_status", i), DEFAULT_POWER_LIMIT_KW
            )
            values["analog_output_status", n + i] = overrides.get(
                ("analog_output_status", n + i), DEFAULT_VOLTAGE_SET_POINT_V
            )
        return values

    # -- faults and controls -----------------------------------------------------------------------

    def set_time(self, t: float) -> None:
        """Move model time to `t` and update every point; changes become events."""
        self._apply(t)

    def set_value(
        self, point_type: str, index: int, value: float, flags: int = ONLINE, at: datetime | None = None
    ) -> None:
        """Set one point; `at` is the event's time (default: now, on the outstation's clock)."""
        self.set_values({(point_type, index): value}, flags, at)

    def set_values(
        self, values: dict[tuple[str, int], float], flags: int = ONLINE, at: datetime | None = None
    ) -> None:
        """Set several points at once (one update of the database: their events arrive together)."""
        for point_type, index in values:
            if point_type not in POINT_TYPES or point_type == "frozen_counter":
                allowed = ", ".join(t for t in POINT_TYPES if t != "frozen_counter")
                raise ValueError(f"DNP3 simulator: no point type '{point_type}' to set (allowed: {allowed})")
            if not 0 <= index < self.per_type:
                raise ValueError(
                    f"DNP3 simulator: {point_type} {index}: allowed indexes 0..{self.per_type - 1}"
                )
        self._write({key: (value, flags) for key, value in values.items()}, at)

    def set_flags(self, point_type: str, index: int, flags: int) -> None:
        """Force a point's flag octet (COMM_LOST, OVER_RANGE...) until `clear_flags`; makes an event."""
        with self._lock:
            self._forced_flags[point_type, index] = flags
        self._apply(self.t)

    def clear_flags(self) -> None:
        with self._lock:
            self._forced_flags.clear()
        self._apply(self.t)

    def freeze_counters(self) -> None:
        """Copy every counter into its frozen counter (opendnp3's freeze; an event when it changed)."""
        self._write({}, None, freeze=True)

    def restart(self) -> None:
        """A device restart: the connection drops, the outstation comes back with a fresh
        database (events from before are lost, as on a real RTU), DEVICE_RESTART set and its
        clock unset (NEED_TIME)."""
        with self._lock:
            self.restarts += 1
            channel, self._channel, self._outstation = self._channel, None, None
            self._values.clear()
            self.need_time = True
        if channel is not None:
            channel.Shutdown()  # outside the lock: it waits for opendnp3's callbacks, which may take it
        with self._lock:
            self._serve(self.port)

    def go_offline(self) -> None:
        """The RTU stops listening and drops the master (a power cut); `come_back()` ends it."""
        outstation = self._outstation
        if outstation is not None:
            outstation.Disable()

    def come_back(self) -> None:
        outstation = self._outstation
        if outstation is not None:
            outstation.Enable()

    def snapshot(self) -> dict[tuple[str, int], tuple[float, int]]:
        """(point type, index) -> (raw value, flags) as the database holds them now."""
        with self._lock:
            return dict(self._values)

    @property
    def clock(self) -> datetime:
        """The outstation's clock: the wall clock plus what the last time sync set."""
        return datetime.fromtimestamp((time.time_ns() // 1_000_000 + self._clock_offset_ms) / 1000, UTC)

    # -- the outstation ---------------------------------------------------------------------------

    def _serve(self, port: int) -> None:
        import opendnp3 as o

        classes = _outstation_classes()
        listener = classes["Listener"]()
        channel = self._manager.AddTCPServer(
            f"rtu-{port}",
            o.levels.NORMAL,
            o.ServerAcceptMode.CloseExisting,
            o.IPEndpoint(self.host, port),
            listener,
        )
        config = o.OutstationStackConfig(o.DatabaseConfig(self.per_type))
        config.database.octet_string = {}
        config.database.time_and_interval = {}
        config.outstation.eventBufferConfig = o.EventBufferConfig.AllTypes(self.event_buffer)
        config.outstation.params.allowUnsolicited = True
        config.outstation.params.unsolConfirmTimeout = o.TimeDuration.Milliseconds(
            int(self.confirm_timeout_s * 1000)
        )
        config.link.LocalAddr = self.address
        config.link.RemoteAddr = self.master_address
        handler, app = classes["Commands"](self), classes["Application"](self)
        outstation = channel.AddOutstation(f"rtu-{port}.outstation", handler, app, config)
        self._keep = [listener, handler, app]
        self._channel, self._outstation = channel, outstation
        self._frozen_at = None
        self._apply(self.t, initial=True)  # the database as the RTU starts: values, no events
        outstation.Enable()

    def _apply(self, t: float, initial: bool = False) -> None:
        with self._lock:
            self.t = t
            values = self.model_values(t)
            updates = {key: (value, ONLINE) for key, value in values.items()}
            freeze = int(t // FREEZE_EVERY_S)
            due = self._frozen_at != freeze
            self._frozen_at = freeze
            self._write(updates, None, freeze=due, initial=initial)

    def _write(
        self,
        updates: dict[tuple[str, int], tuple[float, int]],
        at: datetime | None,
        freeze: bool = False,
        initial: bool = False,
    ) -> None:
        """Send the points whose value or flags changed to the database in one `Apply`; with
        `freeze`, then copy every counter into its frozen counter. `initial` loads the database
        without making events (a real RTU starts with values, not with a buffer of changes)."""
        import opendnp3 as o

        with self._lock:
            outstation = self._outstation
            if outstation is None:
                return
            ms = (
                int(at.timestamp() * 1000)
                if at is not None
                else time.time_ns() // 1_000_000 + self._clock_offset_ms
            )
            stamp = o.DNPTime(ms, o.TimestampQuality.SYNCHRONIZED)
            builder = o.UpdateBuilder()
            mode = o.EventMode.Suppress if initial else o.EventMode.Detect
            changed = 0
            for (kind, index), (value, flags) in updates.items():
                flags = self._forced_flags.get((kind, index), flags)
                if self._values.get((kind, index)) == (value, flags):
                    continue
                if kind == "frozen_counter":
                    raise ValueError(
                        "DNP3 simulator: frozen counters change only by a freeze (freeze_counters)"
                    )
                self._values[kind, index] = (value, flags)
                builder.Update(_measurement(o, kind, value, flags, stamp), index, mode)
                changed += 1
            if freeze:
                for index in range(self.per_type):
                    builder.FreezeCounter(index, False, mode)
                    value, flags = self._values.get(("counter", index), (0.0, ONLINE))
                    self._values["frozen_counter", index] = (value, flags)
                changed += 1
            if changed:
                outstation.Apply(builder.Build())

    def _tick(self) -> None:
        began = time.monotonic()
        while not self._stopping.wait(self.update_interval_s or 0.5):
            try:
                self._apply(self.start_t + time.monotonic() - began)
            except Exception as exc:  # a bad tick must not end the model
                self.errors += 1
                log.warning("DNP3 simulator: model update failed: %s", _reason(exc))

    # -- what opendnp3 asks (its threads; every body is guarded) ---------------------------------

    def _select(self, command: Any, index: int) -> Any:
        import opendnp3 as o

        return o.CommandStatus.SUCCESS if self._target(command, index) else o.CommandStatus.NOT_SUPPORTED

    def _operate(self, command: Any, index: int, op_type: Any) -> Any:
        import opendnp3 as o

        target = self._target(command, index)
        record = {"index": index, "mode": op_type.name, "command": type(command).__name__}
        if target is None:
            self.controls.append({**record, "status": "NOT_SUPPORTED"})
            return o.CommandStatus.NOT_SUPPORTED
        n = self.feeders
        with self._lock:
            if isinstance(command, o.ControlRelayOutputBlock):
                on = _crob_closes(o, command)
                record.update(op=command.opType.name, tcc=command.tcc.name, value=float(on))
                if index < n and self._values.get(("binary_input", index), (None, 0))[0] != float(on):
                    self._operations[index] = self._operations.get(index, 0) + 1
                self._overrides["binary_input", index] = float(on)
            else:
                record.update(value=float(command.value))
                self._overrides["analog_output_status", index] = float(command.value)
            self.controls.append({**record, "status": "SUCCESS"})
        self._apply(self.t)  # `Apply` only queues the update on opendnp3's thread: no wait here
        return o.CommandStatus.SUCCESS

    def _target(self, command: Any, index: int) -> str | None:
        import opendnp3 as o

        if not 0 <= index < self.per_type:
            return None
        if isinstance(command, o.ControlRelayOutputBlock):
            return None if command.opType.name in ("NUL", "Undefined") else "binary_output_status"
        return "analog_output_status"

    def _time_written(self, ms: int) -> bool:
        self._clock_offset_ms = ms - time.time_ns() // 1_000_000
        self.time_syncs.append(datetime.fromtimestamp(ms / 1000, UTC))
        self.need_time = False
        return True

    def _now(self) -> Any:
        import opendnp3 as o

        quality = o.TimestampQuality.UNSYNCHRONIZED if self.need_time else o.TimestampQuality.SYNCHRONIZED
        return o.DNPTime(time.time_ns() // 1_000_000 + self._clock_offset_ms, quality)


def _measurement(o: Any, kind: str, value: float, flags: int, stamp: Any) -> Any:
    """An opendnp3 measurement with its flag octet (state bits included) and time."""
    flags &= 0x3F
    if kind in ("binary_input", "binary_output_status"):
        cls = o.Binary if kind == "binary_input" else o.BinaryOutputStatus
        m, flags = cls(bool(value)), flags | (0x80 if value else 0)
    elif kind == "double_bit_binary":
        m, flags = o.DoubleBitBinary(o.DoubleBit(int(value))), flags | (int(value) << 6)
    elif kind == "analog_input":
        m = o.Analog(float(value))
    elif kind == "counter":
        m = o.Counter(int(value))
    else:
        m = o.AnalogOutputStatus(float(value))
    m.flags = o.Flags(flags)
    m.time = stamp
    return m


def _crob_closes(o: Any, command: Any) -> bool:
    """Whether a CROB closes (on) or trips (off) its output."""
    if command.tcc == o.TripCloseCode.CLOSE:
        return True
    if command.tcc == o.TripCloseCode.TRIP:
        return False
    return command.opType in (o.OperationType.LATCH_ON, o.OperationType.PULSE_ON)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.split(": ", 1)[-1] if text.startswith("Unable to bind") else text or type(exc).__name__


_classes: dict[str, Any] = {}


def _log_handler() -> Any:
    import opendnp3

    class LogHandler(opendnp3.ILogHandler):
        def __init__(self) -> None:
            super().__init__()

        def log(self, module: Any, id: str, level: Any, location: str, message: str) -> None:
            with contextlib.suppress(Exception):  # never into the C++ stack
                STACK_LOG.debug("%s: %s", id, message)

    return LogHandler()


def _outstation_classes() -> dict[str, Any]:
    if _classes:
        return _classes
    import opendnp3 as o

    def guarded(sim: Dnp3Simulator, what: str, fn: Any, fallback: Any) -> Any:
        try:
            return fn()
        except Exception as exc:
            sim.errors += 1
            log.warning("DNP3 simulator: %s failed: %s", what, _reason(exc))
            return fallback

    class Listener(o.IChannelListener):
        def __init__(self) -> None:
            super().__init__()

        def OnStateChange(self, state: Any) -> None:
            pass

    class Commands(o.ICommandHandler):
        def __init__(self, sim: Dnp3Simulator) -> None:
            super().__init__()
            self.sim = sim

        def Begin(self) -> None:
            pass

        def End(self) -> None:
            pass

        def Select(self, command: Any, index: int) -> Any:
            return guarded(
                self.sim, "select", lambda: self.sim._select(command, index), o.CommandStatus.HARDWARE_ERROR
            )

        def Operate(self, command: Any, index: int, handler: Any, op_type: Any) -> Any:
            return guarded(
                self.sim,
                "operate",
                lambda: self.sim._operate(command, index, op_type),
                o.CommandStatus.HARDWARE_ERROR,
            )

    class Application(o.IOutstationApplication):
        def __init__(self, sim: Dnp3Simulator) -> None:
            super().__init__()
            self.sim = sim

        def SupportsWriteAbsoluteTime(self) -> bool:
            return True

        def WriteAbsoluteTime(self, timestamp: Any) -> bool:
            return guarded(
                self.sim, "time sync", lambda: self.sim._time_written(timestamp.msSinceEpoch), False
            )

        def SupportsAssignClass(self) -> bool:
            return False

        def GetApplicationIIN(self) -> Any:
            def iin() -> Any:
                bits = o.ApplicationIIN()
                bits.needTime = self.sim.need_time
                return bits

            return guarded(self.sim, "IIN", iin, o.ApplicationIIN())

        def ColdRestartSupport(self) -> Any:
            return o.RestartMode.UNSUPPORTED

        def WarmRestartSupport(self) -> Any:
            return o.RestartMode.UNSUPPORTED

        def ColdRestart(self) -> int:
            return 0

        def WarmRestart(self) -> int:
            return 0

        def Now(self) -> Any:
            return guarded(self.sim, "clock", self.sim._now, o.DNPTime(0))

    _classes.update(Listener=Listener, Commands=Commands, Application=Application)
    return _classes


def run_cli(port: int, tags: int, seconds: float | None) -> None:
    """Serve a substation RTU with about `tags` points until Ctrl-C (or `seconds`)."""
    feeders = max(1, -(-tags // (2 * len(POINT_TYPES))))
    try:
        sim = Dnp3Simulator(port=port, feeders=feeders).start()
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    print(f"DNP3 outstation on {sim.endpoint}: {sim.point_count} points ({feeders} feeders)", flush=True)
    serve(sim.stop, seconds)
