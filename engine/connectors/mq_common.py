"""What the message queue sources share (RabbitMQ, NATS, Redis Streams; issue 13).

- `decode_json`: the bodies of one micro-batch into ONE frame, vectorised: each body (a JSON object,
  or a list of objects) becomes a line `{"_m": i, "_r": [...]}`, the lines are read at once with
  `pl.read_ndjson`, and `_r` is exploded and unnested. Only when that fails (a body is not JSON, or
  two bodies disagree on a field's type) are the bodies looked at one by one, to reject the bad
  ones with their reason and decode the rest.
- `MqSource`: the source's thread (connect, fetch, decode, emit; reconnect with back-off, session
  states `connecting` -> `subscribed`, `lost` -> `reconnecting`), ack after commit (the token of a
  batch is acknowledged by `acknowledge` once the runtime has committed it), and a stop that waits
  a little for the last batches' acks so that a clean stop re-delivers nothing.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import polars as pl
from pydantic import Field, model_validator

from engine.connectors.base import ConnectorConfig, StreamingSource, one_line_error
from engine.context import RunContext
from engine.transforms.base import REJECT_REASON

TIME = pl.Datetime("us", "UTC")
_NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")


class MqSourceOptions(ConnectorConfig):
    """The options every message queue source has."""

    timestamp_field: str | None = Field(
        "timestamp",
        description="a record field holding its time (ISO 8601 text, or epoch numbers in epoch_unit): "
        "parsed to a UTC timestamp; a value that cannot be parsed rejects the record",
    )
    epoch_unit: Literal["s", "ms", "us", "ns"] = Field("s", description="unit of numeric timestamps")
    metadata: bool = Field(
        False, description="add the message's origin (queue/routing key, subject, stream id) as `_origin`"
    )
    batch_interval_ms: int = Field(100, ge=5, le=60_000, description="emit a micro-batch at least this often")
    batch_max_messages: int = Field(
        1000, ge=1, le=1_000_000, description="or as soon as this many messages wait"
    )
    reconnect_min_delay: float = Field(0.5, gt=0, description="seconds before the first reconnect attempt")
    reconnect_max_delay: float = Field(30.0, gt=0, description="back-off ceiling between attempts")
    connect_timeout: float = Field(5.0, gt=0, le=120, description="seconds to wait for a connection")
    stop_ack_wait_s: float = Field(
        5.0, ge=0, le=120, description="on stop, wait this long for the last batches to commit and be acked"
    )

    @model_validator(mode="after")
    def _delays(self) -> MqSourceOptions:
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise ValueError("reconnect_max_delay must be at least reconnect_min_delay")
        return self


# ---- decoding --------------------------------------------------------------------------------


def _line(i: int, body: bytes) -> bytes:
    # A raw line break can only be white space in valid JSON (never inside a string): safe to blank.
    body = body.replace(b"\n", b" ").replace(b"\r", b" ")
    first = body.lstrip()[:1]
    inner = body if first == b"[" else b"[" + body + b"]"
    return b'{"_m":%d,"_r":%s}' % (i, inner)


def _read(bodies: list[bytes], index: list[int]) -> pl.DataFrame:
    """The records of `bodies` (message number `_m` from `index`) as one frame; raises when a body
    is not JSON, not an object or list of objects, or the bodies disagree on a type."""
    data = b"\n".join(_line(i, b) for i, b in zip(index, bodies, strict=True))
    frame = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
    # one line per body, in order: a body that smuggled in a line of its own is caught here
    if frame.height != len(index) or frame.get_column("_m").to_list() != index:
        raise ValueError("a body is not one JSON value")
    if frame.get_column("_r").dtype == pl.List(pl.Null):  # empty lists only, or nulls
        if frame.get_column("_r").list.len().sum():
            raise ValueError("not a JSON object or a list of objects")
        return pl.DataFrame({"_m": pl.Series([], dtype=pl.Int64)})
    elements = int(frame.get_column("_r").list.len().sum())
    frame = frame.explode("_r").filter(pl.col("_r").is_not_null())
    if frame.height != elements:  # `null` as a body or in a list
        raise ValueError("not a JSON object or a list of objects")
    if not isinstance(frame.schema["_r"], pl.Struct):
        raise ValueError("not a JSON object or a list of objects")
    return frame.unnest("_r")


def _why(body: bytes) -> str | None:
    """The reason one body cannot be decoded, or None when it can."""
    try:
        value = json.loads(body)
    except ValueError as exc:
        return f"not JSON: {exc}"
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, dict) for item in items):
        return "not a JSON object or a list of objects"
    return None


def decode_json(bodies: list[bytes]) -> tuple[pl.DataFrame, list[tuple[int, str]]]:
    """(records with `_m` = message number, [(message number, reason)] of the bodies rejected)."""
    index = list(range(len(bodies)))
    empty = [i for i, body in enumerate(bodies) if not body.strip()]
    if not empty:
        try:
            return _read(bodies, index), []
        except Exception:
            pass
    bad: list[tuple[int, str]] = []
    good: list[int] = []
    for i, body in enumerate(bodies):
        why = _why(body) if body.strip() else "an empty message"
        (bad.append((i, why)) if why else good.append(i))
    if not good:
        return pl.DataFrame({"_m": pl.Series([], dtype=pl.Int64)}), bad
    try:
        return _read([bodies[i] for i in good], good), bad
    except Exception:
        pass
    frames = []  # the bodies disagree on a type: each alone, then concatenated with supertypes
    for i in good:
        try:
            frames.append(_read([bodies[i]], [i]))
        except Exception as exc:
            bad.append((i, one_line_error(exc, 200)))
    if not frames:
        return pl.DataFrame({"_m": pl.Series([], dtype=pl.Int64)}), sorted(bad)
    try:
        frame = pl.concat(frames, how="diagonal_relaxed")
    except Exception:  # no common type at all: text for the columns in conflict
        frame = pl.concat(
            [f.with_columns(pl.exclude("_m").cast(pl.String)) for f in frames], how="diagonal_relaxed"
        )
    return frame, sorted(bad)


def parse_timestamps(frame: pl.DataFrame, field: str, unit: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`field` as UTC timestamps: (records that parsed or had none, records whose value did not)."""
    if field not in frame.columns:
        return frame, frame.clear()
    dtype = frame.schema[field]
    col = pl.col(field)
    if dtype == pl.String:
        tries = [col.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)]
        tries += [
            col.str.to_datetime(f, time_unit="us", strict=False).dt.replace_time_zone("UTC")
            for f in _NAIVE_FORMATS
        ]
        parsed = pl.coalesce(tries)
    elif dtype.is_numeric():
        scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}[unit]
        parsed = (col.cast(pl.Float64) * scale).round(0).cast(pl.Int64, strict=False).cast(TIME)
    elif isinstance(dtype, pl.Datetime):
        return frame.with_columns(
            col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col
        ), frame.clear()
    else:
        parsed = pl.lit(None, TIME)
    out = frame.with_columns(parsed.alias("__t"))
    failed = out.get_column("__t").is_null() & out.get_column(field).is_not_null()
    if not failed.any():
        return out.with_columns(pl.col("__t").alias(field)).drop("__t"), frame.clear()
    return (
        out.filter(~failed).with_columns(pl.col("__t").alias(field)).drop("__t"),
        frame.filter(failed),
    )


