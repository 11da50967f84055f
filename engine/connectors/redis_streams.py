"""Redis Streams (`redis_streams`; issue 13): a streaming source and a destination (redis-py).

Source: a consumer group (`XREADGROUP`, created with `MKSTREAM` when missing) read by a consumer
of a stable name (`consumer`, default `<pipeline>-<source>`). Entries are acknowledged (`XACK`)
only after the micro-batch holding them is committed, so a crash leaves them pending. At start,
the consumer first re-reads its own pending entries (`XREADGROUP ... 0`: what it received and
never committed last time), then claims entries other consumers left pending longer than
`claim_idle_ms` (`XAUTOCLAIM`: a consumer that died), then reads new ones (`>`).

An entry's JSON is its `field` (default `data`); an entry without that field is a record of its
own fields (text values).

Destination: through the outbox (`make_target`): one `XADD` per record (fields `data` = the
record's JSON, `key` = its `_key`), pipelined, with optional `maxlen` (approximate trimming).
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from engine.connectors.base import ConnectorConfig, one_line_error
from engine.connectors.mq_common import Message, MqSource, MqSourceOptions
from engine.connectors.registry import register
from engine.connectors.webhook import json_frame, json_lines
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.outbox.config import RemoteSinkConfig
from engine.outbox.connector import CheckByOpening, RemoteConnector
from engine.outbox.target import KEY_COLUMN, DeliveryError

if TYPE_CHECKING:
    from engine.connectors.base import StreamingSource


class RedisLink(ConnectorConfig):
    host: str = Field("127.0.0.1", description="Redis host")
    port: int = Field(6379, ge=1, le=65535, description="Redis port")
    db: int = Field(0, ge=0, le=15, description="database number")
    username: str | None = Field(None, description="ACL user name (Redis 6+)")
    password: str | None = Field(
        None, repr=False, description='use {"secret": "NAME"}, never the password itself'
    )
    tls: bool = Field(False, description="connect with TLS (rediss)")
    connect_timeout: float = Field(5.0, gt=0, le=120, description="seconds to wait for a connection")
    stream: str = Field(description="the stream's key")

    @field_validator("stream")
    @classmethod
    def _stream(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the stream's key is empty")
        return value


def _client(cfg: RedisLink, read_timeout: float | None) -> Any:
    import redis

    return redis.Redis(
        host=cfg.host,
        port=cfg.port,
        db=cfg.db,
        username=cfg.username,
        password=cfg.password,
        ssl=cfg.tls,
        socket_connect_timeout=cfg.connect_timeout,
        socket_timeout=read_timeout,
    )


def redis_reason(exc: BaseException) -> str:
    text = one_line_error(exc, 200)
    if "refused" in text.lower():
        return "connection refused"
    if "AuthenticationError" in text or "WRONGPASS" in text or "NOAUTH" in text:
        return "authentication failed (check username and password)"
    if "Timeout" in text:
        return "no answer (timed out)"
    return text


def _where(cfg: RedisLink) -> str:
    return f"redis://{cfg.host}:{cfg.port}/{cfg.db} stream '{cfg.stream}'"


class RedisStreamsSourceConfig(RedisLink, MqSourceOptions):
    group: str = Field("aggregator", min_length=1, description="the consumer group")
    consumer: str | None = Field(None, description="this consumer's name (default: <pipeline>-<source>)")
    start_id: Literal["$", "0"] = Field(
        "$", description="where a group created here starts: '$' new entries only, '0' the whole stream"
    )
    claim_idle_ms: int = Field(
        60_000, ge=0, description="at start, claim entries other consumers left pending this long"
    )
    field: str = Field("data", min_length=1, description="the entry field holding the JSON")


class RedisStreamsSource(MqSource):
    config: RedisStreamsSourceConfig

    def __init__(self, config: RedisStreamsSourceConfig, ctx: RunContext, name: str):
        super().__init__(config, ctx, name)
        self.where = _where(config)
        self.consumer = config.consumer or f"{ctx.pipeline or 'aggregator'}-{name}"
        self._r: Any = None
        self._acker: Any = None
        self._phase = "pending"  # pending (own PEL) -> claim (XAUTOCLAIM) -> new (">")
        self._claim_from = "0-0"
        self._field = config.field.encode()

    def _reason(self, exc: BaseException) -> str:
        return redis_reason(exc)

    def _connect(self) -> None:
        import redis

        cfg = self.config
        wait = cfg.batch_interval_ms / 1000
        self._r = _client(cfg, cfg.connect_timeout + wait + 5)
        self._r.ping()
        try:
            self._r.xgroup_create(cfg.stream, cfg.group, id=cfg.start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if self._acker is None:
            self._acker = _client(cfg, cfg.connect_timeout + 5)

    def _messages(self, entries: list[Any]) -> list[Message]:
        out = []
        dead = []
        for entry_id, fields in entries:
            if not fields:  # deleted from the stream while pending: nothing to read, ack it
                dead.append(entry_id)
                continue
            body = fields.get(self._field)
            if body is None:
                body = json.dumps(
                    {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
                ).encode()
            out.append(Message(body, entry_id.decode(), entry_id))
        if dead:
            self._r.xack(self.config.stream, self.config.group, *dead)
        return out

    def _fetch(self, limit: int, wait_s: float) -> list[Message]:
        cfg = self.config
        if self._phase == "pending":
            with self._lock:
                outstanding = {a for acks in self._outstanding.values() for a in acks}
            reply = self._r.xreadgroup(cfg.group, self.consumer, {cfg.stream: self._claim_from}, count=limit)
            entries = reply[0][1] if reply else []
            if not entries:
                self._phase, self._claim_from = "claim", "0-0"
                return []
            self._claim_from = entries[-1][0].decode()
            self.counters["redelivered"] += len(entries)
            return self._messages([e for e in entries if e[0] not in outstanding])
        if self._phase == "claim":
            if cfg.claim_idle_ms <= 0:
                self._phase = "new"
                return []
            cursor, entries, *_ = self._r.xautoclaim(
                cfg.stream,
                cfg.group,
                self.consumer,
                cfg.claim_idle_ms,
                start_id=self._claim_from,
                count=limit,
            )
            cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
            if cursor in ("0-0", "0"):
                self._phase = "new"
            self._claim_from = cursor
            self.counters["claimed"] += len(entries)
            return self._messages(entries)
        reply = self._r.xreadgroup(
            cfg.group, self.consumer, {cfg.stream: ">"}, count=limit, block=max(1, int(wait_s * 1000))
        )
        return self._messages(reply[0][1] if reply else [])

    def _ack(self, acks: list[Any]) -> None:
        try:
            self._acker.xack(self.config.stream, self.config.group, *acks)
            self.counters["acked"] += len(acks)
        except Exception as exc:  # they stay pending: re-read at the next start (duplicates, never a loss)
            self.item_failed("XACK", exc)

    def _close(self) -> None:
        r, self._r = self._r, None
        if r is not None:
            r.close()
        # a new connection re-reads the pending entries, skipping those emitted and not yet acked
        self._phase, self._claim_from = "pending", "0-0"

    def stop(self) -> None:
        super().stop()
        acker, self._acker = self._acker, None
        if acker is not None:
            acker.close()

    def check(self) -> None:
        try:
            r = _client(self.config, self.config.connect_timeout)
            r.ping()
            r.close()
        except Exception as exc:
            raise ConnectorError(f"{self.where}: {redis_reason(exc)}") from None


# ---- destination -----------------------------------------------------------------------------


class RedisStreamsSinkConfig(RedisLink, RemoteSinkConfig):
    field: str = Field("data", min_length=1, description="the entry field the record's JSON goes in")
    maxlen: int | None = Field(None, ge=1, description="trim the stream to about this many entries")


class RedisStreamsTarget(CheckByOpening):
    """An `UpstreamTarget` (engine/outbox/target.py): XADD per record, pipelined."""

    def __init__(self, config: RedisStreamsSinkConfig, ctx: RunContext, name: str):
        self.config, self.ctx, self.name = config, ctx, name
        self._r: Any = None

    def describe_target(self) -> str:
        return _where(self.config)

    def open(self) -> None:
        if self._r is not None:
            return
        try:
            self._r = _client(self.config, self.config.connect_timeout + 30)
            self._r.ping()
        except Exception as exc:
            self.close()
            reason = redis_reason(exc)
            raise DeliveryError(
                f"cannot connect to {_where(self.config)}: {reason}", retryable="authentication" not in reason
            ) from None

    def deliver(self, table: pa.Table, *, historical: bool = False) -> None:
        import polars as pl

        if table.num_rows == 0:
            return
        self.open()
        cfg = self.config
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        bodies = json_lines(json_frame(frame))
        keys = frame.get_column(KEY_COLUMN).to_list() if KEY_COLUMN in frame.columns else None
        field = cfg.field
        try:
            pipe = self._r.pipeline(transaction=False)
            for i, body in enumerate(bodies):
                fields: dict[str, Any] = {field: body}
                if keys is not None:
                    fields["key"] = keys[i]
                if historical:
                    fields["historical"] = "1"
                pipe.xadd(cfg.stream, fields, maxlen=cfg.maxlen, approximate=True)
            pipe.execute()
        except Exception as exc:
            self.close()
            raise DeliveryError(f"{_where(cfg)}: XADD failed: {redis_reason(exc)}", retryable=True) from None

    def close(self) -> None:
        r, self._r = self._r, None
        if r is not None:
            with contextlib.suppress(Exception):
                r.close()


@register
class RedisStreamsConnector(RemoteConnector):
    connector_type = "redis_streams"
    title = "Redis Streams"
    SourceConfig: ClassVar[type[RedisStreamsSourceConfig]] = RedisStreamsSourceConfig
    SinkConfig: ClassVar[type[RedisStreamsSinkConfig]] = RedisStreamsSinkConfig

    @classmethod
    def make_source(cls, config: ConnectorConfig, ctx: RunContext, name: str) -> StreamingSource:
        assert isinstance(config, RedisStreamsSourceConfig)
        return RedisStreamsSource(config, ctx, name)

    Target = RedisStreamsTarget
