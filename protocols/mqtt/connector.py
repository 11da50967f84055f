"""Connector types `mqtt` (JSON payloads, or Sparkplug B with `payload: sparkplug_b`) and
`sparkplug_b` (the same source, Sparkplug B by default). Importing this module is cheap: paho,
protobuf and the decoders load when a source starts.

As destinations: `mqtt` publishes records as JSON (protocols/mqtt/publish.py), `sparkplug_b` makes
this box a Sparkplug B edge node (protocols/mqtt/edge_node.py); both deliver through the outbox
(`make_target` is the upstream, `make_sink` the outbox or direct sink)."""

from __future__ import annotations

from typing import Any

from engine.connectors.base import ConnectorConfig, StreamingSource
from engine.connectors.registry import register
from engine.context import RunContext
from engine.outbox.connector import RemoteConnector
from protocols.mqtt.config import MqttSourceConfig, SparkplugSourceConfig
from protocols.mqtt.publish import MqttPublishConfig, SparkplugPublishConfig


@register
class MqttConnector(RemoteConnector):
    connector_type = "mqtt"
    title = "MQTT (JSON or Sparkplug B payloads)"
    SourceConfig = MqttSourceConfig
    SinkConfig = MqttPublishConfig

    @classmethod
    def make_source(cls, config: ConnectorConfig, ctx: RunContext, name: str) -> StreamingSource:
        from protocols.mqtt.source import MqttSource

        assert isinstance(config, MqttSourceConfig)
        return MqttSource(config, ctx, name)

    @classmethod
    def make_target(cls, config: ConnectorConfig, ctx: RunContext, name: str) -> Any:
        """The upstream (engine/outbox/target.py): the JSON publisher, or the Sparkplug edge node."""
        if isinstance(config, SparkplugPublishConfig):
            from protocols.mqtt.edge_node import SparkplugEdgeNode

            return SparkplugEdgeNode(config, ctx.data_dir, name, ctx.log)
        from protocols.mqtt.publish import MqttJsonTarget

        assert isinstance(config, MqttPublishConfig)
        return MqttJsonTarget(config, name)


@register
class SparkplugConnector(MqttConnector):
    connector_type = "sparkplug_b"
    title = "Sparkplug B (MQTT)"
    SourceConfig = SparkplugSourceConfig
    SinkConfig = SparkplugPublishConfig
