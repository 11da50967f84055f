"""Connector types `mqtt` (JSON payloads, or Sparkplug B with `payload: sparkplug_b`) and
`sparkplug_b` (the same source, Sparkplug B by default). Importing this module is cheap: paho,
protobuf and the decoders load when a source starts."""

from __future__ import annotations

from engine.connectors.base import Connector, ConnectorConfig, StreamingSource
from engine.connectors.registry import register
from engine.context import RunContext
from protocols.mqtt.config import MqttSourceConfig, SparkplugSourceConfig


@register
class MqttConnector(Connector):
    connector_type = "mqtt"
    title = "MQTT (JSON or Sparkplug B payloads)"
    SourceConfig = MqttSourceConfig

    @classmethod
    def make_source(cls, config: ConnectorConfig, ctx: RunContext, name: str) -> StreamingSource:
        from protocols.mqtt.source import MqttSource

        assert isinstance(config, MqttSourceConfig)
        return MqttSource(config, ctx, name)


@register
class SparkplugConnector(MqttConnector):
    connector_type = "sparkplug_b"
    title = "Sparkplug B (MQTT)"
    SourceConfig = SparkplugSourceConfig
