"""The MQTT source against the real Mosquitto broker on 127.0.0.1:1883."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import polars as pl
import pytest

from engine.connectors import registry
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.tags import LEAN_ROWS, TAG_SCHEMA, as_frame
from protocols.mqtt import sparkplug as sp
from tests.children import last_line
from tests.conftest import require_service

pytestmark = pytest.mark.services
T0 = 1767225600000  # 2026-01-01T00:00:00Z in ms


@pytest.fixture
def prefix():
    require_service("mosquitto")
    return f"test-{uuid.uuid4().hex[:10]}"


class Collector:
    def __init__(self):
        self.frames: list[pl.DataFrame] = []  # as frames (a TagBatch the source emits too)
        self.kinds: list[str] = []  # what each batch was: "TagBatch" or "DataFrame"
        self.states: list[str] = []
        self.details: list[str | None] = []
        self.changed = threading.Condition()

    def emit(self, batch) -> None:
        frame = as_frame(batch)
        assert frame.schema == TAG_SCHEMA
        with self.changed:
            self.kinds.append(type(batch).__name__)
            self.frames.append(frame)
            self.changed.notify_all()

    def on_state(self, _name, state, detail) -> None:
        with self.changed:
            self.states.append(state)
            self.details.append(detail)
            self.changed.notify_all()

    @property
    def frame(self) -> pl.DataFrame:
        with self.changed:
            return pl.concat(self.frames) if self.frames else pl.DataFrame(schema=TAG_SCHEMA)

    def wait(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; states {self.states}, rows {sum(f.height for f in self.frames)}"
                self.changed.wait(left)

    def rows(self, n: int) -> None:
        self.wait(lambda c: sum(f.height for f in c.frames) >= n)


def make_source(connector: str, config: dict, ctx: RunContext | None = None):
    cls = registry.get(connector)
    source = cls.make_source(cls.SourceConfig.model_validate(config), ctx or RunContext(), "mqtt-test")
    collector = Collector()
    source.on_state = collector.on_state
    return source, collector


def start_and_subscribe(source, collector: Collector) -> None:
    source.start(collector.emit)
    collector.wait(lambda c: "subscribed" in c.states)


def publisher() -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    return client


def publish(client: mqtt.Client, topic: str, payload: bytes | str, qos: int = 1) -> None:
    client.publish(topic, payload, qos=qos).wait_for_publish(5)


def test_json_messages_arrive_as_tag_batches(prefix):
    source, got = make_source(
        "mqtt",
        {"topics": [f"{prefix}/+/telemetry"], "json": {"value_path": "$.v", "timestamp_path": "$.ts"}},
    )
    start_and_subscribe(source, got)
    pub = publisher()
    try:
        for i in range(20):
            publish(pub, f"{prefix}/T{i % 2}/telemetry", f'{{"v": {i}, "ts": {T0 // 1000 + i}}}')
        publish(pub, f"{prefix}/T0/other", '{"v": 99}')  # not subscribed
        publish(pub, f"{prefix}/T1/telemetry", "{broken")
        got.rows(21)
    finally:
        pub.loop_stop()
        source.stop()
    frame = got.frame
    good = frame.filter(pl.col("quality") == "good").sort("timestamp")
    assert good["value"].to_list() == [float(i) for i in range(20)]
    assert good["tag"].to_list() == [f"{prefix}/T{i % 2}/telemetry" for i in range(20)]
    assert good["timestamp"].dt.epoch("s").to_list() == [T0 // 1000 + i for i in range(20)]
    bad = frame.filter(pl.col("quality") == "bad")
    assert bad["reason"].to_list()[0].startswith("bad_payload: not JSON")
    assert source.counters["messages"] == 21
    assert source.counters["bad_payloads"] == 1
    assert source.last_errors[0][0] == f"{prefix}/T1/telemetry"
    assert got.states[-1] == "stopped"


def test_a_password_asked_for_in_clear_reaches_the_broker_and_duplicate_keys_are_bad_payloads(prefix):
    # The local broker lets anyone in: the credentials are sent (allow_insecure_password) and accepted.
    config = {"topics": [f"{prefix}/#"], "username": "edge", "password": "pw", "batch_interval_ms": 20}
    with pytest.raises(ValueError, match="allow_insecure_password"):
        make_source("mqtt", config)
    source, got = make_source("mqtt", {**config, "allow_insecure_password": True})
    start_and_subscribe(source, got)
    pub = publisher()
    try:
        publish(pub, f"{prefix}/a", '{"value": 1, "value": 2}')
        publish(pub, f"{prefix}/b", '{"value": 3}')
        got.rows(2)
    finally:
        pub.loop_stop()
        source.stop()
    by_topic = {row["tag"]: row for row in got.frame.to_dicts()}
    assert by_topic[f"{prefix}/a"]["quality"] == "bad"
    assert by_topic[f"{prefix}/a"]["reason"].startswith('bad_payload: duplicate key "value"')
    assert by_topic[f"{prefix}/b"]["value"] == 3.0 and by_topic[f"{prefix}/b"]["quality"] == "good"
    assert source.counters["bad_payloads"] == 1


def test_sparkplug_birth_data_death(prefix):
    group = prefix
    source, got = make_source("sparkplug_b", {"topics": [f"spBv1.0/{group}/#"]})
    start_and_subscribe(source, got)
    pub = publisher()
    ns = f"spBv1.0/{group}"
    birth = [sp.Metric("bdSeq", 0, sp.INT64), sp.Metric("Wind/Speed", 7.5, sp.FLOAT, alias=1)]
    try:
        publish(pub, f"{ns}/NBIRTH/Mast1", sp.encode_payload(birth, timestamp=T0, seq=0))
        publish(
            pub,
            f"{ns}/DBIRTH/Mast1/Vane",
            sp.encode_payload([sp.Metric("Dir", 270.0, alias=2)], timestamp=T0),
        )
        publish(
            pub,
            f"{ns}/NDATA/Mast1",
            sp.encode_payload([sp.Metric(None, 8.0, sp.FLOAT, alias=1)], timestamp=T0 + 1000),
        )
        publish(
            pub,
            f"{ns}/DDATA/Mast1/Vane",
            sp.encode_payload([sp.Metric(None, 275.0, alias=2)], timestamp=T0 + 1000),
        )
        got.rows(5)
        publish(pub, f"{ns}/NDEATH/Mast1", sp.encode_payload([sp.Metric("bdSeq", 0, sp.INT64)]))
        got.rows(8)
    finally:
        pub.loop_stop()
        source.stop()
    rows = got.frame.select("tag", "value", "quality", "reason").rows()
    t = f"{group}/Mast1"
    assert rows[:5] == [
        (f"{t}/bdSeq", 0.0, "good", None),
        (f"{t}/Wind/Speed", 7.5, "good", None),
        (f"{t}/Vane/Dir", 270.0, "good", None),
        (f"{t}/Wind/Speed", 8.0, "good", None),
        (f"{t}/Vane/Dir", 275.0, "good", None),
    ]
    assert sorted(rows[5:]) == [
        (f"{t}/Vane/Dir", None, "bad", "comm_lost"),
        (f"{t}/Wind/Speed", None, "bad", "comm_lost"),
        (f"{t}/bdSeq", None, "bad", "comm_lost"),
    ]
    assert source.counters["births"] == 2 and source.counters["deaths"] == 1


def test_reconnects_after_the_connection_is_dropped(prefix):
    client_id = f"agg-{prefix}"
    source, got = make_source(
        "mqtt",
        {
            "client_id": client_id,
            "topics": [f"{prefix}/#"],
            "reconnect_min_delay": 0.2,
            "reconnect_max_delay": 1,
        },
    )
    start_and_subscribe(source, got)
    pub = publisher()
    try:
        publish(pub, f"{prefix}/a", '{"value": 1}')
        got.rows(1)
        # A second client with the same id makes the broker drop ours (session takeover).
        intruder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        intruder.connect("127.0.0.1", 1883)
        intruder.loop_start()
        got.wait(lambda c: "lost" in c.states)
        intruder.disconnect()
        intruder.loop_stop()
        got.wait(lambda c: c.states.count("subscribed") >= 2)
        publish(pub, f"{prefix}/a", '{"value": 2}')
        got.wait(lambda c: c.frame.filter(pl.col("value") == 2.0).height == 1)
    finally:
        pub.loop_stop()
        source.stop()
    rows = got.frame.select("tag", "value", "quality", "reason").rows()
    assert rows[0] == (f"{prefix}/a", 1.0, "good", None)
    assert (f"{prefix}/a", None, "bad", "comm_lost") in rows[1:-1]
    assert rows[-1] == (f"{prefix}/a", 2.0, "good", None)
    assert source.counters["reconnects"] >= 1
    assert got.states[:3] == ["connecting", "connected", "subscribed"]
    assert "reconnecting" in got.states


def test_check_names_the_broker(prefix):
    cls = registry.get("mqtt")
    ok = cls.make_source(cls.SourceConfig(topics=["x/#"]), RunContext(), "m")
    ok.check()
    with socket_closed_port() as port:
        bad = cls.make_source(cls.SourceConfig(topics=["x/#"], port=port), RunContext(), "m")
        with pytest.raises(ConnectorError) as info:
            bad.check()
        assert str(info.value) == f"mqtt://127.0.0.1:{port}: cannot connect: connection refused"


def socket_closed_port():
    import contextlib
    import socket

    @contextlib.contextmanager
    def closed():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        yield port

    return closed()


def test_sample_gives_a_short_live_preview(prefix):
    source, _ = make_source("mqtt", {"topics": [f"{prefix}/#"], "batch_interval_ms": 20})
    pub = publisher()
    stop = threading.Event()

    def keep_publishing():
        while not stop.is_set():
            pub.publish(f"{prefix}/x", '{"value": 3}', qos=0)
            time.sleep(0.02)

    thread = threading.Thread(target=keep_publishing)
    thread.start()
    try:
        frame = source.sample(seconds=5, limit=3)
    finally:
        stop.set()
        thread.join()
        pub.loop_stop()
    assert frame.height == 3
    assert frame["value"].to_list() == [3.0, 3.0, 3.0]
    assert source.state == "stopped"


def test_a_busy_pipeline_drops_beyond_the_bound_and_counts_it(prefix):
    source, got = make_source(
        "mqtt", {"topics": [f"{prefix}/#"], "max_pending_messages": 5, "batch_max_messages": 1, "qos": 0}
    )
    release = threading.Event()
    first = threading.Event()

    def slow_emit(frame):
        first.set()
        release.wait(10)
        got.emit(frame)

    source.on_state = got.on_state
    source.start(slow_emit)
    got.wait(lambda c: "subscribed" in c.states)
    pub = publisher()
    try:
        publish(pub, f"{prefix}/x", '{"value": 0}')
        assert first.wait(5)  # the batcher is now stuck in emit
        for i in range(1, 31):
            publish(pub, f"{prefix}/x", f'{{"value": {i}}}')
        deadline = time.monotonic() + 5
        while source.counters["messages"] < 31 and time.monotonic() < deadline:
            time.sleep(0.02)
        release.set()
        got.wait(lambda c: sum(f.height for f in c.frames) + source.counters["dropped"] >= 31)
    finally:
        pub.loop_stop()
        source.stop()
    assert source.counters["messages"] == 31
    assert source.counters["dropped"] == 31 - got.frame.height > 0
    assert got.frame.height >= 6  # the first message and the bounded queue's five


def test_unreachable_broker_keeps_retrying(prefix):
    with socket_closed_port() as port:
        source, got = make_source(
            "mqtt", {"topics": ["x/#"], "port": port, "reconnect_min_delay": 0.1, "reconnect_max_delay": 0.2}
        )
        source.start(got.emit)
        try:
            got.wait(lambda c: "reconnecting" in c.states)
            deadline = time.monotonic() + 5
            while source.counters["connect_errors"] < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            source.stop()
    assert source.counters["connect_errors"] >= 2
    assert got.states[0] == "connecting" and got.states[-1] == "stopped"


def test_a_refused_broker_is_one_line_with_the_endpoint_and_reason_within_5_s(prefix):
    """Before, the line said only "connection failed, retrying with back-off": no reason."""
    with socket_closed_port() as port:
        source, got = make_source(
            "mqtt", {"topics": ["x/#"], "port": port, "reconnect_min_delay": 0.1, "reconnect_max_delay": 2}
        )
        began = time.monotonic()
        source.start(got.emit)
        expected = f"mqtt://127.0.0.1:{port}: connection refused; retrying every 0.1 s, backing off to 2 s"
        try:
            got.wait(lambda c: expected in c.details, timeout=5)
            assert time.monotonic() - began < 5
            got.wait(lambda c: source.counters["connect_errors"] >= 3)  # later attempts: the same line
        finally:
            source.stop()
    down = [d for s, d in zip(got.states, got.details, strict=True) if s in ("lost", "reconnecting")]
    assert set(down) == {expected}


def test_a_few_sparkplug_values_are_a_tag_batch_and_many_a_frame_with_the_same_values(prefix):
    """Up to LEAN_ROWS records of a batch reach the stream as a `TagBatch` (plain columns, no
    Polars), more as a frame; the records are the same either way (a birth of 300 metrics, then
    a data message of three, then the node's death: a gap record for every metric)."""
    group = prefix
    source, got = make_source("sparkplug_b", {"topics": [f"spBv1.0/{group}/#"], "batch_interval_ms": 20})
    start_and_subscribe(source, got)
    pub = publisher()
    ns, t = f"spBv1.0/{group}", f"{group}/Mast1"
    n = LEAN_ROWS + 44
    birth = [sp.Metric("bdSeq", 0, sp.INT64)] + [
        sp.Metric(f"m{i}", i / 2, sp.DOUBLE, alias=i + 1) for i in range(n)
    ]
    try:
        publish(pub, f"{ns}/NBIRTH/Mast1", sp.encode_payload(birth, timestamp=T0, seq=0))
        got.rows(n + 1)
        data = [sp.Metric(None, 1000.0 + i, sp.DOUBLE, alias=i + 1) for i in range(3)]
        publish(pub, f"{ns}/NDATA/Mast1", sp.encode_payload(data, timestamp=T0 + 1000, seq=1))
        got.rows(n + 4)
        publish(pub, f"{ns}/NDEATH/Mast1", sp.encode_payload([sp.Metric("bdSeq", 0, sp.INT64)]))
        got.rows(2 * n + 5)
    finally:
        pub.loop_stop()
        source.stop()
    assert got.kinds == ["DataFrame", "TagBatch", "DataFrame"]
    born, changed, died = got.frames
    assert born.select("tag", "value", "quality").rows() == [(f"{t}/bdSeq", 0.0, "good")] + [
        (f"{t}/m{i}", i / 2, "good") for i in range(n)
    ]
    assert changed.select("tag", "value", "quality", "reason").rows() == [
        (f"{t}/m{i}", 1000.0 + i, "good", None) for i in range(3)
    ]
    assert changed["timestamp"].dt.epoch("ms").to_list() == [T0 + 1000] * 3
    assert changed["source"].to_list() == ["mqtt-test"] * 3 and changed["received_at"].is_not_null().all()
    assert died.height == n + 1 and (died["reason"] == "comm_lost").all()


SMALL_BATCHES_ONLY = """
import sys, time
import paho.mqtt.client as mqtt
import protocols.mqtt.connector  # registers the types
from engine.connectors import registry
from engine.context import RunContext
from protocols.mqtt import sparkplug as sp

ns = "spBv1.0/" + sys.argv[1]
cls = registry.get("sparkplug_b")
source, got = cls.make_source(cls.SourceConfig.model_validate({"topics": [ns + "/#"]}), RunContext(), "m"), []
states = []
source.on_state = lambda _name, state, _detail: states.append(state)
source.start(got.append)
deadline = time.monotonic() + 20
while "subscribed" not in states and time.monotonic() < deadline:
    time.sleep(0.02)
pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
pub.connect("127.0.0.1", 1883)
pub.loop_start()
birth = [sp.Metric("bdSeq", 0, sp.INT64), sp.Metric("Speed", 7.5, sp.DOUBLE, alias=1)]
pub.publish(ns + "/NBIRTH/E", sp.encode_payload(birth, seq=0), qos=1).wait_for_publish(5)
pub.publish(ns + "/NDEATH/E", sp.encode_payload([sp.Metric("bdSeq", 0, sp.INT64)]), qos=1).wait_for_publish(5)
while sum(b.height for b in got) < 4 and time.monotonic() < deadline:
    time.sleep(0.02)
pub.loop_stop()
source.stop()
print(sorted({type(b).__name__ for b in got}), sum(b.height for b in got), "polars" in sys.modules)
"""


def test_a_source_that_only_hands_over_a_few_values_never_imports_polars(prefix):
    """Issue 12: Sparkplug births, data and deaths of a small node travel as TagBatches; in a
    process of its own the source, paho and the Sparkplug decoder never import Polars."""
    assert last_line(SMALL_BATCHES_ONLY, prefix) == "['TagBatch'] 4 False"  # 2 values, 2 gap records
