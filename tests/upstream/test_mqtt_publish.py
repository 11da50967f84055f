"""The `mqtt` destination (records as JSON, QoS 1) against Mosquitto on 127.0.0.1:1883: topics from
the template, every record with its `_key`, `record` and `batch` payloads, PUBACK before
`deliver` returns, and a broker that cannot be reached or answers no more (tests/faultproxy.py)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta

import paho.mqtt.client as mqtt
import pytest
from pydantic import ValidationError

from engine.outbox.target import DeliveryError
from protocols.mqtt.publish import MqttJsonTarget, MqttPublishConfig
from tests.conftest import require_service
from tests.faultproxy import FaultProxy
from tests.upstream.test_sparkplug_edge import T0, tags_table
from tests.waiting import wait_for


class JsonSpy:
    def __init__(self, topic: str):
        self.messages: list[tuple[str, int, object]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"jspy-{uuid.uuid4().hex[:8]}")
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", 1883)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c, _u, message) -> None:
        with self.cond:
            self.messages.append((message.topic, message.qos, json.loads(message.payload)))
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 15.0) -> list[tuple[str, int, object]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"json spy: {len(self.messages)} of {count} messages"
                self.cond.wait(left)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def prefix():
    require_service("mosquitto")
    return f"pub-{uuid.uuid4().hex[:10]}"


def target(topic: str, port: int = 1883, **config) -> MqttJsonTarget:
    cfg = MqttPublishConfig.model_validate(
        {"topic": topic, "port": port, "connect_timeout": 2, "ack_timeout": 2, "reconnect_min_delay": 0.1,
         "reconnect_max_delay": 0.5, **config}
    )  # fmt: skip
    return MqttJsonTarget(cfg, "upstream")


def test_topic_template_is_checked():
    for bad in ("a/+/b", "a/#", "a/{tag", ""):
        with pytest.raises(ValidationError, match="topic"):
            MqttPublishConfig(topic=bad)
    assert MqttPublishConfig(topic="plant/{source}/{tag}").qos == 1


def test_template_columns_must_exist():
    t = target("plant/{nope}")
    with pytest.raises(DeliveryError, match="no column nope") as err:
        t.deliver(tags_table(["a"]))
    assert err.value.retryable is False


@pytest.mark.services
def test_records_are_published_as_json_with_their_key(prefix):
    spy = JsonSpy(f"{prefix}/#")
    t = target(prefix + "/{source}/{tag}")
    table = tags_table(["temp", "a+b"], rounds=3, source="plc1")
    try:
        t.open()
        t.deliver(table)
        got = spy.wait(6)
    finally:
        t.close()
        spy.close()
    assert {topic for topic, _, _ in got} == {f"{prefix}/plc1/temp", f"{prefix}/plc1/a_b"}
    assert {qos for _, qos, _ in got} == {1}
    records = [r for _, _, r in got]
    assert sorted(r["_key"] for r in records) == sorted(table.column("_key").to_pylist())
    first = next(r for r in records if r["tag"] == "temp" and r["value"] == 0.0)
    assert first["timestamp"].startswith("2026-01-01T00:00:00") and first["quality"] == "good"


@pytest.mark.services
def test_batch_payloads_are_json_arrays_per_topic(prefix):
    spy = JsonSpy(f"{prefix}/#")
    t = target(prefix + "/{tag}", payload="batch", max_records_per_message=4)
    try:
        t.deliver(tags_table(["a", "b"], rounds=5))  # deliver opens by itself
        got = spy.wait(4)
    finally:
        t.close()
        spy.close()
    sizes = sorted((topic.rsplit("/", 1)[1], len(rows)) for topic, _, rows in got)
    assert sizes == [("a", 1), ("a", 4), ("b", 1), ("b", 4)]
    a_rows = [r for topic, _, rows in got if topic.endswith("/a") for r in rows]
    assert [r["value"] for r in a_rows] == [0.0, 10.0, 20.0, 30.0, 40.0]  # in order


@pytest.mark.services
def test_unreachable_and_silent_broker_are_retryable(prefix):
    spy = JsonSpy(f"{prefix}/#")
    with FaultProxy("127.0.0.1", 1883) as proxy:
        proxy.refuse()
        t = target(prefix + "/{tag}", port=proxy.port)
        try:
            with pytest.raises(DeliveryError, match="not connected") as err:
                t.open()
            assert err.value.retryable
            assert t.link is None  # a failed open leaves no client reconnecting
            proxy.pass_through()
            t.open()
            proxy.black_hole()
            with pytest.raises(DeliveryError, match=r"did not acknowledge|not connected") as err:
                t.deliver(tags_table(["x"]))
            assert err.value.retryable
            proxy.pass_through()
            proxy.reset_all()

            def delivered() -> bool:
                try:
                    t.deliver(tags_table(["x"], start=T0 + timedelta(seconds=1)))
                except DeliveryError:
                    return False
                return True

            wait_for(delivered, 30, 0.2, what="delivery once the broker answers")
        finally:
            t.close()
    got = spy.wait(1)
    spy.close()
    assert any(r["timestamp"].startswith("2026-01-01T00:00:01") for _, _, r in got)


@pytest.mark.services
def test_check_is_test_connection_for_both_mqtt_destinations(prefix, tmp_path):
    from engine.errors import ConnectorError
    from tests.upstream.test_sparkplug_edge import edge_node

    target(prefix + "/{tag}").check()
    edge_node(tmp_path, prefix).check()
    with FaultProxy("127.0.0.1", 1883) as proxy:
        proxy.refuse()
        for t in (target(prefix + "/{tag}", port=proxy.port), edge_node(tmp_path, prefix, port=proxy.port)):
            with pytest.raises(ConnectorError, match=f"mqtt://127.0.0.1:{proxy.port}"):
                t.check()
