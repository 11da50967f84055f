"""The MQTT streaming source: paho's network loop on its own thread, a batcher thread that turns
the received messages into TAG_SCHEMA micro-batches and hands them to `emit`.

Why two threads: `emit` may block (the runtime's back-pressure); paho must keep answering the
broker's keep-alives meanwhile, so it only appends to a bounded queue (`max_pending_messages`;
beyond it messages are dropped and counted in `dropped`). The batcher wakes every
`batch_interval_ms`, or as soon as `batch_max_messages` wait.

A lost connection is a marker in the same queue, so the gap records (one per tag seen so far,
quality `bad`, reason `comm_lost`) land in order between the data before and after it. paho
reconnects by itself with exponential back-off (`reconnect_delay_set`) and resubscribes here.

Nothing one message carries can stop the batcher: a bad payload or metric is a bad record, an
implausible timestamp an `uncertain` one; an unforeseen error in a batch is retried message by
message (the failing one becomes a bad record), and a failing `emit` is counted (`emit_errors`).
Every such problem is counted, kept in `last_errors` and written to the run's log with its item
(topic, metric); unforeseen exceptions go through the runtime's `item_failed`, and the batcher
runs under `spawn`, so that if anything still escaped it the session would turn `failed`. As a Sparkplug host, the source answers a sequence gap or data from a node it saw
no NBIRTH of with an NCMD `Node Control/Rebirth` (`sparkplug.request_rebirth`, on by default).
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from engine.connectors.base import StreamingSource, one_line_error
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.lazy import lazy_module
from engine.tags import TagBatch, TagBatchBuilder, concat_batches, utc_now
from protocols.connect_errors import os_error_reason, retrying
from protocols.mqtt.config import MqttSourceConfig
from protocols.timestamps import IMPLAUSIBLE

LAST_ERRORS = 20
LOG_EVERY_S = 10.0  # one warning per kind of problem this often; the rest are counted in it
_GAP = object()  # queue marker: the connection was lost here
pl = lazy_module("polars")  # imported on first use: a few Sparkplug values travel as a TagBatch


def make_client(config: MqttSourceConfig, client_id: str) -> Any:
    import ssl

    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=config.clean_session,
        protocol=mqtt.MQTTv311,
    )
    if config.username is not None:
        client.username_pw_set(config.username, config.password)
    if config.tls is not None:
        tls = config.tls
        client.tls_set(
            ca_certs=tls.ca_file,
            certfile=tls.cert_file,
            keyfile=tls.key_file,
            cert_reqs=ssl.CERT_REQUIRED if tls.verify else ssl.CERT_NONE,
        )
        client.tls_insecure_set(not tls.verify)
    # paho sleeps fractions of a second too; its int annotation is only a hint.
    client.reconnect_delay_set(config.reconnect_min_delay, config.reconnect_max_delay)  # type: ignore[arg-type]
    return client


def _connect_error(exc: BaseException | None, timeout_s: float) -> str:
    """Why a connection attempt failed, as a plant engineer reads it (`connection refused`)."""
    if exc is None:
        return "connection failed"
    return os_error_reason(exc, f"{timeout_s:g} s") or f"connection failed ({type(exc).__name__}: {exc})"


class MqttSource(StreamingSource):
    config: MqttSourceConfig

    def __init__(self, config: MqttSourceConfig, ctx: RunContext, name: str = "mqtt"):
        super().__init__(config, ctx, name)
        self.where = f"mqtt://{config.host}:{config.port}"
        self.last_errors: deque[tuple[str, str]] = deque(maxlen=LAST_ERRORS)
        self.seen_tags: set[str] = set()
        self._pending: deque[Any] = deque()
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._client: Any = None
        self._batcher: threading.Thread | None = None
        self._connects = 0
        self._logged: dict[str, tuple[float, int]] = {}  # kind -> (when last logged, held back since)

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self, emit: Callable[[Any], None]) -> None:
        cfg = self.config
        self._decode = self._make_decoder()
        self._client = client = make_client(
            cfg, cfg.client_id or f"aggregator-{self.name}-{uuid.uuid4().hex[:8]}"
        )
        client.on_connect = self._guarded(self._on_connect)
        client.on_connect_fail = self._guarded(self._on_connect_fail)
        client.on_disconnect = self._guarded(self._on_disconnect)
        client.on_subscribe = self._guarded(self._on_subscribe)
        client.on_message = self._guarded(self._on_message)
        self._stopping.clear()
        # spawn: should anything ever escape the batcher, the session turns `failed` with the reason
        self._batcher = self.spawn(self._run_batcher, emit, name=f"mqtt-{self.name}")
        self.set_state("connecting", self.where)
        client.connect_async(cfg.host, cfg.port, cfg.keepalive)
        client.loop_start()

    def stop(self) -> None:
        if self._client is None:
            return
        self._stopping.set()
        self._client.disconnect()
        self._client.loop_stop()
        with self._wake:
            self._wake.notify()
        if self._batcher is not None:
            self._batcher.join()
        self._client = self._batcher = None
        self.set_state("stopped")

    def check(self) -> None:
        """Connect once (CONNACK included) and disconnect; a ConnectorError names host:port."""
        cfg = self.config
        client = make_client(cfg, f"aggregator-check-{uuid.uuid4().hex[:8]}")
        answered = threading.Event()
        result: list[str] = []

        def on_connect(_c, _u, _flags, reason_code, _props) -> None:
            if reason_code.is_failure:
                result.append(f"broker refused the connection: {reason_code}")
            answered.set()

        client.on_connect = on_connect
        try:
            client.connect(cfg.host, cfg.port, keepalive=max(5, min(cfg.keepalive, 30)))
        except Exception as exc:
            reason = _connect_error(exc, client.connect_timeout)
            raise ConnectorError(f"{self.where}: cannot connect: {reason}") from None
        client.loop_start()
        try:
            if not answered.wait(10.0):
                raise ConnectorError(f"{self.where}: no answer (CONNACK) within 10 s; is it an MQTT broker?")
            if result:
                raise ConnectorError(f"{self.where}: {result[0]}")
        finally:
            client.disconnect()
            client.loop_stop()

    # ---- paho callbacks (paho's thread: no decoding, no waiting) ---------------------------------

    def _guarded(self, callback: Callable[..., None]) -> Callable[..., None]:
        """An exception in a callback would end paho's network thread: count and log it instead."""

        def call(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as exc:
                message = next((a for a in args if hasattr(a, "topic") and hasattr(a, "payload")), None)
                where = f"paho {callback.__name__.lstrip('_')}"
                self._failed(
                    f"{where} {message.topic}" if message is not None else where, exc, "callback_errors"
                )

        return call

    def _on_connect(self, client, _userdata, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            self.counters["connect_errors"] += 1
            self.set_state("reconnecting", f"{self.where}: broker refused the connection: {reason_code}")
            return
        self._connects += 1
        if self._connects > 1:
            self.counters["reconnects"] += 1
        self.set_state("connected", self.where)
        client.subscribe([(topic, self.config.qos) for topic in self.config.topics])

    def _on_connect_fail(self, client, _userdata) -> None:
        self.counters["connect_errors"] += 1
        # paho calls this inside its `except OSError:`, without the error: take it from there
        reason = _connect_error(sys.exc_info()[1], getattr(client, "connect_timeout", 5.0))
        retry = retrying(self.config.reconnect_min_delay, self.config.reconnect_max_delay)
        self.set_state("reconnecting", f"{self.where}: {reason}; {retry}")

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _props) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            self.set_state("connected", f"{self.where}: subscription refused for some topics: {refused}")
        else:
            self.set_state("subscribed", ", ".join(self.config.topics))

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        if self._stopping.is_set():
            return
        self._enqueue(_GAP)
        self.set_state("lost", f"{self.where}: {reason_code}")
        self.set_state("reconnecting", f"{self.where}: {reason_code}; retrying with back-off")

    def _on_message(self, _client, _userdata, message) -> None:
        self.counters["messages"] += 1
        self.counters["bytes"] += len(message.payload)
        if len(self._pending) >= self.config.max_pending_messages:
            self.counters["dropped"] += 1
            return
        self._enqueue((message.topic, message.payload, utc_now()))

    def _enqueue(self, item: Any) -> None:
        with self._wake:
            self._pending.append(item)
            if item is _GAP or len(self._pending) >= self.config.batch_max_messages:
                self._wake.notify()

    # ---- the batcher thread ----------------------------------------------------------------------

    def _run_batcher(self, emit: Callable[[Any], None]) -> None:
        interval = self.config.batch_interval_ms / 1000
        while True:
            with self._wake:
                if not self._stopping.is_set() and len(self._pending) < self.config.batch_max_messages:
                    self._wake.wait(interval)
                items = list(self._pending)
                self._pending.clear()
            if items:
                batch = self._batch_safely(items)
                if batch.height:
                    self.counters["batches"] += 1
                    try:  # the runtime's emit does not raise; any other one may
                        emit(batch)
                    except Exception as exc:  # never let the batcher die: count, log, go on
                        self._failed(f"emit of {batch.height} records", exc, "emit_errors")
            if self._stopping.is_set() and not self._pending:
                return

    def _batch_safely(self, items: list[Any]) -> pl.DataFrame | TagBatch:
        """`_batch`, and when it fails on something unforeseen, message by message: the one that
        fails becomes a bad record with the reason, the others flow."""
        try:
            return self._batch(items)
        except Exception as exc:
            self._failed(f"batch of {len(items)} messages (now one by one)", exc, "batch_errors")
        frames = []
        for item in items:
            try:
                frames.append(self._batch([item]))
            except Exception as exc:
                if item is _GAP:
                    continue
                topic, _payload, received = item
                reason = f"bad_payload: {self._failed(topic, exc, 'bad_payloads')}"
                builder = TagBatchBuilder(self.name)
                builder.add(topic, None, quality="bad", reason=reason, received_at=received)
                frames.append(builder.take_small())
        return concat_batches(frames) if frames else TagBatchBuilder(self.name).take_batch()

    def _batch(self, items: list[Any]) -> pl.DataFrame | TagBatch:
        """The records of `items`: a `TagBatch` when they are few and decoded without Polars
        (Sparkplug; a gap), else a frame (JSON payloads are decoded by Polars)."""
        frames: list[pl.DataFrame | TagBatch] = []
        run: list[tuple[str, bytes, datetime]] = []
        for item in items:
            if item is _GAP:
                if run:
                    frames.append(self._decode(run))
                    run = []
                gap = TagBatchBuilder(self.name)
                gap.gap(sorted(self.seen_tags))
                frames.append(gap.take_small())
            else:
                run.append(item)
        if run:
            frames.append(self._decode(run))
        batch = concat_batches(frames) if len(frames) > 1 else frames[0]
        if isinstance(batch, TagBatch):
            self.seen_tags.update(
                tag
                for tag, reason in zip(batch.column("tag"), batch.column("reason"), strict=True)
                if reason is None or not reason.startswith("bad_payload")
            )
        else:
            good = batch.filter(pl.col("reason").is_null() | ~pl.col("reason").str.starts_with("bad_payload"))
            self.seen_tags.update(good["tag"].unique().to_list())
        return batch

    def _reject(self, rejected: list[tuple[str, str]]) -> None:
        """Bad payloads and implausible timestamps: counted, kept for the GUI, logged."""
        for _item, reason in rejected:
            self.counters["implausible_timestamps" if reason.startswith(IMPLAUSIBLE) else "bad_payloads"] += 1
        self._problems(rejected)

    def _problems(self, problems: list[tuple[str, str]]) -> None:
        """Kept for the GUI, and logged with the item: each kind of problem at most once every
        LOG_EVERY_S (a misconfigured `epoch_unit` makes every message one), with how many like it
        were held back since; the counters have them all."""
        self.last_errors.extend(problems)
        now = time.monotonic()
        for item, reason in problems:
            kind = reason.split(":", 1)[0]
            last, held = self._logged.get(kind, (-LOG_EVERY_S, 0))
            if now - last < LOG_EVERY_S:
                self._logged[kind] = (last, held + 1)
                continue
            more = f" ({held} more like it in the last {now - last:.0f} s)" if held else ""
            self.ctx.log("warning", f"{item}: {reason}{more}", self.name)
            self._logged[kind] = (now, 0)

    def _failed(self, item: str, exc: BaseException, counter: str) -> str:
        """An unforeseen exception: the runtime's rule (counted in `item_errors`, logged with the
        item), our own counter, and `last_errors`; returns the one-line reason."""
        self.counters[counter] += 1
        reason = self.item_failed(item, exc)
        self.last_errors.append((item, reason))
        return reason

    def _make_decoder(self) -> Callable[[list[tuple[str, bytes, datetime]]], pl.DataFrame | TagBatch]:
        cfg = self.config
        if cfg.payload == "json":
            from protocols.mqtt.json_payload import JsonDecoder

            decoder = JsonDecoder(cfg.json_mapping, self.name)

            def decode_json(run: list[tuple[str, bytes, datetime]]) -> pl.DataFrame:
                topics, payloads, received = (list(column) for column in zip(*run, strict=True))
                frame, rejected = decoder.decode(topics, payloads, received)
                self._reject(rejected)
                self.counters["fields_missing"] = decoder.fields_missing
                return frame

            return decode_json

        from protocols.mqtt.sparkplug import SparkplugError, SparkplugSession

        session = self.sparkplug = SparkplugSession(cfg.sparkplug.group_ids, cfg.sparkplug.edge_nodes)

        def decode_sparkplug(run: list[tuple[str, bytes, datetime]]) -> pl.DataFrame | TagBatch:
            builder = TagBatchBuilder(self.name)
            for topic, payload, received in run:
                mark = len(builder)
                try:
                    session.handle(topic, payload, builder, received)
                except Exception as exc:  # SparkplugError: not Sparkplug B; anything else: our bug
                    del_from(builder, mark)  # nothing half-written from this message
                    if isinstance(exc, SparkplugError):
                        reason = f"bad_payload: {exc}"
                        self._reject([(topic, reason)])
                    else:
                        reason = f"bad_payload: {self._failed(topic, exc, 'bad_payloads')}"
                    builder.add(topic, None, quality="bad", reason=reason, received_at=received)
            self._problems(session.problems)
            session.problems.clear()
            for key, count in session.counters.items():
                self.counters[key] = count
            for group, edge in session.rebirths:
                self._request_rebirth(group, edge)
            session.rebirths.clear()
            return builder.take_small()

        return decode_sparkplug

    def _request_rebirth(self, group: str, edge: str) -> None:
        """Sparkplug host duty: ask the node to publish its births again (NCMD Node Control/Rebirth)."""
        from protocols.mqtt.sparkplug import rebirth_request

        if not self.config.sparkplug.request_rebirth or self._client is None:
            return
        topic, payload = rebirth_request(group, edge)
        try:
            rc = self._client.publish(topic, payload, qos=0).rc
        except Exception as exc:
            rc = one_line_error(exc)
        if rc:  # not connected (the next birth or gap asks again), or refused
            self._problems([(topic, f"rebirth request not sent: {rc}")])
            return
        self.counters["rebirth_requests"] += 1
        self.ctx.log("info", f"asked {group}/{edge} to rebirth ({topic})", self.name)


def del_from(builder: TagBatchBuilder, mark: int) -> None:
    """Drop what `builder` got after it held `mark` records."""
    for column in (
        builder.timestamp,
        builder.server_timestamp,
        builder.tag,
        builder.value,
        builder.value_text,
        builder.quality,
        builder.reason,
        builder.received_at,
    ):
        del column[mark:]
