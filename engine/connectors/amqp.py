"""RabbitMQ / AMQP 0-9-1 (`rabbitmq`, alias `amqp`; issue 13): a streaming source and a destination.

Client: pika (BlockingConnection), not aio-pika. The source runs on a thread of its own, as every
streaming source does; pika's blocking adapter is that thread's loop (`process_data_events`), with
no asyncio loop to host and no extra dependency (aiormq, yarl...). Acks from the runtime's thread
go through `add_callback_threadsafe`, pika's one thread-safe entry point, and run on the source's
thread.

Source: consumes a queue (declared durable unless `declare: false`), optionally bound to an
`exchange` with `routing_keys`; `prefetch` bounds the unacknowledged messages the broker sends,
which is also the back-pressure: a pipeline that falls behind stops the broker's deliveries. A
message is acknowledged only after the micro-batch holding it is committed (ack after commit); a
crash or a lost connection leaves it unacked and the broker re-delivers it. Only a queue given by
name survives the source being away: with `exchange` and no `queue`, a server-named exclusive
queue is used and messages published while the pipeline is down are not kept.

Destination: through the outbox (`make_target`), JSON per record (`message: record`, message id =
the record's `_key`) or per batch (`message: batch`), persistent, with publisher confirms and
`mandatory` (an unroutable message is an error, not a silent loss).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from engine.connectors.base import ConnectorConfig, one_line_error
from engine.connectors.mq_common import Message, MqSource, MqSourceOptions
from engine.connectors.registry import register
from engine.connectors.webhook import json_frame, json_lines, keys_digest
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.outbox.config import RemoteSinkConfig
from engine.outbox.connector import CheckByOpening, RemoteConnector
from engine.outbox.target import KEY_COLUMN, DeliveryError

if TYPE_CHECKING:
    from engine.connectors.base import StreamingSource


class AmqpLink(ConnectorConfig):
    host: str = Field("127.0.0.1", description="broker host")
    port: int = Field(5672, ge=1, le=65535, description="AMQP port (5672, 5671 with TLS)")
    virtual_host: str = Field("/", description="the broker's virtual host")
    username: str = Field("guest", description="user name")
    password: str = Field(
        "guest", repr=False, description='use {"secret": "NAME"}, never the password itself'
    )
    heartbeat: int = Field(30, ge=0, le=3600, description="seconds between heartbeats (0: none)")
    connect_timeout: float = Field(5.0, gt=0, le=120, description="seconds to wait for a connection")


def _params(cfg: AmqpLink) -> Any:
    import pika

    return pika.ConnectionParameters(
        host=cfg.host,
        port=cfg.port,
        virtual_host=cfg.virtual_host,
        credentials=pika.PlainCredentials(cfg.username, cfg.password),
        heartbeat=cfg.heartbeat,
        socket_timeout=cfg.connect_timeout,
        stack_timeout=cfg.connect_timeout + 5,
        blocked_connection_timeout=max(cfg.connect_timeout, 30),
        connection_attempts=1,
    )


def amqp_reason(exc: BaseException) -> str:
    """pika nests the cause (`AMQPConnectionError((AMQPConnectorSocketConnectError(...),))`)."""
    seen = exc
    for _ in range(5):
        inner = getattr(seen, "exception", None)  # pika's connector errors keep the cause here
        if not isinstance(inner, BaseException):
            inner = next((a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)), None)
        if inner is None:
            break
        seen = inner
    if isinstance(seen, ConnectionRefusedError) or "Connection refused" in str(seen):
        return "connection refused"
    text = one_line_error(seen, 200)
    if "ACCESS_REFUSED" in text or "ProbableAuthenticationError" in text:
        return "access refused (check username and password)"
    if isinstance(seen, TimeoutError) or "timed out" in text.lower():
        return "no answer (timed out)"
    return text


def _where(cfg: AmqpLink) -> str:
    vhost = "" if cfg.virtual_host == "/" else "/" + cfg.virtual_host
    return f"amqp://{cfg.host}:{cfg.port}{vhost}"


# pika logs every failed connection attempt as an ERROR with a traceback; the source reports the
# reason itself (session state, one line), so pika's own lines are kept to CRITICAL.
if logging.getLogger("pika").level == logging.NOTSET:
    logging.getLogger("pika").setLevel(logging.CRITICAL)

_NAME = re.compile(r"^[\w.\-:]{0,255}$")


class AmqpSourceConfig(AmqpLink, MqSourceOptions):
    queue: str | None = Field(
        None, description="the queue to consume (declared durable unless declare: false)"
    )
    exchange: str | None = Field(None, description="bind the queue to this exchange (declared when declare)")
    exchange_type: Literal["topic", "direct", "fanout", "headers"] = Field("topic", description="its type")
    routing_keys: list[str] = Field(
        default_factory=lambda: ["#"], description="binding keys (topic: * and #)"
    )
    declare: bool = Field(True, description="declare the queue (and exchange); false: they must exist")
    prefetch: int = Field(
        1000, ge=1, le=65535, description="unacknowledged messages the broker sends, at most"
    )

    @model_validator(mode="after")
    def _what(self) -> AmqpSourceConfig:
        if not self.queue and not self.exchange:
            raise ValueError("give a queue to consume, or an exchange (with routing_keys) to bind one to")
        for name in (self.queue, self.exchange):
            if name is not None and not _NAME.match(name):
                raise ValueError(f"'{name}': a queue or exchange name is letters, digits, '_', '.', '-', ':'")
        return self


class AmqpSource(MqSource):
    config: AmqpSourceConfig

    def __init__(self, config: AmqpSourceConfig, ctx: RunContext, name: str):
        super().__init__(config, ctx, name)
        self.where = _where(config)
        self._conn: Any = None
        self._channel: Any = None
        self._consumer: str | None = None
        self._buf: deque[Message] = deque()
        self._gen = 0  # delivery tags belong to one channel: a tag of an earlier one is not acked
        # this channel's tags delivered and not acked, in delivery order (the source's thread only)
        self._unacked: deque[int] = deque()
        self._acked_ahead: set[int] = set()  # acked out of order, still in `_unacked`

    def _reason(self, exc: BaseException) -> str:
        return amqp_reason(exc)

    def _connect(self) -> None:
        import pika

        cfg = self.config
        self._conn = pika.BlockingConnection(_params(cfg))
        ch = self._conn.channel()
        ch.basic_qos(prefetch_count=cfg.prefetch)
        if cfg.exchange:
            ch.exchange_declare(cfg.exchange, cfg.exchange_type, durable=True, passive=not cfg.declare)
        if cfg.queue:
            queue = ch.queue_declare(cfg.queue, durable=True, passive=not cfg.declare).method.queue
        else:
            queue = ch.queue_declare("", exclusive=True).method.queue
        if cfg.exchange:
            for key in cfg.routing_keys or [""]:
                ch.queue_bind(queue, cfg.exchange, routing_key=key)
        self._gen += 1
        self._buf.clear()
        self._unacked.clear()
        self._acked_ahead.clear()
        gen = self._gen
        unacked = self._unacked

        def on_message(_ch: Any, method: Any, _props: Any, body: bytes) -> None:
            origin = f"{queue}:{method.routing_key}"
            unacked.append(method.delivery_tag)
            self._buf.append(Message(body, origin, (gen, method.delivery_tag)))

        self._consumer = ch.basic_consume(queue, on_message, auto_ack=False)
        self._channel = ch

    def _fetch(self, limit: int, wait_s: float) -> list[Message]:
        import time

        deadline = time.monotonic() + wait_s
        while len(self._buf) < limit:
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping.is_set():
                break
            self._conn.process_data_events(time_limit=left)
        out = []
        while self._buf and len(out) < limit:
            out.append(self._buf.popleft())
        return out

    def _ack(self, acks: list[Any]) -> None:
        conn = self._conn
        if conn is None or not conn.is_open:
            return  # they stay unacked: the broker re-delivers them (duplicates, never a loss)

        def ack() -> None:
            ch = self._channel
            if ch is None or not ch.is_open:
                return
            tags = {tag for gen, tag in acks if gen == self._gen}
            sent = len(tags)
            self._send_acks(ch, tags)
            if sent:
                # AMQP acks have no reply; a synchronous request after them on the same channel
                # returns once the broker has processed them, so `acked` counts acks it has.
                ch.basic_qos(prefetch_count=self.config.prefetch)
            self.counters["acked"] += sent

        with contextlib.suppress(Exception):
            conn.add_callback_threadsafe(ack)

    def _send_acks(self, ch: Any, tags: set[int]) -> None:
        """One `multiple` ack for the oldest delivered tags when they are all committed (the usual
        case: micro-batches commit in order); a tag acked ahead of older ones is acked alone."""
        unacked, ahead = self._unacked, self._acked_ahead
        top = None
        while unacked and (unacked[0] in tags or unacked[0] in ahead):
            top = unacked.popleft()
            tags.discard(top)
            ahead.discard(top)
        if top is not None:
            ch.basic_ack(top, multiple=True)
        for tag in tags:
            ch.basic_ack(tag)
            ahead.add(tag)

    def _idle(self, seconds: float) -> None:
        if self._conn is not None and self._conn.is_open:
            self._conn.process_data_events(time_limit=seconds)

    def _stop_consuming(self) -> None:
        if self._channel is not None and self._channel.is_open and self._consumer:
            self._channel.basic_cancel(self._consumer)

    def _close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            conn.close()

    def check(self) -> None:
        try:
            self._connect()
        except Exception as exc:
            raise ConnectorError(f"{self.where}: {amqp_reason(exc)}") from None
        finally:
            self._close_quietly()


# ---- destination -----------------------------------------------------------------------------


class AmqpSinkConfig(AmqpLink, RemoteSinkConfig):
    exchange: str = Field("", description="publish to this exchange ('' : the default exchange, key = queue)")
    routing_key: str = Field("", description="the routing key (with the default exchange: the queue's name)")
    routing_key_field: str | None = Field(None, description="take each record's routing key from this column")
    queue: str | None = Field(None, description="declare this durable queue (and bind it to the exchange)")
    exchange_type: Literal["topic", "direct", "fanout", "headers"] = Field(
        "topic", description="the exchange's type, when it is declared"
    )
    declare: bool = Field(True, description="declare the exchange (when named) and the queue (when given)")
    message: Literal["record", "batch"] = Field("record", description="one message per record, or per batch")
    batch_rows: int = Field(1000, ge=1, le=1_000_000, description="records per message (message: batch)")
    persistent: bool = Field(True, description="delivery mode 2: the broker writes the message to disk")

    @model_validator(mode="after")
    def _routable(self) -> AmqpSinkConfig:
        if not self.exchange and not (self.routing_key or self.queue or self.routing_key_field):
            raise ValueError("with the default exchange, give the queue (or routing_key) to publish to")
        return self


class AmqpTarget(CheckByOpening):
    """An `UpstreamTarget` (engine/outbox/target.py): publishes with publisher confirms."""

    def __init__(self, config: AmqpSinkConfig, ctx: RunContext, name: str):
        self.config, self.ctx, self.name = config, ctx, name
        self._conn: Any = None
        self._channel: Any = None
        self.published = 0

    def describe_target(self) -> str:
        cfg = self.config
        return f"{_where(cfg)} exchange '{cfg.exchange}' key '{cfg.routing_key or cfg.queue or ''}'"

    def open(self) -> None:
        if self._channel is not None and self._channel.is_open:
            return
        import pika

        cfg = self.config
        try:
            self._conn = pika.BlockingConnection(_params(cfg))
            ch = self._conn.channel()
            if cfg.exchange and cfg.declare:
                ch.exchange_declare(cfg.exchange, cfg.exchange_type, durable=True)
            if cfg.queue and cfg.declare:
                ch.queue_declare(cfg.queue, durable=True)
                if cfg.exchange:
                    ch.queue_bind(cfg.queue, cfg.exchange, routing_key=cfg.routing_key or cfg.queue)
            ch.confirm_delivery()
            self._channel = ch
        except Exception as exc:
            self.close()
            reason = amqp_reason(exc)
            raise DeliveryError(
                f"cannot connect to {_where(cfg)}: {reason}", retryable="access" not in reason
            ) from None

    def deliver(self, table: pa.Table, *, historical: bool = False) -> None:
        import pika
        import pika.exceptions
        import polars as pl

        if table.num_rows == 0:
            return
        self.open()
        cfg = self.config
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        key = cfg.routing_key or (cfg.queue or "" if not cfg.exchange else "")
        headers = {"aggregator-historical": "true"} if historical else None
        if cfg.message == "record":
            bodies = json_lines(json_frame(frame))
            ids = (
                frame.get_column(KEY_COLUMN).to_list()
                if KEY_COLUMN in frame.columns
                else [None] * len(bodies)
            )
            keys = (
                frame.get_column(cfg.routing_key_field).cast(pl.String).fill_null("").to_list()
                if cfg.routing_key_field and cfg.routing_key_field in frame.columns
                else [key] * len(bodies)
            )
            messages = list(zip(keys, bodies, ids, strict=True))
        else:
            messages = []
            for start in range(0, frame.height, cfg.batch_rows):
                chunk = frame.slice(start, cfg.batch_rows)
                digest = keys_digest(chunk.get_column(KEY_COLUMN)) if KEY_COLUMN in chunk.columns else None
                messages.append((key, json_frame(chunk).write_json().encode(), f"batch-{digest}"))
        try:
            for routing_key, body, msg_id in messages:
                props = pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2 if cfg.persistent else 1,
                    message_id=msg_id,
                    headers=headers,
                )
                self._channel.basic_publish(cfg.exchange, routing_key, body, props, mandatory=True)
                self.published += 1
        except pika.exceptions.UnroutableError:
            raise DeliveryError(
                f"{_where(cfg)}: no queue is bound for exchange '{cfg.exchange}' key '{key}' (message unroutable)",
                retryable=True,
            ) from None
        except pika.exceptions.NackError:
            self.close()
            raise DeliveryError(
                f"{_where(cfg)}: the broker refused (nack) a message", retryable=True
            ) from None
        except Exception as exc:
            self.close()
            raise DeliveryError(
                f"{_where(cfg)}: publishing failed: {amqp_reason(exc)}", retryable=True
            ) from None

    def close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                if conn.is_open:
                    conn.close()
            except Exception:
                pass


@register
class RabbitmqConnector(RemoteConnector):
    connector_type = "rabbitmq"
    title = "RabbitMQ (AMQP 0-9-1)"
    SourceConfig: ClassVar[type[AmqpSourceConfig]] = AmqpSourceConfig
    SinkConfig: ClassVar[type[AmqpSinkConfig]] = AmqpSinkConfig

    @classmethod
    def make_source(cls, config: ConnectorConfig, ctx: RunContext, name: str) -> StreamingSource:
        assert isinstance(config, AmqpSourceConfig)
        return AmqpSource(config, ctx, name)

    Target = AmqpTarget


@register
class AmqpConnector(RabbitmqConnector):
    connector_type = "amqp"
    title = "AMQP 0-9-1 (RabbitMQ)"
