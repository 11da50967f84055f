"""Configuration of the MQTT source (JSON payloads) and the Sparkplug B source."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from engine.connectors.base import ConnectorConfig

# `$.a.b[0].c` or `a.b[0].c`: keys separated by dots, list indexes in brackets.
_PATH = re.compile(r"^(\$)?(\.?[A-Za-z0-9_\-@]+|\[\d+\])*$")


def check_filter(topic: str) -> str:
    """An MQTT subscription filter: `#` only as the last level, `+` only as a whole level."""
    levels = topic.split("/")
    if not topic:
        raise ValueError("an empty topic filter (e.g. `plant/+/telemetry` or `sensors/#`)")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"'{topic}': `#` is allowed only as the whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"'{topic}': `+` is allowed only as a whole level")
    return topic


def check_path(path: str) -> str:
    if not path or path == "$" or not _PATH.match(path):
        raise ValueError(f"'{path}' is not a JSON path (allowed: `$.field`, `$.a.b`, `$.list[0].x`)")
    return path


class TlsOptions(ConnectorConfig):
    ca_file: str | None = Field(None, description="CA certificates (PEM); the system's when unset")
    cert_file: str | None = Field(None, description="client certificate (PEM), for mutual TLS")
    key_file: str | None = Field(None, description="client key (PEM), for mutual TLS")
    verify: bool = Field(True, description="verify the broker's certificate and host name")


class JsonMapping(ConnectorConfig):
    """How one JSON message becomes tag records."""

    tag_from: str = Field(
        "topic",
        description="`topic` (the tag is the message topic) or a JSON path whose value names the tag",
    )
    tag_prefix: str = Field("", description="prepended to every tag name, e.g. `site1/`")
    value_path: str = Field("$.value", description="JSON path of the value (a number, boolean or string)")
    fields: list[str] | None = Field(
        None,
        description="instead of value_path: several JSON paths, each a tag `<tag>/<path without $.>`; "
        "a field missing from a message is skipped and counted (`fields_missing`)",
    )
    timestamp_path: str | None = Field(
        None, description="JSON path of the timestamp; receive time when unset"
    )
    timestamp_format: Literal["auto", "iso8601", "epoch"] | str = Field(
        "auto",
        description="`auto` (numbers are epoch, strings ISO 8601), `iso8601`, `epoch` or a strftime format",
    )
    epoch_unit: Literal["s", "ms", "us", "ns"] = Field("s", description="unit of epoch timestamps")
    quality_path: str | None = Field(
        None, description="JSON path of the quality: good / uncertain / bad (or true / false)"
    )

    @field_validator("value_path", "timestamp_path", "quality_path")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return None if value is None else check_path(value)

    @field_validator("tag_from")
    @classmethod
    def _tag_from(cls, value: str) -> str:
        return value if value == "topic" else check_path(value)

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("list at least one JSON path, or leave `fields` out and use value_path")
        return None if value is None else [check_path(p) for p in value]


class SparkplugOptions(ConnectorConfig):
    group_ids: list[str] | None = Field(None, description="only these Sparkplug groups (all when unset)")
    edge_nodes: list[str] | None = Field(None, description="only these edge node ids (all when unset)")
    request_rebirth: bool = Field(
        True,
        description="on a sequence gap or data from an unborn node, publish NCMD `Node Control/Rebirth` "
        "(needs publish rights on spBv1.0/<group>/NCMD/#); false: read only",
    )


class MqttSourceConfig(ConnectorConfig):
    host: str = Field("127.0.0.1", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (1883, or 8883 with TLS)")
    client_id: str | None = Field(None, description="MQTT client id; a unique one is made when unset")
    username: str | None = None
    tls: TlsOptions | None = Field(None, description="connect with TLS")
    allow_insecure_password: bool = Field(
        False,
        description="send the password without TLS, in clear text (refused unless true)",
    )
    # after `tls` and `allow_insecure_password`: its check reads them
    password: str | None = Field(None, description='use {"secret": "NAME"}, never the password itself')
    keepalive: int = Field(60, ge=5, le=65535, description="seconds between keep-alive pings")
    clean_session: bool = Field(True, description="false: the broker keeps the subscription while away")
    qos: int = Field(1, ge=0, le=2, description="subscription QoS: 0, 1 or 2")
    topics: list[str] = Field(
        default_factory=list,
        description="subscription filters, e.g. `plant/+/telemetry`; Sparkplug B: `spBv1.0/#` when empty",
    )
    payload: Literal["json", "sparkplug_b"] = "json"
    json_mapping: JsonMapping = Field(default_factory=JsonMapping, alias="json")
    sparkplug: SparkplugOptions = Field(default_factory=SparkplugOptions)
    batch_interval_ms: int = Field(100, ge=10, le=60_000, description="emit a micro-batch this often")
    batch_max_messages: int = Field(1000, ge=1, description="or as soon as this many messages wait")
    max_pending_messages: int = Field(
        100_000, ge=1, description="messages held while the pipeline is busy; more are dropped and counted"
    )
    reconnect_min_delay: float = Field(1.0, gt=0, description="seconds before the first reconnect attempt")
    reconnect_max_delay: float = Field(60.0, gt=0, description="back-off ceiling between attempts")

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: list[str]) -> list[str]:
        return [check_filter(t) for t in value]

    @field_validator("password")
    @classmethod
    def _not_in_clear(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Without TLS the password crosses the network as it is: refused unless asked for (the
        rule OPC UA has for a security None channel)."""
        if "tls" not in info.data:  # `tls` itself is invalid: that error is the one to show
            return value
        if value is not None and info.data["tls"] is None and not info.data.get("allow_insecure_password"):
            raise ValueError(
                "a password without TLS would cross the network in clear text: add `tls` (port 8883), "
                "or set allow_insecure_password: true"
            )
        return value

    @model_validator(mode="after")
    def _needs_topics(self) -> MqttSourceConfig:
        if not self.topics:
            if self.payload != "sparkplug_b":
                raise ValueError("topics: list at least one subscription filter, e.g. `plant/+/telemetry`")
            self.topics = ["spBv1.0/#"]
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise ValueError("reconnect_max_delay must be at least reconnect_min_delay")
        return self


class SparkplugSourceConfig(MqttSourceConfig):
    """The `sparkplug_b` connector type: the MQTT source with Sparkplug B payloads."""

    payload: Literal["json", "sparkplug_b"] = "sparkplug_b"