# ---- the source ------------------------------------------------------------------------------


class Message:
    __slots__ = ("ack", "body", "origin")

    def __init__(self, body: bytes, origin: str, ack: Any = None):
        self.body, self.origin, self.ack = body, origin, ack


class MqSource(StreamingSource):
    """A message queue source. Subclasses give `where`, `_connect()`, `_fetch(n, wait_s)`,
    `_ack(acks)` (the broker acks of committed messages; any thread) and `_close()`; `_idle(s)`
    when the connection must be serviced on its own thread while the stop waits for acks."""

    config: MqSourceOptions
    where = ""

    def __init__(self, config: MqSourceOptions, ctx: RunContext, name: str):
        super().__init__(config, ctx, name)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._outstanding: dict[int, list[Any]] = {}  # token -> broker acks, emitted, not yet committed
        self._emitted_at: dict[int, float] = {}  # token -> time.monotonic() it was emitted
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._acks_done = threading.Condition(self._lock)
        self._connected = False

    def schema(self) -> pl.Schema | None:
        return None  # the records' own fields

    # ---- the subclass's part ------------------------------------------------------------------
    def _connect(self) -> None:
        raise NotImplementedError

    def _fetch(self, limit: int, wait_s: float) -> list[Message]:
        raise NotImplementedError

    def _ack(self, acks: list[Any]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def _stop_consuming(self) -> None:
        """Stop taking new messages (the stop waits for the last acks with the link still up)."""

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self, emit: Callable[..., None]) -> None:
        self._stopping.clear()
        self._thread = self.spawn(self._run, emit, name=f"mq-{self.name}")

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None
        self.set_state("stopped")

    def acknowledge(self, tokens: list[Any]) -> None:
        acks: list[Any] = []
        with self._lock:
            for token in tokens:
                acks.extend(self._outstanding.pop(token, ()))
                self._emitted_at.pop(token, None)
            self._acks_done.notify_all()
        if acks:
            self._ack(acks)  # counts `acked` once the broker's acks are sent

    def held_acks(self, longer_than: float, at_most: float) -> list[Any]:
        """The broker acks of the batches emitted and not yet committed for between `longer_than`
        and `at_most` seconds (a broker that re-delivers what is held too long is told they are
        still being worked on: NATS JetStream)."""
        now = time.monotonic()
        with self._lock:
            return [
                ack
                for token, acks in self._outstanding.items()
                if longer_than <= now - self._emitted_at.get(token, now) < at_most
                for ack in acks
            ]

    # ---- the source's thread --------------------------------------------------------------------
    def _run(self, emit: Callable[..., None]) -> None:
        takes_ack = bool(getattr(emit, "takes_ack", False))
        cfg = self.config
        delay = cfg.reconnect_min_delay
        wait_s = cfg.batch_interval_ms / 1000
        try:
            while not self._stopping.is_set():
                if not self._connected:
                    self.set_state(
                        "connecting" if not self.counters["connects"] else "reconnecting", self.where
                    )
                    try:
                        self._connect()
                    except Exception as exc:
                        self.counters["connect_errors"] += 1
                        self.set_state(
                            "reconnecting", f"{self.where}: {self._reason(exc)}; retry in {delay:g} s"
                        )
                        self._close_quietly()
                        if self._stopping.wait(delay):
                            break
                        delay = min(delay * 2, cfg.reconnect_max_delay)
                        continue
                    self._connected, delay = True, cfg.reconnect_min_delay
                    self.counters["connects"] += 1
                    if self.counters["connects"] > 1:
                        self.counters["reconnects"] += 1
                    self.set_state("subscribed", self.where)
                try:
                    messages = self._fetch(cfg.batch_max_messages, wait_s)
                except Exception as exc:
                    self._lost(exc)
                    continue
                if messages:
                    self._handle(messages, emit, takes_ack)
            self._finish(emit, takes_ack)
        finally:
            self._close_quietly()

    def _lost(self, exc: BaseException) -> None:
        self._connected = False
        self.counters["disconnects"] += 1
        self.set_state("lost", f"{self.where}: {self._reason(exc)}")
        self._close_quietly()

    def _finish(self, emit: Callable[..., None], takes_ack: bool) -> None:
        """Stopping: take no more, then wait (bounded) until what was emitted is committed and acked."""
        if not self._connected:
            return
        try:
            self._stop_consuming()
        except Exception:
            return
        deadline = time.monotonic() + self.config.stop_ack_wait_s
        while takes_ack and time.monotonic() < deadline:
            with self._lock:
                if not self._outstanding:
                    return
            try:
                self._idle(0.02)
            except Exception:
                return

    def _close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._close()

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.config.connect_timeout:g} s"
        return one_line_error(exc, 200)

    def _handle(self, messages: list[Message], emit: Callable[..., None], takes_ack: bool) -> None:
        self.counters["messages"] += len(messages)
        received = datetime.now(UTC)
        with self.guard(f"batch of {len(messages)} messages"):
            frame, rejects = self._decode(messages, received)
            if rejects is not None and rejects.height:
                self.reject(rejects)
            self.counters["records"] += frame.height
            if frame.height:
                self.counters["batches"] += 1
            acks = [m.ack for m in messages if m.ack is not None]
            if takes_ack and acks:
                token = next(self._seq)
                with self._lock:
                    self._outstanding[token] = acks
                    self._emitted_at[token] = time.monotonic()
                emit(frame, ack=token)
            elif frame.height:
                emit(frame)

    def _decode(
        self, messages: list[Message], received: datetime
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        cfg = self.config
        frame, bad = decode_json([m.body for m in messages])
        rejects: list[pl.DataFrame] = []
        if bad:
            rejects.append(
                pl.DataFrame(
                    {
                        "message": [messages[i].body.decode("utf-8", "replace")[:10_000] for i, _ in bad],
                        "origin": [messages[i].origin for i, _ in bad],
                        REJECT_REASON: [f"bad message: {why}" for _, why in bad],
                    }
                )
            )
        if cfg.timestamp_field and frame.height:
            frame, unparsed = parse_timestamps(frame, cfg.timestamp_field, cfg.epoch_unit)
            if unparsed.height:
                rejects.append(
                    pl.DataFrame(
                        {
                            "message": unparsed.drop("_m").write_ndjson().splitlines(),
                            "origin": [messages[i].origin for i in unparsed.get_column("_m").to_list()],
                            REJECT_REASON: f"bad message: field '{cfg.timestamp_field}' is not a time "
                            f"(ISO 8601, or epoch {cfg.epoch_unit})",
                        }
                    )
                )
        if cfg.metadata and frame.height:
            origins = pl.Series("_origin", [m.origin for m in messages])
            frame = frame.with_columns(origins.gather(frame.get_column("_m")).alias("_origin"))
        if "received_at" not in frame.columns:
            frame = frame.with_columns(pl.lit(received, TIME).alias("received_at"))
        frame = frame.drop("_m")
        return frame, (pl.concat(rejects) if rejects else None)
