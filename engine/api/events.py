"""The engine's event catalogue as typed records (architecture: one front door).

Every event the engine publishes is one of the frozen records below (`EngineEvent`). A subscriber of
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

import inspect
from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from typing import Any, ClassVar


class EngineEvent:
    """The common part of every event record.

    A record is frozen and keyword-only, compares, hashes and prints by its fields, and pickles,
    as a `@dataclass(frozen=True, kw_only=True)` would; its fields are its class's annotations that
    are not `ClassVar`s (a base's first), a default is the class attribute of the same name. It is
    not a dataclass because creating one is ~1 ms of CPU a class (six methods generated and
    compiled), ~11 ms for the catalogue at every start of every process, 1.2% of a 1 M-row
    `aggregator run`; these methods are written once, here, and a record class costs what a plain
    class does."""

    kind: ClassVar[str] = ""
    wire_names: ClassVar[Mapping[str, str]] = {}  # attribute -> key on the wire, where they differ
    optional: ClassVar[frozenset[str]] = frozenset()  # fields left off the wire while None
    fields: ClassVar[tuple[str, ...]] = ("job", "extra")  # in order, a base's first
    _defaults: ClassVar[dict[str, Any]] = {"job": None}  # `extra` defaults to a new empty dict
    job: str | None = None
    extra: Mapping[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names, defaults = list(cls.fields), dict(cls._defaults)
        for name, note in inspect.get_annotations(cls).items():
            if str(note).startswith("ClassVar"):
                continue
            if name not in names:
                names.append(name)
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
            else:
                defaults.pop(name, None)
        cls.fields, cls._defaults = tuple(names), defaults

    def __init__(self, **values: Any) -> None:
        own = self.__dict__
        for name in self.fields:
            if name in values:
                own[name] = values.pop(name)
            elif name in self._defaults:
                own[name] = self._defaults[name]
            elif name == "extra":
                own[name] = {}
            else:
                raise TypeError(f"{type(self).__name__}() missing required keyword argument: '{name}'")
        if values:
            raise TypeError(
                f"{type(self).__name__}() got an unexpected keyword argument '{next(iter(values))}'"
            )

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field '{name}'")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field '{name}'")

    def _values(self) -> tuple[Any, ...]:
        return tuple(self.__dict__[name] for name in self.fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={self.__dict__[name]!r}" for name in self.fields)
        return f"{type(self).__qualname__}({shown})"

    def to_dict(self) -> dict[str, Any]:
        """The wire shape: `{"event": kind, **fields, **extra}`; `job` and optional fields holding
        None are left out."""
        out: dict[str, Any] = {"event": self.kind}
        values = self.__dict__
        for name in self.fields:
            unset = (name in self.optional or name == "job") and values[name] is None
            if name == "extra" or unset:
                continue
            out[self.wire_names.get(name, name)] = values[name]
        out.update(values["extra"])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineEvent:
        """The record of a wire dict of this kind: known keys become fields, the rest `extra`."""
        wire_to_attr = {wire: attr for attr, wire in cls.wire_names.items()}
        names = set(cls.fields) - {"extra"}
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
class _JobEvent(EngineEvent):
    """A job began or ended: its kind (the key `kind` on the wire) and how many jobs run now."""

    job_kind: str = ""
    running: int = 0
    wire_names: ClassVar[Mapping[str, str]] = {"job_kind": "kind"}


class JobStarted(_JobEvent):
    """A background call began; `running` is how many jobs run now (the status bar's indicator)."""

    kind: ClassVar[str] = "job_started"


class JobFinished(_JobEvent):
    kind: ClassVar[str] = "job_finished"


# ---- runs ------------------------------------------------------------------------------------
class RunStarted(EngineEvent):
    kind: ClassVar[str] = "run_started"
    run_id: str
    pipeline: str = ""


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


class Retrying(EngineEvent):
    """A failed batch attempt is retried after `delay_s`; `attempt` is the coming one."""

    kind: ClassVar[str] = "retrying"
    run_id: str
    attempt: int
    delay_s: float


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


class Committing(EngineEvent):
    """A batch run's destinations are committing (the last step; no more progress comes)."""

    kind: ClassVar[str] = "committing"
    run_id: str | None = None


# ---- streams ---------------------------------------------------------------------------------
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


class MicroBatch(EngineEvent):
    kind: ClassVar[str] = "micro_batch"
    run_id: str | None = None
    sequence: int = 0
    rows: int = 0
    latency_ms: Any = None


class SourceState(EngineEvent):
    """A streaming source's session changed: connecting, connected, subscribed, lost,
    reconnecting, stopped; `detail` says why (masked where it is made)."""

    kind: ClassVar[str] = "source_state"
    run_id: str | None = None
    node: str
    state: str
    detail: str | None = None


class SinkRetry(EngineEvent):
    kind: ClassVar[str] = "sink_retry"
    run_id: str | None = None
    node: str
    attempt: int
    delay_s: float
    error: str = ""


class Alarm(EngineEvent):
    """Something an operator must see (rows dropped by a full queue...). On the wire the alarm's
    own kind is the key `kind`, as it always was."""

    kind: ClassVar[str] = "alarm"
    alarm: str
    run_id: str | None = None
    node: str | None = None
    rows: int = 0
    reason: str = ""
    total_dropped: int = 0
    wire_names: ClassVar[Mapping[str, str]] = {"alarm": "kind"}


# ---- connectors ------------------------------------------------------------------------------
class ConnectorsChanged(EngineEvent):
    kind: ClassVar[str] = "connectors_changed"
    name: str


class ConnectionTested(EngineEvent):
    kind: ClassVar[str] = "connection_tested"
    name: str
    ok: bool
    error: str | None = None
    detail: str | None = None  # what answered, when the connector says (a version, permissions)
    seconds: float = 0.0


# ---- alerts ----------------------------------------------------------------------------------
class AlertChanged(EngineEvent):
    """An alert was raised, acknowledged or cleared (engine/alerts; `action` says which)."""

    kind: ClassVar[str] = "alert"
    alert_id: int
    action: str
    pipeline: str = ""
    subject: str = ""
    severity: str = "warning"
    state: str = ""
    message: str = ""
    condition: str = ""


class UnknownEvent(EngineEvent):
    """An event of a kind this catalogue does not know (from a newer service): kept, not lost."""

    name: str

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.name, **({"job": self.job} if self.job is not None else {}), **self.extra}


# Kind on the wire -> record class.
CATALOGUE: Mapping[str, type[EngineEvent]] = {
    cls.kind: cls
    for cls in (
        JobStarted,
        JobFinished,
        RunStarted,
        RunFinished,
        Retrying,
        NodeProgress,
        Committing,
        StreamStats,
        MicroBatch,
        SourceState,
        SinkRetry,
        Alarm,
        ConnectorsChanged,
        ConnectionTested,
        AlertChanged,
    )
}


def event_from_dict(data: Mapping[str, Any]) -> EngineEvent:
    """The typed record of a wire dict. A kind not in the catalogue gives `UnknownEvent`; a known
    kind missing a required field raises ValueError naming the event and the field."""
    name = str(data.get("event") or "")
    cls = CATALOGUE.get(name)
    if cls is None:
        job = data.get("job")
        rest = {k: v for k, v in data.items() if k not in ("event", "job")}
        return UnknownEvent(name=name, job=job, extra=rest)
    try:
        return cls.from_dict(data)
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"event '{name}': {exc}") from None


def as_event(event: EngineEvent | Mapping[str, Any]) -> EngineEvent:
    """A record as it is, a wire dict as its record (emitters below the API still build dicts)."""
    return event if isinstance(event, EngineEvent) else event_from_dict(event)


__all__ = [
    "CATALOGUE",
    "Alarm",
    "AlertChanged",
    "Committing",
    "ConnectionTested",
    "ConnectorsChanged",
    "EngineEvent",
    "JobFinished",
    "JobStarted",
    "MicroBatch",
    "NodeProgress",
    "Retrying",
    "RunFinished",
    "RunStarted",
    "SinkRetry",
    "SourceState",
    "StreamStats",
    "UnknownEvent",
    "as_event",
    "event_from_dict",
]
