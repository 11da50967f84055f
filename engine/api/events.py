"""The engine's event catalogue as typed records (architecture: one front door).

Every event the engine publishes is one of the frozen dataclasses below. A subscriber of
`EngineAPI.subscribe` receives these records, never dicts; the wire (the service's event stream, the
GUI bridge's Qt signal) carries `record.to_dict()`, which is the dict shape the engine has always
emitted: `{"event": <kind>, <fields>...}`. `event_from_dict` is the reverse, so a `RemoteEngine`
hands its subscribers the same records a `LocalEngine` does.

Design:
- `kind` (a class attribute) is the event's name on the wire (`"run_finished"`...).
- The fields every client relies on are typed attributes; anything else an emitter adds (the
  per-source and per-node maps of `stream_stats`, a newer server's fields) rides in `extra` and is
  written back flat by `to_dict()`, so a round trip loses nothing: `event_from_dict(d).to_dict() == d`
  (except that an optional field holding None, like `job`, is left off: to a reader using `.get`
  a None and a missing key are the same).
- `job` is the id of the `Job` the event belongs to (None for engine-wide events), so a view can tell
  its own run from the others.
- An event of a kind this catalogue does not know (a newer server) becomes `UnknownEvent`, not an
  error: clients ignore what they do not understand.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class EngineEvent:
    """The common part of every event record."""

    kind: ClassVar[str] = ""
    wire_names: ClassVar[Mapping[str, str]] = {}  # attribute -> key on the wire, where they differ
    optional: ClassVar[frozenset[str]] = frozenset()  # fields left off the wire while None
    job: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The wire shape: `{"event": kind, **fields, **extra}`; `job` and optional fields holding
        None are left out."""
        out: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):
            unset = (f.name in self.optional or f.name == "job") and getattr(self, f.name) is None
            if f.name == "extra" or unset:
                continue
            out[self.wire_names.get(f.name, f.name)] = getattr(self, f.name)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineEvent:
        """The record of a wire dict of this kind: known keys become fields, the rest `extra`."""
        wire_to_attr = {wire: attr for attr, wire in cls.wire_names.items()}
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key == "event":
                continue
            if key in wire_to_attr:
                known[wire_to_attr[key]] = value
            elif key in names and key not in cls.wire_names:  # a renamed field answers to its wire key
                known[key] = value
            else:
                extra[key] = value
        return cls(**known, extra=extra)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of wire key `key` (a field or an extra), for code that reads events by name."""
        return self.to_dict().get(key, default)


# ---- jobs ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class _JobEvent(EngineEvent):
    """A job began or ended: its kind (the key `kind` on the wire) and how many jobs run now."""

    job_kind: str = ""
    running: int = 0
    wire_names: ClassVar[Mapping[str, str]] = {"job_kind": "kind"}


@dataclass(frozen=True, kw_only=True)
class JobStarted(_JobEvent):
    """A background call began; `running` is how many jobs run now (the status bar's indicator)."""

    kind: ClassVar[str] = "job_started"


@dataclass(frozen=True, kw_only=True)
class JobFinished(_JobEvent):
    kind: ClassVar[str] = "job_finished"


# ---- runs ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RunStarted(EngineEvent):
    kind: ClassVar[str] = "run_started"
    run_id: str
    pipeline: str = ""


@dataclass(frozen=True, kw_only=True)
class RunFinished(EngineEvent):
    """A run ended: success, warning, failed, cancelled or interrupted."""

    kind: ClassVar[str] = "run_finished"
    run_id: str
    status: str
    # what the service's log line and metrics say of the run (None: an emitter that does not say)
    pipeline: str | None = None
    duration_s: float | None = None
    rows_in: int | None = None
    rows_out: int | None = None
    rows_rejected: int | None = None
    error: str | None = None
    optional: ClassVar[frozenset[str]] = frozenset(
        {"pipeline", "duration_s", "rows_in", "rows_out", "rows_rejected", "error"}
    )


def _make_Retrying() -> type[EngineEvent]:
    @dataclass(frozen=True, kw_only=True)
    class Retrying(EngineEvent):
        """A failed batch attempt is retried after `delay_s`; `attempt` is the coming one."""

        __qualname__ = "Retrying"

        kind: ClassVar[str] = "retrying"
        run_id: str
        attempt: int
        delay_s: float

    return Retrying


@dataclass(frozen=True, kw_only=True)
class NodeProgress(EngineEvent):
    """One node's status and counts so far (and once more, final, when the run has committed)."""

    kind: ClassVar[str] = "node_progress"
    run_id: str | None = None
    node: str
    status: str = ""
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    duration_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Committing(EngineEvent):
    """A batch run's destinations are committing (the last step; no more progress comes)."""

    kind: ClassVar[str] = "committing"
    run_id: str | None = None


# ---- streams ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class StreamStats(EngineEvent):
    """A streaming run's counters, about once a second; per-source/sink/node maps ride in `extra`."""

    kind: ClassVar[str] = "stream_stats"
    run_id: str | None = None
    status: str = ""
    uptime_s: float = 0.0
    micro_batches: int = 0
    rows_received: int = 0
    rows_committed: int = 0
    rows_dropped: int = 0
    rows_rejected: int = 0


def _make_MicroBatch() -> type[EngineEvent]:
    @dataclass(frozen=True, kw_only=True)
    class MicroBatch(EngineEvent):
        __qualname__ = "MicroBatch"
        kind: ClassVar[str] = "micro_batch"
        run_id: str | None = None
        sequence: int = 0
        rows: int = 0
        latency_ms: Any = None

    return MicroBatch


@dataclass(frozen=True, kw_only=True)
class SourceState(EngineEvent):
    """A streaming source's session changed: connecting, connected, subscribed, lost,
    reconnecting, stopped; `detail` says why (masked where it is made)."""

    kind: ClassVar[str] = "source_state"
    run_id: str | None = None
    node: str
    state: str
    detail: str | None = None


def _make_SinkRetry() -> type[EngineEvent]:
    @dataclass(frozen=True, kw_only=True)
    class SinkRetry(EngineEvent):
        __qualname__ = "SinkRetry"
        kind: ClassVar[str] = "sink_retry"
        run_id: str | None = None
        node: str
        attempt: int
        delay_s: float
        error: str = ""

    return SinkRetry


def _make_Alarm() -> type[EngineEvent]:
    @dataclass(frozen=True, kw_only=True)
    class Alarm(EngineEvent):
        """Something an operator must see (rows dropped by a full queue...). On the wire the alarm's
        own kind is the key `kind`, as it always was."""

        __qualname__ = "Alarm"

        kind: ClassVar[str] = "alarm"
        alarm: str
        run_id: str | None = None
        node: str | None = None
        rows: int = 0
        reason: str = ""
        total_dropped: int = 0
        wire_names: ClassVar[Mapping[str, str]] = {"alarm": "kind"}

    return Alarm


# ---- connectors ------------------------------------------------------------------------------
def _make_ConnectorsChanged() -> type[EngineEvent]:
    @dataclass(frozen=True, kw_only=True)
    class ConnectorsChanged(EngineEvent):
        __qualname__ = "ConnectorsChanged"
        kind: ClassVar[str] = "connectors_changed"
        name: str

    return ConnectorsChanged


def _make_ConnectionTested() -> type[EngineEvent]:
    @dataclass(frozen=True, kw_only=True)
    class ConnectionTested(EngineEvent):
        __qualname__ = "ConnectionTested"
        kind: ClassVar[str] = "connection_tested"
        name: str
        ok: bool
        error: str | None = None
        detail: str | None = None  # what answered, when the connector says (a version, permissions)
        seconds: float = 0.0

    return ConnectionTested


# ---- alerts ----------------------------------------------------------------------------------
def _make_AlertChanged() -> type[EngineEvent]:
    @dataclass(frozen=True, kw_only=True)
    class AlertChanged(EngineEvent):
        """An alert was raised, acknowledged or cleared (engine/alerts; `action` says which)."""

        __qualname__ = "AlertChanged"

        kind: ClassVar[str] = "alert"
        alert_id: int
        action: str
        pipeline: str = ""
        subject: str = ""
        severity: str = "warning"
        state: str = ""
        message: str = ""
        condition: str = ""

    return AlertChanged


def _make_UnknownEvent() -> type[EngineEvent]:
    @dataclass(frozen=True, kw_only=True)
    class UnknownEvent(EngineEvent):
        """An event of a kind this catalogue does not know (from a newer service): kept, not lost."""

        __qualname__ = "UnknownEvent"

        name: str

        def to_dict(self) -> dict[str, Any]:
            return {"event": self.name, **({"job": self.job} if self.job is not None else {}), **self.extra}

    return UnknownEvent


# Made on first use (PEP 562 `__getattr__` below): creating a frozen dataclass generates and
# compiles six methods, ~1 ms of CPU a class, 15 - 18 ms for the catalogue's 18 at every start of
# every process (a 10-row `aggregator run` is ~0.35 CPU-s). A one-shot batch run uses the job, run,
# progress and stream records; these kinds come from retries, streams, alarms, connectors, alerts
# and newer services, and are made (once, under a lock) when something names or receives one.
_MADE_ON_USE: dict[str, Callable[[], type[EngineEvent]]] = {
    "Retrying": _make_Retrying,
    "MicroBatch": _make_MicroBatch,
    "SinkRetry": _make_SinkRetry,
    "Alarm": _make_Alarm,
    "ConnectorsChanged": _make_ConnectorsChanged,
    "ConnectionTested": _make_ConnectionTested,
    "AlertChanged": _make_AlertChanged,
    "UnknownEvent": _make_UnknownEvent,
}
_making = threading.Lock()


def __getattr__(name: str) -> type[EngineEvent]:
    make = _MADE_ON_USE.get(name)
    if make is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _making:
        made = globals().get(name)
        if made is None:  # one class object for every caller (isinstance, pickle)
            made = globals()[name] = make()
        return made


class _Catalogue(Mapping[str, type[EngineEvent]]):
    """Kind on the wire -> record class; a class made on use is made when its kind is looked up."""

    def __init__(self, names: dict[str, str]):
        self._names = names

    def __getitem__(self, kind: str) -> type[EngineEvent]:
        name = self._names[kind]
        return globals().get(name) or __getattr__(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


CATALOGUE: Mapping[str, type[EngineEvent]] = _Catalogue(
    {
        "job_started": "JobStarted",
        "job_finished": "JobFinished",
        "run_started": "RunStarted",
        "run_finished": "RunFinished",
        "retrying": "Retrying",
        "node_progress": "NodeProgress",
        "committing": "Committing",
        "stream_stats": "StreamStats",
        "micro_batch": "MicroBatch",
        "source_state": "SourceState",
        "sink_retry": "SinkRetry",
        "alarm": "Alarm",
        "connectors_changed": "ConnectorsChanged",
        "connection_tested": "ConnectionTested",
        "alert": "AlertChanged",
    }
)


def event_from_dict(data: Mapping[str, Any]) -> EngineEvent:
    """The typed record of a wire dict. A kind not in the catalogue gives `UnknownEvent`; a known
    kind missing a required field raises ValueError naming the event and the field."""
    name = str(data.get("event") or "")
    cls = CATALOGUE.get(name)
    if cls is None:
        job = data.get("job")
        rest = {k: v for k, v in data.items() if k not in ("event", "job")}
        return __getattr__("UnknownEvent")(name=name, job=job, extra=rest)
    try:
        return cls.from_dict(data)
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"event '{name}': {exc}") from None


def as_event(event: EngineEvent | Mapping[str, Any]) -> EngineEvent:
    """A record as it is, a wire dict as its record (emitters below the API still build dicts)."""
    return event if isinstance(event, EngineEvent) else event_from_dict(event)


__all__ = [
    "CATALOGUE",
    "Alarm",  # noqa: F822 (made on use: `__getattr__`)
    "AlertChanged",  # noqa: F822 (made on use: `__getattr__`)
    "Committing",
    "ConnectionTested",  # noqa: F822 (made on use: `__getattr__`)
    "ConnectorsChanged",  # noqa: F822 (made on use: `__getattr__`)
    "EngineEvent",
    "JobFinished",
    "JobStarted",
    "MicroBatch",  # noqa: F822 (made on use: `__getattr__`)
    "NodeProgress",
    "Retrying",  # noqa: F822 (made on use: `__getattr__`)
    "RunFinished",
    "RunStarted",
    "SinkRetry",  # noqa: F822 (made on use: `__getattr__`)
    "SourceState",
    "StreamStats",
    "UnknownEvent",  # noqa: F822 (made on use: `__getattr__`)
    "as_event",
    "event_from_dict",
]
