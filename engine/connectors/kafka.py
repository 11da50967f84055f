"""Kafka (`kafka`; issue 13), through confluent-kafka (librdkafka). UNTESTED AGAINST A BROKER: there
is no Kafka broker on the machine the tests run on. What is tested: the configs, and that an
unreachable bootstrap server gives a one-line error. It has the same interface as the other
message queue connectors (engine/connectors/mq_common.py):

- Source: a consumer in `group_id` subscribed to `topics`, auto-commit off; the offsets of a
  micro-batch's messages are committed (synchronously, on the source's thread) only after the
  micro-batch is committed by every destination, so a crash re-delivers from the last commit.
- Destination (through the outbox): one JSON message per record, key = the record's `_key`, an
  idempotent producer with `acks=all`; `deliver` returns once every message is acknowledged.

confluent-kafka is an optional dependency (`pip install data-aggregator[kafka]`); it is imported
only when a Kafka source or destination starts.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from engine.connectors.base import ConnectorConfig, one_line_error
from engine.connectors.mq_common import Message, MqSource, MqSourceOptions
from engine.connectors.registry import register
from engine.connectors.webhook import json_frame, json_lines
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.outbox.config import RemoteSinkConfig
from engine.outbox.connector import RemoteConnector
from engine.outbox.target import KEY_COLUMN, DeliveryError

if TYPE_CHECKING:
    from engine.connectors.base import StreamingSource


class KafkaLink(ConnectorConfig):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="host:port[,host:port...]")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = Field(None, repr=False, description='use {"secret": "NAME"}')
    ssl_ca_location: str | None = Field(None, description="CA file (PEM) for SSL")
    connect_timeout: float = Field(10.0, gt=0, le=120, description="seconds to wait for the cluster")


def _client_conf(cfg: KafkaLink) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap_servers,
        "security.protocol": cfg.security_protocol,
        "socket.connection.setup.timeout.ms": int(cfg.connect_timeout * 1000),
        "log_level": 0,  # librdkafka's own log lines off: the source reports one-line reasons
    }
    if cfg.sasl_mechanism:
        conf["sasl.mechanism"] = cfg.sasl_mechanism
        conf["sasl.username"] = cfg.sasl_username or ""
        conf["sasl.password"] = cfg.sasl_password or ""
    if cfg.ssl_ca_location:
        conf["ssl.ca.location"] = cfg.ssl_ca_location
    return conf


def _import() -> Any:
    try:
        import confluent_kafka
        import confluent_kafka.admin
    except ImportError:
        raise ConnectorError(
            "kafka needs the confluent-kafka package: pip install 'data-aggregator[kafka]'"
        ) from None
    return confluent_kafka


def _reachable(cfg: KafkaLink) -> None:
    """Ask the cluster for its metadata; a one-line ConnectorError when it does not answer."""
    ck = _import()
    admin = ck.admin.AdminClient(_client_conf(cfg))
    try:
        admin.list_topics(timeout=cfg.connect_timeout)
    except Exception as exc:
        raise ConnectorError(
            f"kafka://{cfg.bootstrap_servers}: no answer within {cfg.connect_timeout:g} s "
            f"({one_line_error(exc, 150)})"
        ) from None


class KafkaSourceConfig(KafkaLink, MqSourceOptions):
    topics: list[str] = Field(min_length=1, description="the topics to consume")
    group_id: str | None = Field(
        None, description="the consumer group (default: aggregator-<pipeline>-<source>)"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a group with no committed offset starts"
    )


class KafkaSource(MqSource):
    config: KafkaSourceConfig

    def __init__(self, config: KafkaSourceConfig, ctx: RunContext, name: str):
        super().__init__(config, ctx, name)
        self.where = f"kafka://{config.bootstrap_servers} topics {', '.join(config.topics)}"
        self._consumer: Any = None
        self._to_commit: deque[list[Any]] = deque()
        self._commit_lock = threading.Lock()

    def _connect(self) -> None:
        ck = _import()
        cfg = self.config
        _reachable(cfg)
        conf = _client_conf(cfg) | {
            "group.id": cfg.group_id or f"aggregator-{self.ctx.pipeline}-{self.name}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": cfg.auto_offset_reset,
        }
        self._consumer = ck.Consumer(conf)
        self._consumer.subscribe(cfg.topics)

    def _fetch(self, limit: int, wait_s: float) -> list[Message]:
        self._commit_pending()
        out = []
        for msg in self._consumer.consume(num_messages=limit, timeout=wait_s):
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise ConnectionError(str(err))
                continue  # partition EOF and other informational events
            origin = f"{msg.topic()}/{msg.partition()}@{msg.offset()}"
            out.append(Message(msg.value() or b"", origin, (msg.topic(), msg.partition(), msg.offset())))
        return out

    def _ack(self, acks: list[Any]) -> None:
        # The consumer is used on the source's thread only: committed there, at the next fetch.
        with self._commit_lock:
            self._to_commit.append(acks)

    def _commit_pending(self) -> None:
        with self._commit_lock:
            batches = list(self._to_commit)
            self._to_commit.clear()
        if not batches or self._consumer is None:
            return
        ck = _import()
        highest: dict[tuple[str, int], int] = {}
        count = 0
        for acks in batches:
            for topic, partition, offset in acks:
                highest[(topic, partition)] = max(highest.get((topic, partition), -1), offset)
                count += 1
        offsets = [ck.TopicPartition(t, p, o + 1) for (t, p), o in highest.items()]
        self._consumer.commit(offsets=offsets, asynchronous=False)
        self.counters["acked"] += count

    def _idle(self, seconds: float) -> None:
        self._commit_pending()
        super()._idle(seconds)

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()

    def check(self) -> None:
        _reachable(self.config)


class KafkaSinkConfig(KafkaLink, RemoteSinkConfig):
    topic: str = Field(min_length=1, description="the topic to produce to")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    ack_timeout: float = Field(30.0, gt=0, le=600, description="seconds to wait for a delivery's acks")


class KafkaTarget:
    """An `UpstreamTarget` (engine/outbox/target.py): idempotent producer, acks=all."""

    def __init__(self, config: KafkaSinkConfig, ctx: RunContext, name: str):
        self.config, self.ctx, self.name = config, ctx, name
        self._producer: Any = None

    def describe_target(self) -> str:
        return f"kafka://{self.config.bootstrap_servers} topic {self.config.topic}"

    def open(self) -> None:
        if self._producer is not None:
            return
        ck = _import()
        try:
            _reachable(self.config)
        except ConnectorError as exc:
            raise DeliveryError(str(exc), retryable=True) from None
        conf = _client_conf(self.config) | {
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": self.config.compression,
        }
        self._producer = ck.Producer(conf)

    def deliver(self, table: pa.Table, *, historical: bool = False) -> None:
        import polars as pl

        if table.num_rows == 0:
            return
        self.open()
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        bodies = json_lines(json_frame(frame))
        keys = frame.get_column(KEY_COLUMN).to_list() if KEY_COLUMN in frame.columns else [None] * len(bodies)
        errors: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        headers = [("aggregator-historical", b"true")] if historical else None
        for key, body in zip(keys, bodies, strict=True):
            while True:
                try:
                    self._producer.produce(
                        self.config.topic, value=body, key=key, headers=headers, on_delivery=delivered
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    self._producer.poll(0.1)
        left = self._producer.flush(self.config.ack_timeout)
        if left:
            raise DeliveryError(
                f"{self.describe_target()}: {left} message(s) not acknowledged within "
                f"{self.config.ack_timeout:g} s",
                retryable=True,
            )
        if errors:
            raise DeliveryError(f"{self.describe_target()}: {errors[0]}", retryable=True)

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(5)

    def check(self) -> None:
        _reachable(self.config)


@register
class KafkaConnector(RemoteConnector):
    connector_type = "kafka"
    title = "Kafka (untested here: no broker on the test machine)"
    SourceConfig: ClassVar[type[KafkaSourceConfig]] = KafkaSourceConfig
    SinkConfig: ClassVar[type[KafkaSinkConfig]] = KafkaSinkConfig

    @classmethod
    def make_source(cls, config: ConnectorConfig, ctx: RunContext, name: str) -> StreamingSource:
        assert isinstance(config, KafkaSourceConfig)
        return KafkaSource(config, ctx, name)

    Target = KafkaTarget
