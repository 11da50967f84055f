"""Sparkplug B 3.0 host and edge-node rules through the real Mosquitto broker: stale NDEATHs,
the clean-stop NDEATH, sequence gaps and rebirth requests (NCMD)."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import polars as pl
import pytest

from protocols.mqtt import sparkplug as sp
from protocols.mqtt.simulator import SparkplugSimulator, simulator_config
from tests.conftest import require_service
from tests.protocols.mqtt.test_source import make_source, publish, publisher, start_and_subscribe

pytestmark = pytest.mark.services
T0 = 1767225600000  # 2026-01-01T00:00:00Z in ms


@pytest.fixture
def group():
    require_service("mosquitto")
    return f"host-{uuid.uuid4().hex[:10]}"


class Listener:
    """A plain MQTT client that keeps every message on a topic filter: (topic, payload)."""

    def __init__(self, topic: str):
        self.messages: list[tuple[str, bytes]] = []
        self.changed = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"listen-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", 1883)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert subscribed.wait(5), "no SUBACK from Mosquitto"

    def _on_message(self, _client, _userdata, message) -> None:
        with self.changed:
            self.messages.append((message.topic, message.payload))
            self.changed.notify_all()

    def wait(self, predicate, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not (found := [m for m in self.messages if predicate(*m)]):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; got {[t for t, _ in self.messages]}"
                self.changed.wait(left)
            return found

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def bd_seq(payload: bytes) -> int | None:
    return sp.bd_seq_of(sp.decode_payload(payload))


def test_a_stale_ndeath_is_ignored(group):
    ns = f"spBv1.0/{group}"
    source, got = make_source("sparkplug_b", {"topics": [f"{ns}/#"], "sparkplug": {"request_rebirth": False}})
    start_and_subscribe(source, got)
    pub = publisher()
    t = f"{group}/E"
    try:
        birth = [sp.Metric("bdSeq", 1, sp.INT64), sp.Metric("Speed", 7.5, sp.DOUBLE, alias=1)]
        publish(pub, f"{ns}/NBIRTH/E", sp.encode_payload(birth, timestamp=T0, seq=0))
        # The will of the node's previous connection (bdSeq 0) arrives after the new birth.
        publish(pub, f"{ns}/NDEATH/E", sp.encode_payload([sp.Metric("bdSeq", 0, sp.INT64)], timestamp=T0))
        publish(
            pub,
            f"{ns}/NDATA/E",
            sp.encode_payload([sp.Metric(None, 8.0, alias=1)], timestamp=T0 + 1000, seq=1),
        )
        got.wait(lambda c: c.frame.filter(pl.col("value") == 8.0).height == 1)
        publish(pub, f"{ns}/NDEATH/E", sp.encode_payload([sp.Metric("bdSeq", 1, sp.INT64)], timestamp=T0))
        got.wait(lambda c: c.frame.filter(pl.col("reason") == "comm_lost").height == 2)
    finally:
        pub.loop_stop()
        source.stop()
    rows = got.frame.select("tag", "value", "quality", "reason").rows()
    assert rows[:3] == [
        (f"{t}/bdSeq", 1.0, "good", None),
        (f"{t}/Speed", 7.5, "good", None),
        (f"{t}/Speed", 8.0, "good", None),  # by name: the births were not forgotten
    ]
    assert sorted(rows[3:]) == [
        (f"{t}/Speed", None, "bad", "comm_lost"),
        (f"{t}/bdSeq", None, "bad", "comm_lost"),
    ]
    assert source.counters["stale_deaths"] == 1 and source.counters["deaths"] == 1
    assert (
        f"{ns}/NDEATH/E",
        "stale NDEATH ignored: bdSeq 0, but the node's NBIRTH had 1",
    ) in source.last_errors


def test_the_clean_stop_ndeath_carries_the_birth_bdseq_and_no_seq(group):
    ns = f"spBv1.0/{group}"
    listener = Listener(f"{ns}/#")
    source, got = make_source("sparkplug_b", simulator_config(group))
    start_and_subscribe(source, got)
    sim = SparkplugSimulator(group=group, turbines=1, tags=2, interval_s=0.05)
    sim.start()
    try:
        # the first death gaps every metric born: wait until the source has the device's birth too
        got.wait(lambda c: c.frame.filter(pl.col("tag").str.contains("/Turbine01/")).height > 0)
        sim.kill()  # the broker sends the will (bdSeq 0); the node comes back with bdSeq 1
        births = listener.wait(lambda topic, p: topic.endswith("/NBIRTH/Gateway1") and bd_seq(p) == 1)
        listener.wait(lambda topic, _: "/DDATA/" in topic and sim.published > 20)  # seq well past 0
        assert bd_seq(births[0][1]) == 1
    finally:
        sim.stop()
    try:
        listener.wait(lambda topic, p: topic.endswith("/NDEATH/Gateway1") and bd_seq(p) == 1)
        deaths = listener.wait(lambda topic, _: topic.endswith("/NDEATH/Gateway1"))
        metrics = 3 + 2  # bdSeq, Node Control/Rebirth, MetMast/WindSpeed; 2 turbine tags
        got.wait(lambda c: c.frame.filter(pl.col("reason") == "comm_lost").height == 2 * metrics)
    finally:
        source.stop()
        listener.close()
    assert [bd_seq(p) for _, p in deaths] == [0, 1]  # the will of the killed link, then the clean stop
    clean = sp.decode_payload(deaths[-1][1])
    assert not clean.HasField("seq")
    assert clean.HasField("timestamp")
    # Our own source takes both deaths as real: each gives gaps for every metric born.
    assert source.counters["deaths"] == 2 and source.counters.get("stale_deaths", 0) == 0


def test_a_sequence_gap_is_flagged_and_the_node_is_asked_to_rebirth(group):
    ns = f"spBv1.0/{group}"
    commands = Listener(f"{ns}/NCMD/#")
    source, got = make_source("sparkplug_b", simulator_config(group))
    start_and_subscribe(source, got)
    sim = SparkplugSimulator(group=group, turbines=2, tags=2, interval_s=0.05)
    sim.start()
    prefix = f"{group}/Gateway1"
    try:
        got.wait(lambda c: c.frame.filter(pl.col("tag") == f"{prefix}/Turbine02/Power").height >= 3)
        sim.lose(1)  # one data message never reaches the broker
        metrics = 3 + 2 * 2  # bdSeq, Node Control/Rebirth, MetMast/WindSpeed; 2 tags of 2 turbines
        got.wait(lambda c: c.frame.filter(pl.col("reason") == "sequence_gap").height == metrics)
        got.wait(lambda c: source.counters["births"] >= 2 * (1 + sim.turbines))  # births again
        ncmd = commands.wait(lambda topic, _: topic == f"{ns}/NCMD/Gateway1")
        power = pl.col("tag") == f"{prefix}/Turbine02/Power"
        reborn = got.frame.filter(power).height
        got.wait(lambda c: c.frame.filter(power).height >= reborn + 3)  # data by name after the rebirth
    finally:
        sim.stop()
        source.stop()
        commands.close()
    request = sp.decode_payload(ncmd[0][1])
    assert [(m.name, m.datatype, m.boolean_value) for m in request.metrics] == [
        ("Node Control/Rebirth", sp.BOOLEAN, True)
    ]
    assert sim.rebirths >= 1 and source.counters["rebirth_requests"] >= 1
    assert source.counters["sequence_gaps"] == 1
    frame = got.frame
    gaps = frame.filter(pl.col("reason") == "sequence_gap")
    assert set(gaps["tag"]) == {
        f"{prefix}/bdSeq",
        f"{prefix}/Node Control/Rebirth",
        f"{prefix}/MetMast/WindSpeed",
        *(f"{prefix}/Turbine{i:02d}/{n}" for i in (1, 2) for n in ("WindSpeed", "Power")),
    }
    assert (gaps["quality"] == "bad").all()
    assert not frame.filter(pl.col("tag").str.contains("alias_")).height
    reason = next(r for item, r in source.last_errors if r.startswith("sequence_gap"))
    assert reason.startswith("sequence_gap: seq ") and ", expected " in reason
