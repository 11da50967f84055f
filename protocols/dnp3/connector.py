"""DNP3 master source on opendnp3 (the `yadnp3` wheel, imported as `opendnp3`): integrity and event
polls, unsolicited responses, time sync, controls, and TAG_SCHEMA batches.

opendnp3 owns the link, transport and application layers and runs them on its own C++ threads;
this module owns the schedule, the link-loss policy (backoff, gap records, session states, as the
OPC UA source does) and the point -> tag mapping.

- One `DNP3Manager` per source (one thread). Each connection attempt is a fresh TCP client channel
  whose own retry is switched off: the source decides when to try again (`backoff_delays`, the
  shared back-off of engine/runs/retry.py), so the session state always says what is happening
  and why.
- opendnp3 calls back from its C++ threads. Every callback body is guarded: an exception is
  counted and logged with its item and never reaches the C++ stack (it would otherwise print
  "Exception ignored" on stderr and drop the rest of the header). One bad value never costs the
  others of its header.
- Values are collected column by column and handed over as one batch per response fragment (a
  `TagBatch` of plain columns when it has at most `LEAN_ROWS` values, else a Polars frame) on an
  emitter thread, so a slow consumer never stalls the DNP3 stack.
- opendnp3's own log lines go to the Python logger `protocols.dnp3.opendnp3` at debug level; the
  ones that say why a connection failed or closed also become the session state's reason.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, NoReturn

from engine.connectors.base import Connector, StreamingSource, one_line_error
from engine.connectors.registry import register
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.lazy import lazy_module
from engine.runs.retry import backoff_delays
from engine.tags import COMM_LOST, LEAN_ROWS, TagBatch, tag_schema
from protocols.dnp3 import flags as dnp3_flags
from protocols.dnp3.config import Dnp3Point, Dnp3SourceConfig, default_tag
from protocols.timestamps import PLAUSIBLE_AHEAD_US, PLAUSIBLE_FROM_US, implausible

pl = lazy_module("polars")  # imported on first use: a few values a fragment travel as a TagBatch
log = logging.getLogger(__name__)
STACK_LOG = logging.getLogger("protocols.dnp3.opendnp3")  # opendnp3's own lines, at debug level

# Event objects that carry the outstation's absolute time, read by `timed_events` polls.
TIMED_EVENT_HEADERS = ((2, 2), (4, 2), (11, 2), (22, 5), (23, 5), (32, 3), (42, 3))
# opendnp3 measurement class -> config point type
POINT_TYPE_OF = {
    "Binary": "binary_input",
    "DoubleBitBinary": "double_bit_binary",
    "Analog": "analog_input",
    "Counter": "counter",
    "FrozenCounter": "frozen_counter",
    "BinaryOutputStatus": "binary_output_status",
    "AnalogOutputStatus": "analog_output_status",
}
BINARY_TYPES = {"binary_input", "binary_output_status"}
NO_RETRY_S = 24 * 3600  # the channel's own reconnect: never (the source reconnects)

BinaryAction = Literal["latch_on", "latch_off", "pulse_on", "pulse_off", "close", "trip"]
ControlMode = Literal["select_before_operate", "direct_operate"]


def endpoint_of(config: Dnp3SourceConfig) -> str:
    return f"dnp3://{config.host}:{config.port} (outstation {config.outstation_address})"


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


class Columns:
    """Values of one response fragment, column by column; `take()` makes ONE TAG_SCHEMA frame,
    `take_small()` a `TagBatch` (no Polars) when the fragment has at most `LEAN_ROWS` values."""

    def __init__(self, source: str):
        self.source = source
        self.clear()

    def clear(self) -> None:
        self.timestamp: list[int | None] = []  # epoch microseconds; None: the value has no time
        self.tag: list[str] = []
        self.value: list[float | None] = []
        self.quality: list[str] = []
        self.reason: list[str | None] = []
        self.received_at: list[int] = []

    def __len__(self) -> int:
        return len(self.tag)

    def take_small(self) -> pl.DataFrame | TagBatch:
        """What the source hands the stream: `take_batch()` for a few values, else `take()`."""
        return self.take_batch() if len(self.tag) <= LEAN_ROWS else self.take()

    def take_batch(self) -> TagBatch:
        n = len(self.tag)
        batch = TagBatch(
            {
                "timestamp": self.timestamp,
                "server_timestamp": [None] * n,
                "tag": self.tag,
                "value": self.value,
                "value_text": [None] * n,
                "quality": self.quality,
                "reason": self.reason,
                "source": [self.source] * n,
                "received_at": self.received_at,
            }
        )
        self.clear()  # new lists: the batch keeps the old ones
        return batch

    def take(self) -> pl.DataFrame:
        n = len(self.tag)
        schema = tag_schema()
        time = schema["timestamp"]
        frame = pl.DataFrame(
            {
                "timestamp": pl.Series(self.timestamp, dtype=pl.Int64).cast(time),
                "server_timestamp": pl.Series([None] * n, dtype=pl.Int64).cast(time),
                "tag": pl.Series(self.tag, dtype=pl.String),
                "value": pl.Series(self.value, dtype=pl.Float64),
                "value_text": pl.Series([None] * n, dtype=pl.String),
                "quality": pl.Series(self.quality, dtype=pl.String),
                "reason": pl.Series(self.reason, dtype=pl.String),
                "source": pl.Series([self.source] * n, dtype=pl.String),
                "received_at": pl.Series(self.received_at, dtype=pl.Int64).cast(time),
            },
            schema=schema,
        )
        self.clear()
        return frame


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class ControlResult:
    """What a control did: `ok` only when the outstation reported SUCCESS for the point."""

    ok: bool
    who: str
    what: str
    mode: str
    summary: str  # the task's completion (SUCCESS, FAILURE_RESPONSE_TIMEOUT, ...)
    status: str  # the point's command status (SUCCESS, NOT_SUPPORTED, NO_SELECT, ...)
    detail: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.what} by {self.who} ({self.mode}): {'ok' if self.ok else 'failed'}, {self.summary}/{self.status}"


# -- opendnp3 callbacks ---------------------------------------------------------------------------
# The classes are built on first use, so that importing this module does not load the C++ stack.

_classes: dict[str, type] = {}


def _stack() -> Any:
    import opendnp3

    if _classes:
        return opendnp3

    class LogRouter(opendnp3.ILogHandler):
        """opendnp3's log lines -> Python logging (debug), and to the session they concern."""

        def __init__(self) -> None:
            super().__init__()
            self.sessions: dict[str, _Session] = {}

        def log(self, module: Any, id: str, level: Any, location: str, message: str) -> None:
            try:
                STACK_LOG.debug("%s: %s", id, message)
                session = self.sessions.get(id.split(".", 1)[0])
                if session is not None:
                    session.on_log(message)
            except Exception:  # never into the C++ stack
                pass

    class Listener(opendnp3.IChannelListener):
        def __init__(self, session: _Session) -> None:
            super().__init__()
            self.session = session

        def OnStateChange(self, state: Any) -> None:
            with self.session.source.guard(f"{self.session.endpoint}: channel state"):
                self.session.on_channel(state.name)

    class SOEHandler(opendnp3.ISOEHandler):
        """One per role: `main` (startup integrity poll, unsolicited), `integrity`, `events`."""

        def __init__(self, session: _Session, role: str) -> None:
            super().__init__()
            self.session, self.role = session, role

        def BeginFragment(self, info: Any) -> None:
            pass

        def Process(self, info: Any, values: Any) -> None:
            with self.session.source.guard(f"{self.session.endpoint}: header {info.gv.name}"):
                self.session.on_values(info, values)

        def EndFragment(self, info: Any) -> None:
            with self.session.source.guard(f"{self.session.endpoint}: end of fragment"):
                self.session.on_fragment_end(self.role, info)

    class MasterApp(opendnp3.IMasterApplication):
        def __init__(self, session: _Session) -> None:
            super().__init__()
            self.session = session

        def OnReceiveIIN(self, iin: Any) -> None:
            pass

        def OnTaskStart(self, type: Any, id: Any) -> None:
            pass

        def OnTaskComplete(self, info: Any) -> None:
            with self.session.source.guard(f"{self.session.endpoint}: task"):
                self.session.on_task(info.type.name, info.result.name)

        def OnOpen(self) -> None:
            pass

        def OnClose(self) -> None:
            pass

        def AssignClassDuringStartup(self) -> bool:
            return False

        def Now(self) -> Any:  # the time a time sync writes to the outstation
            return opendnp3.UTCTimestamp(time.time_ns() // 1_000_000)

    _classes.update(LogRouter=LogRouter, Listener=Listener, SOEHandler=SOEHandler, MasterApp=MasterApp)
    return opendnp3


class _Session:
    """One connection attempt: a TCP client channel and its master, until the link is lost."""

    def __init__(self, source: Dnp3Source, number: int, router: Any):
        self.source, self.config = source, source.config
        self.endpoint = endpoint_of(source.config)
        self.id = f"{source.name}-{number}".replace(".", "_")
        self.router = router
        self.open = threading.Event()  # the TCP connection is up
        self.answered = threading.Event()  # the outstation answered a request: the session is up
        self.down = threading.Event()
        self.started = threading.Event()  # the startup integrity poll is done
        self.reason = ""
        self.gap_reason = COMM_LOST
        self.implausible_logged = [
            float("-inf"),
            0,
        ]  # when an implausible time was last logged, held back since
        self._last_error: str | None = None
        self.disabling = False  # DISABLE_UNSOLICITED sent, not yet answered
        # The start-up is over (unsolicited reporting as configured): polls go out only from then
        # on, so that the first user task to complete after the disable is the disable (a poll
        # queued before it completed first under load, and "unsolicited off" was said too early).
        self.settled = threading.Event()
        self.columns = Columns(source.name)
        self.channel: Any = None
        self.master: Any = None
        self._keep: list[Any] = []  # Python callback objects opendnp3 holds (kept alive here)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, manager: Any) -> None:
        o = _stack()
        cfg = self.config
        self.router.sessions[self.id] = self
        retry = o.ChannelRetry(o.TimeDuration.Seconds(NO_RETRY_S), o.TimeDuration.Seconds(NO_RETRY_S))
        retry.reconnectDelay = o.TimeDuration.Seconds(NO_RETRY_S)
        listener = _classes["Listener"](self)
        self.channel = manager.AddTCPClient(
            self.id, o.levels.NORMAL, retry, [o.IPEndpoint(cfg.host, cfg.port)], "0.0.0.0", listener
        )
        master_config = o.MasterStackConfig()
        master_config.link.LocalAddr = cfg.master_address
        master_config.link.RemoteAddr = cfg.outstation_address
        master_config.master.responseTimeout = o.TimeDuration.Milliseconds(cfg.timeout_ms)
        master_config.master.disableUnsolOnStartup = True
        master_config.master.timeSyncMode = {
            "none": o.TimeSyncMode.__members__["None"],
            "lan": o.TimeSyncMode.LAN,
            "non_lan": o.TimeSyncMode.NonLAN,
        }[cfg.time_sync]
        handlers = {role: _classes["SOEHandler"](self, role) for role in ("main", "integrity", "events")}
        app = _classes["MasterApp"](self)
        self.handlers = handlers
        self._keep += [listener, app, *handlers.values()]
        self.master = self.channel.AddMaster(self.id + ".master", handlers["main"], app, master_config)
        self.master.Enable()

    def close(self) -> None:
        if self.channel is not None:
            self.channel.Shutdown()  # releases the GIL: callbacks in flight finish first
        self.router.sessions.pop(self.id, None)
        self.channel = self.master = None

    def lose(self, reason: str, gap_reason: str = COMM_LOST) -> None:
        if not self.down.is_set():
            self.reason, self.gap_reason = reason, gap_reason
            self.down.set()
            self.source.wake.set()

    # -- polls (from the source's thread) --------------------------------------------------------

    def integrity_poll(self) -> None:
        o = _stack()
        self.master.ScanClasses(o.ClassField.AllClasses(), self.handlers["integrity"])

    def event_poll(self) -> None:
        o = _stack()
        if self.config.timed_events:
            headers = [o.Header.AllObjects(g, v) for g, v in TIMED_EVENT_HEADERS]
            self.master.Scan(headers, self.handlers["events"])
        else:
            self.master.ScanClasses(o.ClassField.AllEventClasses(), self.handlers["events"])

    def disable_unsolicited(self) -> None:
        o = _stack()
        headers = [o.Header.AllObjects(60, v) for v in (2, 3, 4)]
        self.master.PerformFunction("disable unsolicited", o.FunctionCode.DISABLE_UNSOLICITED, headers)

    # -- callbacks (opendnp3's threads) ------------------------------------------------------------

    def on_log(self, message: str) -> None:
        if message.startswith("Error Connecting:"):
            self.lose(message.split(":", 1)[1].strip().lower())
        elif "error" in message.lower() and ":" in message:
            detail = message.split(":", 1)[1].strip()
            self._last_error = (
                "connection closed by the outstation" if detail.lower() == "end of file" else detail.lower()
            )

    def on_channel(self, state: str) -> None:
        if state == "OPEN":
            self.open.set()
            self.source.wake.set()
        elif state in ("CLOSED", "OPENING") and self.open.is_set():
            self.lose(self._last_error or "connection closed")

    def on_task(self, task: str, result: str) -> None:
        counters = self.source.counters
        if result == "FAILURE_RESPONSE_TIMEOUT":
            counters["timeouts"] += 1
            self.lose(f"no response within {self.config.timeout_ms} ms ({task.lower()})", "timeout")
            return
        if result != "SUCCESS":
            counters["failed_tasks"] += 1
            log.debug("%s: task %s: %s", self.endpoint, task, result)
            if task == "ENABLE_UNSOLICITED" or (task == "USER_TASK" and self.disabling):
                self.disabling = False  # nothing to take back, or taking it back failed: poll
                self._settle()
            return
        if not self.answered.is_set():  # the first answer: `connected`, before what follows
            self.answered.set()
            self.source.session_answered()
        if task == "STARTUP_INTEGRITY_POLL":
            counters["integrity_polls"] += 1
            self.started.set()
            self.source.wake.set()
        elif task in ("LAN_TIME_SYNC", "NON_LAN_TIME_SYNC"):
            counters["time_syncs"] += 1
        elif task == "ENABLE_UNSOLICITED":
            if self.config.accept_unsolicited:
                self.source.set_state("subscribed", f"{self.endpoint}, unsolicited enabled")
                self._settle()
            else:  # opendnp3 always enables classes 1-3 at start-up: take it back
                self.disabling = True
                self.source.actions.put(self.disable_unsolicited)
                self.source.wake.set()
        elif task == "USER_TASK" and self.disabling:  # no poll is queued before it (`settled`)
            self.disabling = False
            self.source.set_state("connected", f"{self.endpoint}, polling (unsolicited off)")
            self._settle()

    def _settle(self) -> None:
        self.settled.set()
        self.source.wake.set()

    def on_values(self, info: Any, values: list[Any]) -> None:
        if not values:
            return
        point_type = POINT_TYPE_OF.get(type(getattr(values[0], "value", None)).__name__)
        source = self.source
        if point_type is None:  # octet strings, time objects, command events: not tags
            source.counters["ignored_objects"] += len(values)
            return
        event = bool(info.isEventVariation)
        binary = point_type in BINARY_TYPES
        double = point_type == "double_bit_binary"
        invalid = _stack().TimestampQuality.INVALID
        points, cols = source.points, self.columns
        cache = source.quality_cache
        now = _now_us()
        added = 0
        for item in values:
            try:
                index = item.index
                measurement = item.value
                tag, scale = points.tag(point_type, index)
                raw = measurement.value
                if binary:
                    value = 1.0 if raw else 0.0
                elif double:
                    value = float(int(raw))  # IEEE 1815: 0 intermediate, 1 off, 2 on, 3 indeterminate
                else:
                    value = float(raw) * scale
                flag_octet = measurement.flags.value
                key = (point_type, flag_octet)
                quality = cache.get(key)
                if quality is None:
                    quality = cache[key] = dnp3_flags.quality_of(point_type, flag_octet)
                stamp = measurement.time
                if stamp.quality != invalid:
                    ms = stamp.value
                    ts = ms * 1000 if ms > 0 else None  # a zero time is no time (never 1970)
                    if ts is not None and not PLAUSIBLE_FROM_US <= ts <= now + PLAUSIBLE_AHEAD_US:
                        # a clock never set (1970 + uptime), or one far ahead: keep the value
                        quality = self._implausible(point_type, index, ts, quality)
                        ts = None
                else:
                    # An event without time happened at an unknown moment: null, and received_at
                    # orders it. A static value is true at the poll, like a Modbus register.
                    ts = None if event else now
            except Exception as exc:
                source.item_failed(f"{self.endpoint}: {point_type} {getattr(item, 'index', '?')}", exc)
                continue
            cols.timestamp.append(ts)
            cols.tag.append(tag)
            cols.value.append(value)
            cols.quality.append(quality[0])
            cols.reason.append(quality[1])
            cols.received_at.append(now)
            added += 1
        if event:
            source.counters["events"] += added

    def _implausible(
        self, point_type: str, index: int, ts_us: int, quality: tuple[str, str | None]
    ) -> tuple[str, str | None]:
        """The quality of a value whose time is implausible (the MQTT sources' rule): uncertain
        (bad stays bad), the reason says which time; counted, and logged once every 10 s."""
        shown = datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat().replace("+00:00", "Z")
        text = implausible(f"event time {shown}")
        source = self.source
        source.counters["implausible_timestamps"] += 1
        clock = time.monotonic()
        if clock - self.implausible_logged[0] >= 10.0:
            more = self.implausible_logged[1]
            self.implausible_logged = [clock, 0]
            also = f" ({more} more since the last line)" if more else ""
            source.ctx.log("warning", f"{self.endpoint}: {point_type} {index}: {text}{also}", source.name)
        else:
            self.implausible_logged[1] += 1
        level, reason = quality
        return ("uncertain" if level == "good" else level, text if reason is None else f"{reason}; {text}")

    def on_fragment_end(self, role: str, info: Any) -> None:
        counters = self.source.counters
        if info.unsolicited:
            if len(self.columns):  # not the null response an outstation sends at start-up
                counters["unsolicited"] += 1
        elif info.fin and role == "integrity":
            counters["integrity_polls"] += 1
        elif info.fin and role == "events":
            counters["event_polls"] += 1
        if len(self.columns):
            self.source.hand_over(self.columns.take_small())


class Dnp3Source(StreamingSource):
    config: Dnp3SourceConfig

    def __init__(self, config: Dnp3SourceConfig, ctx: RunContext, name: str = "source"):
        super().__init__(config, ctx, name)
        self.points = PointMap(config.points)
        self.endpoint = endpoint_of(config)
        self.quality_cache: dict[tuple[str, int], tuple[str, str | None]] = {}
        self.wake = threading.Event()
        self.actions: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._emit: Callable[[Any], None] | None = None
        self._outbox: queue.SimpleQueue[pl.DataFrame | TagBatch | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._emitter: threading.Thread | None = None
        self._session: _Session | None = None
        self._manager: Any = None
        self._was_up = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, emit: Callable[[Any], None]) -> None:
        if self._thread is not None:
            raise ConnectorError(f"DNP3 source '{self.name}' is already running")
        self._emit = emit
        self._stopping.clear()
        self._emitter = threading.Thread(target=self._emit_loop, name=f"dnp3-emit-{self.name}", daemon=True)
        self._emitter.start()
        self._thread = self.spawn(self._run, name=f"dnp3-{self.name}")

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(self.config.timeout_s + 10)
        if self._emitter is not None:
            self._outbox.put(None)
            self._emitter.join(10)
        self._emit = None  # the contract: no emit after stop() returns
        self._thread = self._emitter = None
        self.set_state("stopped")

    def hand_over(self, frame: pl.DataFrame | TagBatch) -> None:
        """A batch for `emit`, from any thread (opendnp3's included): the emitter thread sends it."""
        self.counters["values"] += frame.height
        self._outbox.put(frame)

    def _emit_loop(self) -> None:
        while True:
            frame = self._outbox.get()
            if frame is None:
                return
            emit = self._emit
            if emit is None:
                continue
            with self.guard(f"{self.endpoint}: emit of {frame.height} values"):
                emit(frame)

    # -- the session loop --------------------------------------------------------------------------

    def _run(self) -> None:
        o = _stack()
        router = _classes["LogRouter"]()
        self._manager = o.DNP3Manager(1, router)
        cfg = self.config
        delays = backoff_delays(cfg.reconnect_initial_s, 2.0, cfg.reconnect_max_s)
        ever_up = gapped = False
        last_reason = ""
        attempt = 0
        try:
            while not self._stopping.is_set():
                attempt += 1
                # After a failure the detail keeps saying why, while the next attempt runs.
                detail = f"{self.endpoint}: {last_reason}; trying again" if last_reason else self.endpoint
                self.set_state("reconnecting" if ever_up else "connecting", detail)
                session = _Session(self, attempt, router)
                self._session = session
                _drain(self.actions)  # what a lost session asked for is not owed to this one
                try:
                    session.start(self._manager)
                    self._serve(session)
                except Exception as exc:  # opendnp3 refused a call: this session is over, not the source
                    session.lose(one_line_error(exc))
                    log.debug("%s: session ended", self.endpoint, exc_info=True)
                finally:
                    self._session = None
                    session.close()
                if session.answered.is_set():  # it was up: a new loss (a TCP open alone is not)
                    ever_up, gapped = True, False
                    delays = backoff_delays(cfg.reconnect_initial_s, 2.0, cfg.reconnect_max_s)
                last_reason = session.reason
                if self._stopping.is_set():
                    break
                self.counters["errors"] += 1
                if not gapped:  # once per loss, not again while it stays down
                    self._gap(session.gap_reason)
                    gapped = True
                delay = next(delays)
                self.set_state("lost", f"{self.endpoint}: {session.reason}; retrying in {delay:g} s")
                log.info("%s: %s; retrying in %g s", self.endpoint, session.reason, delay)
                self._stopping.wait(delay)
        finally:
            manager, self._manager = self._manager, None
            manager.Shutdown()

    def _serve(self, session: _Session) -> None:
        """Run one session until its link is lost or the source stops."""
        cfg = self.config
        deadline = time.monotonic() + max(cfg.timeout_s, 1.0)
        while not session.open.is_set():
            if self._stopping.is_set() or session.down.is_set():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                session.lose(f"no connection within {max(cfg.timeout_s, 1.0):g} s")
                return
            self.wake.wait(min(left, 0.5))
            self.wake.clear()
        now = time.monotonic()
        next_integrity = now + cfg.integrity_poll_interval_s
        next_events = now + cfg.event_poll_interval_s
        polls_anyway = now + 2 * max(cfg.timeout_s, 1.0)  # the start-up never settled: poll all the same
        while not self._stopping.is_set() and not session.down.is_set():
            for action in _drain(self.actions):
                action()
            now = time.monotonic()
            if not session.settled.is_set() and now < polls_anyway:  # no poll before the start-up is over
                self.wake.wait(min(0.05, polls_anyway - now))
                self.wake.clear()
                continue
            if now >= next_integrity:
                session.integrity_poll()
                next_integrity = now + cfg.integrity_poll_interval_s
                next_events = now + cfg.event_poll_interval_s  # the integrity poll reads them too
            elif now >= next_events:
                session.event_poll()
                next_events = now + cfg.event_poll_interval_s
            self.wake.wait(max(0.0, min(next_integrity, next_events) - time.monotonic()))
            self.wake.clear()

    def session_answered(self) -> None:
        """The outstation answered its first request (opendnp3's thread, before the start-up's
        later tasks): the session is `connected`. A TCP connection alone is not: a port that
        accepts and never answers (a wrong outstation address) stays `lost` and backs off."""
        self.set_state("connected", self.endpoint)
        if self._was_up:
            self.counters["reconnects"] += 1
        self._was_up = True

    def _gap(self, reason: str) -> None:
        tags = list(self.points.known)
        if not tags:
            return
        now = _now_us()
        cols = Columns(self.name)
        cols.tag = tags
        cols.timestamp = [now] * len(tags)
        cols.value = [None] * len(tags)
        cols.quality = ["bad"] * len(tags)
        cols.reason = [reason] * len(tags)
        cols.received_at = [now] * len(tags)
        self.counters["gap_records"] += len(tags)
        self._outbox.put(cols.take_small())

    # -- check -----------------------------------------------------------------------------------

    def check(self) -> None:
        """Connect and run the startup integrity poll; a one-line ConnectorError if either fails."""
        o = _stack()
        router = _classes["LogRouter"]()
        manager = o.DNP3Manager(1, router)
        session = _Session(self, 0, router)
        probe = _Probe(self)
        session.source = probe  # type: ignore[assignment]  # values are counted, not emitted
        try:
            session.start(manager)
            deadline = time.monotonic() + self.config.timeout_s + 1.0
            while not session.started.is_set() and not session.down.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    session.lose(f"no answer within {self.config.timeout_s + 1.0:g} s")
                    break
                probe.wake.wait(min(left, 0.2))
                probe.wake.clear()
        finally:
            session.close()
            manager.Shutdown()
        if not session.started.is_set():
            raise ConnectorError(f"{self.endpoint}: integrity poll failed: {session.reason}")

    # -- controls --------------------------------------------------------------------------------

    def operate_binary(
        self,
        index: int,
        action: BinaryAction,
        *,
        who: str,
        mode: ControlMode = "select_before_operate",
        on_time_ms: int = 100,
        off_time_ms: int = 100,
        count: int = 1,
    ) -> ControlResult:
        """A CROB (g12v1) on output `index`: latch_on/latch_off/pulse_on/pulse_off, or close/trip
        (a pulse with the trip-close code). Blocks until the outstation answers; logged with `who`."""
        o = _stack()
        ops = {
            "latch_on": (o.OperationType.LATCH_ON, o.TripCloseCode.NUL),
            "latch_off": (o.OperationType.LATCH_OFF, o.TripCloseCode.NUL),
            "pulse_on": (o.OperationType.PULSE_ON, o.TripCloseCode.NUL),
            "pulse_off": (o.OperationType.PULSE_OFF, o.TripCloseCode.NUL),
            "close": (o.OperationType.PULSE_ON, o.TripCloseCode.CLOSE),
            "trip": (o.OperationType.PULSE_ON, o.TripCloseCode.TRIP),
        }
        if action not in ops:
            raise ConnectorError(f"{self.endpoint}: control action '{action}': allowed: {', '.join(ops)}")
        what = f"CROB {action} on output {index}"
        self._check_range(what, who, "output index", index, 0, 65535)
        self._check_range(what, who, "count", count, 0, 255)  # g12v1: one octet
        self._check_range(what, who, "on_time_ms", on_time_ms, 0, 2**32 - 1)  # four octets
        self._check_range(what, who, "off_time_ms", off_time_ms, 0, 2**32 - 1)
        op, tcc = ops[action]
        command = o.ControlRelayOutputBlock(op, tcc, False, count, on_time_ms, off_time_ms)
        return self._operate(what, command, index, who, mode)

    def operate_analog(
        self,
        index: int,
        value: float,
        *,
        who: str,
        mode: ControlMode = "select_before_operate",
        variation: Literal["int16", "int32", "float32", "double64"] = "float32",
    ) -> ControlResult:
        """An analog output command (g41) of `value` on output `index`; logged with `who`."""
        o = _stack()
        kinds = {
            "int16": o.AnalogOutputInt16,
            "int32": o.AnalogOutputInt32,
            "float32": o.AnalogOutputFloat32,
            "double64": o.AnalogOutputDouble64,
        }
        if variation not in kinds:
            raise ConnectorError(
                f"{self.endpoint}: analog output variation '{variation}': allowed: {', '.join(kinds)}"
            )
        what = f"analog output {value!r} ({variation}) on output {index}"
        self._check_range(what, who, "output index", index, 0, 65535)
        number = self._analog_value(what, who, value, variation)
        what = f"analog output {number:g} ({variation}) on output {index}"
        command = kinds[variation](number)
        return self._operate(what, command, index, who, mode)

    # What g41 can carry: a value it cannot is refused, never wrapped, truncated or sent as inf.
    _ANALOG_RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "int16": (-(2**15), 2**15 - 1),
        "int32": (-(2**31), 2**31 - 1),
        "float32": (-3.4028234663852886e38, 3.4028234663852886e38),
        "double64": (-math.inf, math.inf),
    }

    def _analog_value(self, what: str, who: str, value: Any, variation: str) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._refuse(what, who, f"value {value!r} is not a number")
        if not math.isfinite(value):
            self._refuse(what, who, f"value {value!r} is not a finite number")
        low, high = self._ANALOG_RANGES[variation]
        if variation in ("int16", "int32"):
            if value != int(value):
                self._refuse(what, who, f"value {value!r} is not a whole number ({variation})")
            value = int(value)
        if not low <= value <= high:
            self._refuse(
                what, who, f"value {value!r} is out of range for {variation}: allowed {low:g}..{high:g}"
            )
        return value if variation in ("int16", "int32") else float(value)

    def _check_range(self, what: str, who: str, name: str, value: Any, low: int, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self._refuse(what, who, f"{name} {value!r}: allowed {low}..{high}")

    def _refuse(self, what: str, who: str, reason: str) -> NoReturn:
        self._log_control("warning", f"refused {what} by {who}: {reason}")
        raise ConnectorError(f"{self.endpoint}: {reason}; {what} refused")

    def _operate(self, what: str, command: Any, index: int, who: str, mode: str) -> ControlResult:
        if not who or not str(who).strip():
            raise ConnectorError(f"{self.endpoint}: a control needs `who` (the user or program asking)")
        if mode not in ("select_before_operate", "direct_operate"):
            raise ConnectorError(
                f"{self.endpoint}: control mode '{mode}': allowed: select_before_operate, direct_operate"
            )
        if not self.config.allow_controls:
            self._log_control("warning", f"refused {what} by {who}: controls are off (allow_controls: false)")
            raise ConnectorError(f"{self.endpoint}: controls are off (allow_controls: false); {what} refused")
        session = self._session
        master = session.master if session is not None else None
        if session is None or master is None or not session.open.is_set() or session.down.is_set():
            self._log_control("warning", f"{what} by {who} not sent: not connected")
            raise ConnectorError(f"{self.endpoint}: not connected; {what} not sent")
        done = threading.Event()
        box: dict[str, Any] = {}

        def on_result(result: Any) -> None:  # opendnp3's thread
            try:
                box["summary"] = result.summary.name
                box["points"] = [(p.index, p.state.name, p.status.name) for p in result.to_list()]
            except Exception as exc:
                box["error"] = exc
            finally:
                done.set()

        operate = master.SelectAndOperate if mode == "select_before_operate" else master.DirectOperate
        operate(command, index, on_result)
        wait_s = 2 * self.config.timeout_s + 2
        if not done.wait(wait_s):
            box.setdefault("summary", "NO_ANSWER")
        points = box.get("points", [])
        status = points[0][2] if points else ("ERROR" if "error" in box else "NONE")
        summary = box.get("summary", "ERROR")
        ok = summary == "SUCCESS" and bool(points) and all(p[2] == "SUCCESS" for p in points)
        result = ControlResult(ok, str(who), what, mode, summary, status, {"points": points})
        self.counters["controls" if ok else "controls_failed"] += 1
        self._log_control("info" if ok else "warning", str(result))
        return result

    def _log_control(self, level: str, text: str) -> None:
        line = f"DNP3 control at {self.endpoint}: {text}"
        log.log(logging.INFO if level == "info" else logging.WARNING, line)
        self.ctx.log(level, line, self.name)


def _drain(actions: queue.SimpleQueue[Callable[[], None]]) -> list[Callable[[], None]]:
    taken = []
    while True:
        try:
            taken.append(actions.get_nowait())
        except queue.Empty:
            return taken


class _Probe:
    """Stands in for the source while `check()` probes: counts, and lets values drop."""

    def __init__(self, source: Dnp3Source):
        self.name, self.config, self.points = source.name, source.config, PointMap(source.config.points)
        self.counters, self.ctx = source.counters, source.ctx
        self.quality_cache: dict[tuple[str, int], tuple[str, str | None]] = {}
        self.wake = threading.Event()
        self.actions: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._owner = source

    def guard(self, item: str) -> Any:
        return self._owner.guard(item)

    def item_failed(self, item: str, exc: BaseException) -> str:
        return self._owner.item_failed(item, exc)

    def set_state(self, state: str, detail: str | None = None) -> None:
        pass

    def session_answered(self) -> None:
        pass

    def hand_over(self, frame: pl.DataFrame | TagBatch) -> None:
        pass


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
