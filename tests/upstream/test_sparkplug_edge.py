"""The `sparkplug_b` destination (this box as a Sparkplug B edge node) against Mosquitto on
127.0.0.1:1883, seen by a raw MQTT spy: the Eclipse Tahu TCK's edge-node assertions that can run
here (topic form, QoS and retain, birth contents, seq and bdSeq rules, the Will), rebirth on NCMD
and on a new metric, and delivery faults through tests/faultproxy.py."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import polars as pl
import pyarrow as pa

from protocols.mqtt import sparkplug as sp
from protocols.mqtt.edge_node import SparkplugEdgeNode
from protocols.mqtt.publish import SparkplugPublishConfig

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


@dataclass
class Seen:
    topic: str
    qos: int
    retain: bool
    payload: Any  # the decoded Sparkplug payload

    @property
    def kind(self) -> str:
        return self.topic.split("/")[2]

    def metric(self, name: str) -> Any:
        return next(m for m in self.payload.metrics if m.name == name)

    @property
    def seq(self) -> int | None:
        return self.payload.seq if self.payload.HasField("seq") else None


class Spy:
    """Subscribes (QoS 1) to `spBv1.0/<group>/#` and keeps every message, in broker order. Its QoS
    is the max a message can arrive with, so a message's own QoS shows (births 0, the will 1)."""

    def __init__(self, group: str, host: str = "127.0.0.1", port: int = 1883):
        self.messages: list[Seen] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"spy-{uuid.uuid4().hex[:8]}")
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe(f"spBv1.0/{group}/#", qos=1)
        self.client.loop_start()
        assert subscribed.wait(10), "spy: no SUBACK"

    def _on_message(self, _c, _u, message) -> None:
        seen = Seen(message.topic, message.qos, bool(message.retain), sp.decode_payload(message.payload))
        with self.cond:
            self.messages.append(seen)
            self.cond.notify_all()

    def wait(self, predicate, count: int = 1, timeout: float = 15.0) -> list[Seen]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(found := [m for m in self.messages if predicate(m)]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [m.kind for m in self.messages[-10:]]
                    raise AssertionError(f"spy: waited for {count}, found {len(found)}; last {kinds}")
                self.cond.wait(left)
            return found

    def kinds(self) -> list[str]:
        with self.cond:
            return [m.kind for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def tags_table(
    names: list[str],
    rounds: int = 1,
    *,
    start: datetime = T0,
    text: dict[str, str] | None = None,
    quality: str = "good",
    source: str | None = None,
) -> pa.Table:
    """Tag records: each name once per round (one second apart), value = round * 10 + index."""
    rows: dict[str, list] = {
        k: [] for k in ("timestamp", "tag", "value", "value_text", "quality", "source", "_key")
    }
    for r in range(rounds):
        at = start + timedelta(seconds=r)
        for i, name in enumerate(names):
            is_text = text is not None and name in text
            rows["timestamp"].append(at)
            rows["tag"].append(name)
            rows["value"].append(None if is_text else float(r * 10 + i))
            rows["value_text"].append(f"{text[name]}-{r}" if is_text else None)
            rows["quality"].append(quality)
            rows["source"].append(source)
            rows["_key"].append(f"{name}|{at.isoformat()}")
    frame = pl.DataFrame(
        rows,
        schema={
            "timestamp": pl.Datetime("us", "UTC"),
            "tag": pl.String,
            "value": pl.Float64,
            "value_text": pl.String,
            "quality": pl.String,
            "source": pl.String,
            "_key": pl.String,
        },
    )
    return frame.to_arrow()


def edge_node(data_dir: Path, group: str, port: int = 1883, **config: Any) -> SparkplugEdgeNode:
    cfg = SparkplugPublishConfig.model_validate(
        {
            "group_id": group,
            "edge_node_id": "Box1",
            "port": port,
            "connect_timeout": 5,
            "ack_timeout": 5,
            "reconnect_min_delay": 0.1,
            "reconnect_max_delay": 0.5,
            **config,
        }
    )
    return SparkplugEdgeNode(cfg, data_dir, "upstream")


def rebirth_command(group: str, edge: str = "Box1") -> None:
    """A host's NCMD `Node Control/Rebirth` = true, published with QoS 1 and acknowledged."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"host-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    try:
        topic, payload = sp.rebirth_request(group, edge)
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
