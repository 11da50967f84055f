"""MQTT as a destination: the settings of the `mqtt` (JSON publish) and `sparkplug_b` (edge node)
destinations, the MQTT client they share, and the JSON publish target.

`mqtt` destination: every record becomes JSON, published with QoS 1 (default) to a topic made from
a template (`plant/site1/{tag}`: `{column}` is the record's value of that column; `+`, `#` and
empty levels are replaced). `payload: record` sends one message per record, `batch` one JSON
array per topic and delivery (at most `max_records_per_message` records each). Every record
carries `_key`, its idempotency key: a consumer deduplicates on it. `deliver` returns once the
broker has acknowledged (PUBACK) every message.

`sparkplug_b` destination: see protocols/mqtt/edge_node.py and docs/upstream-sparkplug.md.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from engine.connectors.base import one_line_error
from engine.errors import ConnectorError
from engine.outbox.config import RemoteSinkConfig
from protocols.mqtt.config import TlsOptions

if TYPE_CHECKING:
    import pyarrow as pa

    from engine.outbox.target import DeliveryError

# The configs are imported with the connector (registry, validation): pyarrow and the outbox's
# target module load only when a destination delivers.


def delivery_error(message: str, *, retryable: bool) -> DeliveryError:
    from engine.outbox.target import DeliveryError

    return DeliveryError(message, retryable=retryable)


_ID_RESERVED = re.compile(r"[+/#]")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def check_id(value: str, what: str) -> str:
    """A Sparkplug group, edge node or device id: UTF-8 without `+`, `/`, `#` (spec 3.0, 4.1.1)."""
    if not value or _ID_RESERVED.search(value):
        raise ValueError(f"{what} '{value}': must be non-empty, without `+`, `/` or `#`")
    return value


class MqttBrokerOptions(RemoteSinkConfig):
    """The broker connection both MQTT destinations share."""

    host: str = Field("127.0.0.1", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (1883, or 8883 with TLS)")
    client_id: str | None = Field(None, description="MQTT client id; a unique one is made when unset")
    username: str | None = None
    tls: TlsOptions | None = Field(None, description="connect with TLS")
    allow_insecure_password: bool = Field(
        False, description="send the password without TLS, in clear text (refused unless true)"
    )
    # after `tls` and `allow_insecure_password`: its check reads them
    password: str | None = Field(None, description='use {"secret": "NAME"}, never the password itself')
    keepalive: int = Field(30, ge=5, le=65535, description="seconds between keep-alive pings")
    connect_timeout: float = Field(10.0, gt=0, le=300, description="seconds to wait for the broker's CONNACK")
    ack_timeout: float = Field(
        30.0, gt=0, le=3600, description="seconds to wait for the broker to acknowledge a delivery"
    )
    reconnect_min_delay: float = Field(0.5, gt=0, description="seconds before the first reconnect attempt")
    reconnect_max_delay: float = Field(30.0, gt=0, description="back-off ceiling between attempts")

    @field_validator("password")
    @classmethod
    def _not_in_clear(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "tls" not in info.data:
            return value
        if value is not None and info.data["tls"] is None and not info.data.get("allow_insecure_password"):
            raise ValueError(
                "a password without TLS would cross the network in clear text: add `tls` (port 8883), "
                "or set allow_insecure_password: true"
            )
        return value

    @model_validator(mode="after")
    def _delays(self) -> MqttBrokerOptions:
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise ValueError("reconnect_max_delay must be at least reconnect_min_delay")
        return self


class MqttPublishConfig(MqttBrokerOptions):
    """`mqtt` as a destination: records as JSON."""

    topic: str = Field(
        ...,
        description="topic template: `{column}` is the record's value of that column, e.g. "
        "`plant/site1/{tag}`; `+`, `#` in values become `_`",
    )
    payload: Literal["record", "batch"] = Field(
        "record", description="record: one JSON object per message; batch: a JSON array per topic"
    )
    max_records_per_message: int = Field(1000, ge=1, le=1_000_000, description="batch: records per message")
    qos: Literal[0, 1, 2] = Field(
        1, description="1 (default) or 2: deliver waits for the broker's acknowledgement; 0: no guarantee"
    )
    retain: bool = Field(False, description="retained messages (the broker keeps the last per topic)")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        fixed = _PLACEHOLDER.sub("x", value)
        if not value or "+" in fixed or "#" in fixed or "{" in fixed or "}" in fixed:
            raise ValueError(
                f"topic '{value}': a topic name (no `+` or `#`) with `{{column}}` placeholders, "
                "e.g. `plant/site1/{tag}`"
            )
        return value


class SparkplugPublishConfig(MqttBrokerOptions):
    """`sparkplug_b` as a destination: this box is a Sparkplug B edge node."""

    group_id: str = Field(..., description="Sparkplug group id (e.g. the site): spBv1.0/<group_id>/...")
    edge_node_id: str = Field(
        ..., description="this box's edge node id, unique within the group (e.g. its host name)"
    )
    device_id: str | None = Field(
        None,
        description="publish the tags as metrics of this device (DBIRTH/DDATA); unset: as node "
        "metrics (NBIRTH/NDATA)",
    )
    device_column: str | None = Field(
        None,
        description="take each record's device id from this column (e.g. `source`); records where "
        "it is null go to `device_id`, or to the node",
    )
    max_metrics_per_message: int = Field(
        2000, ge=1, le=1_000_000, description="metrics per NDATA/DDATA payload"
    )
    key_property: bool = Field(
        False,
        description="also send each record's idempotency key as the metric property `_key` "
        "(standard Sparkplug properties, about 40 bytes more per value)",
    )
    primary_host_id: str | None = Field(
        None,
        description="wait for this Sparkplug primary host application to be online (its STATE "
        "message, spBv1.0/STATE/<id>) before the births; while it is offline the node stays dead "
        "and the outbox holds the data (Sparkplug's store and forward)",
    )

    @field_validator("group_id", "edge_node_id", "device_id", "primary_host_id")
    @classmethod
    def _ids(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_id(value, info.field_name or "id")


# ---- the MQTT client ---------------------------------------------------------------------------


def make_client(config: MqttBrokerOptions, client_id: str) -> Any:
    """A paho-mqtt 2 client (MQTT 3.1.1, clean session, as Sparkplug requires), TLS and
    credentials set, auto-reconnect with back-off."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311
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
    client.reconnect_delay_set(config.reconnect_min_delay, config.reconnect_max_delay)  # type: ignore[arg-type]
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def check_broker(config: MqttBrokerOptions) -> None:
    """Test connection: CONNACK within `connect_timeout`, else a one-line ConnectorError."""
    where = f"mqtt://{config.host}:{config.port}"
    client = make_client(config, f"aggregator-check-{uuid.uuid4().hex[:8]}")
    answered = threading.Event()
    refused: list[str] = []

    def on_connect(_c, _u, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            refused.append(f"broker refused the connection: {reason_code}")
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(config.host, config.port, keepalive=config.keepalive)
    except Exception as exc:
        raise ConnectorError(f"{where}: cannot connect: {one_line_error(exc)}") from None
    client.loop_start()
    try:
        if not answered.wait(config.connect_timeout):
            raise ConnectorError(f"{where}: no answer (CONNACK) within {config.connect_timeout:g} s")
        if refused:
            raise ConnectorError(f"{where}: {refused[0]}")
    finally:
        client.disconnect()
        client.loop_stop()


class BrokerLink:
    """One auto-reconnecting paho client on its own network thread, with its connection state.

    `on_connected(client)` runs on paho's thread after each successful CONNACK (Sparkplug births);
    `wait_connected(timeout)` is for the deliverer."""

    def __init__(self, config: MqttBrokerOptions, client_id: str):
        self.config = config
        self.where = f"mqtt://{config.host}:{config.port}"
        self.client = make_client(config, client_id)
        self.cond = threading.Condition()
        self.connected = False
        self.generation = 0  # +1 per successful connection: a delivery must not span two
        self.last_error: str | None = None
        self.started = False
        self.on_connected: Any = None
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        self.client.connect_async(self.config.host, self.config.port, self.config.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        try:
            self.client.disconnect()
            with self.cond:  # DISCONNECT on the wire before the loop stops: else the broker sends the will
                self.cond.wait_for(lambda: not self.connected, timeout=min(5.0, self.config.ack_timeout))
        finally:
            self.client.loop_stop()
            with self.cond:
                self.connected = False
                self.cond.notify_all()

    def _on_connect(self, client, _userdata, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            with self.cond:
                self.last_error = f"broker refused the connection: {reason_code}"
                self.cond.notify_all()
            return
        try:
            if self.on_connected is not None:
                self.on_connected(client)
        except Exception as exc:  # never kill paho's thread; the deliverer sees the reason
            with self.cond:
                self.last_error = f"after connecting: {one_line_error(exc)}"
                self.cond.notify_all()
            client.disconnect()
            return
        with self.cond:
            self.connected = True
            self.generation += 1
            self.last_error = None
            self.cond.notify_all()

    def _on_connect_fail(self, _client, _userdata) -> None:
        import sys

        exc = sys.exc_info()[1]
        with self.cond:
            self.last_error = f"cannot connect: {one_line_error(exc)}" if exc else "cannot connect"
            self.cond.notify_all()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        with self.cond:
            self.connected = False
            self.last_error = f"connection lost: {reason_code}"
            self.cond.notify_all()

    def wait_connected(self, timeout: float) -> int:
        """The connection's generation, once connected; a retryable DeliveryError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.connected:
                left = deadline - time.monotonic()
                if left <= 0:
                    reason = self.last_error or f"no CONNACK within {timeout:g} s"
                    raise delivery_error(f"{self.where}: not connected: {reason}", retryable=True)
                self.cond.wait(left)
            return self.generation

    def lost_since(self, generation: int) -> bool:
        return not self.connected or self.generation != generation


# ---- JSON publish target -------------------------------------------------------------------------


def _level(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("+", "_").replace("#", "_") or "_"


class MqttJsonTarget:
    """The `mqtt` destination's UpstreamTarget: records as JSON messages, QoS 1 by default."""

    def __init__(self, config: MqttPublishConfig, name: str):
        self.config, self.name = config, name
        self.link: BrokerLink | None = None

    def describe_target(self) -> str:
        return f"mqtt://{self.config.host}:{self.config.port} {self.config.topic}"

    def check(self) -> None:
        check_broker(self.config)

    def open(self) -> None:
        if self.link is None:
            self.link = BrokerLink(
                self.config, self.config.client_id or f"aggregator-{uuid.uuid4().hex[:10]}"
            )
        self.link.start()
        try:
            self.link.wait_connected(self.config.connect_timeout)
        except Exception:
            self.close()  # no client left reconnecting behind the forwarder's back
            raise

    def close(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            with contextlib.suppress(Exception):  # close never raises
                link.stop()

    def topics(self, table: pa.Table) -> list[str]:
        """Each row's topic from the template."""
        template = self.config.topic
        names = _PLACEHOLDER.findall(template)
        missing = [n for n in names if n not in table.column_names]
        if missing:
            raise delivery_error(
                f"topic template '{template}': no column {', '.join(missing)} in the records "
                f"(columns: {', '.join(table.column_names)})",
                retryable=False,
            )
        if not names:
            return [template] * table.num_rows
        columns = {n: table.column(n).to_pylist() for n in set(names)}
        return [
            _PLACEHOLDER.sub(lambda m, i=i: _level(columns[m.group(1)][i]), template)
            for i in range(table.num_rows)
        ]

    def messages(self, table: pa.Table) -> list[tuple[str, bytes]]:
        import polars as pl

        from engine.outbox.target import KEY_COLUMN

        if KEY_COLUMN not in table.column_names:
            raise delivery_error(f"the records have no `{KEY_COLUMN}` column", retryable=False)
        topics = self.topics(table)
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        lines = frame.write_ndjson().splitlines() if frame.height else []
        if self.config.payload == "record":
            return [(t, line.encode()) for t, line in zip(topics, lines, strict=True)]
        by_topic: dict[str, list[str]] = {}
        for t, line in zip(topics, lines, strict=True):
            by_topic.setdefault(t, []).append(line)
        out = []
        step = self.config.max_records_per_message
        for t, rows in by_topic.items():
            for i in range(0, len(rows), step):
                out.append((t, ("[" + ",".join(rows[i : i + step]) + "]").encode()))
        return out

    def deliver(self, table: pa.Table, *, historical: bool = False) -> None:
        if table.num_rows == 0:
            return
        messages = self.messages(table)
        if self.link is None:
            self.open()
        assert self.link is not None
        link, cfg = self.link, self.config
        link.wait_connected(cfg.connect_timeout)
        infos = []
        for topic, payload in messages:
            info = link.client.publish(topic, payload, qos=cfg.qos, retain=cfg.retain)
            if info.rc:
                raise delivery_error(
                    f"{link.where}: publish to {topic} failed: {info.rc} ({link.last_error or 'not connected'})",
                    retryable=True,
                )
            infos.append(info)
        if cfg.qos == 0:
            return
        deadline = time.monotonic() + cfg.ack_timeout
        for info in infos:  # paho resends unacknowledged QoS 1/2 messages after a reconnect
            left = deadline - time.monotonic()
            try:
                if left > 0:
                    info.wait_for_publish(left)
                acked = info.is_published()
            except (RuntimeError, ValueError) as exc:
                raise delivery_error(f"{link.where}: {one_line_error(exc)}", retryable=True) from None
            if not acked:
                raise delivery_error(
                    f"{link.where}: the broker did not acknowledge {len(infos)} messages within "
                    f"{cfg.ack_timeout:g} s ({link.last_error or 'no PUBACK'})",
                    retryable=True,
                )
