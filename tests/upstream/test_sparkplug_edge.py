"""The `sparkplug_b` destination (this box as a Sparkplug B edge node) against Mosquitto on
127.0.0.1:1883, seen by a raw MQTT spy: the Eclipse Tahu TCK's edge-node assertions that can run
here (topic form, QoS and retain, birth contents, seq and bdSeq rules, the Will), rebirth on NCMD
and on a new metric, and delivery faults through tests/faultproxy.py."""

from __future__ import annotations

import json
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
import pytest
from pydantic import ValidationError

from engine.outbox.target import DeliveryError
from protocols.mqtt import sparkplug as sp
from protocols.mqtt.edge_node import SparkplugEdgeNode, load_bd_seq, save_bd_seq
from protocols.mqtt.publish import SparkplugPublishConfig
from tests.conftest import require_service
from tests.faultproxy import FaultProxy
from tests.waiting import wait_for

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
        try:
            payload = sp.decode_payload(message.payload)
        except sp.SparkplugError:  # a test's garbage command: kept, undecoded
            payload = None
        seen = Seen(message.topic, message.qos, bool(message.retain), payload)
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


@pytest.fixture
def group():
    require_service("mosquitto")
    return f"spb-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def spy(group):
    s = Spy(group)
    yield s
    s.close()


def bd_seq(message: Seen) -> int:
    return message.metric("bdSeq").long_value


# ---- without a broker ------------------------------------------------------------------------------


def test_config_checks_ids_and_refuses_a_clear_password():
    ok = SparkplugPublishConfig(group_id="Site1", edge_node_id="Box1", device_id="Line 2")
    assert (ok.qos if hasattr(ok, "qos") else None, ok.max_metrics_per_message) == (None, 2000)
    for bad in ({"group_id": "a/b"}, {"edge_node_id": "x+"}, {"device_id": "#"}, {"group_id": ""}):
        with pytest.raises(ValidationError, match="without `\\+`, `/` or `#`"):
            SparkplugPublishConfig.model_validate({"group_id": "G", "edge_node_id": "E", **bad})
    with pytest.raises(ValidationError, match="clear text"):
        SparkplugPublishConfig(group_id="G", edge_node_id="E", username="u", password="p")
    assert (
        SparkplugPublishConfig(
            group_id="G", edge_node_id="E", username="u", password="p", allow_insecure_password=True
        ).password
        == "p"
    )


def test_bd_seq_file_is_written_atomically_and_a_bad_one_restarts_at_zero(tmp_path):
    path = tmp_path / "sparkplug" / "G~E.json"
    assert load_bd_seq(path) == (0, None)
    save_bd_seq(path, 255)
    assert load_bd_seq(path) == (255, None)
    assert not list(path.parent.glob("*.tmp"))
    path.write_text("{torn")
    value, problem = load_bd_seq(path)
    assert value == 0 and problem is not None and "unreadable" in problem
    path.write_text('{"next_bd_seq": 300}')
    value, problem = load_bd_seq(path)
    assert value == 0 and "not 0..255" in problem


def test_records_it_cannot_map_are_refused_before_connecting(tmp_path):
    node = edge_node(tmp_path, "G", port=1)  # nothing listens on port 1: it must not even try
    bad_time = pa.table({"tag": ["a"], "value": [1.0], "timestamp": ["yesterday"], "_key": ["x"]})
    bad_value = pa.table({"tag": ["a"], "value": [[1, 2]], "_key": ["x"]})
    only_key = pa.table({"_key": ["x"]})
    for table, reason in (
        (bad_time, "not a timestamp"),
        (bad_value, "is not double"),
        (only_key, "no column"),
    ):
        with pytest.raises(DeliveryError, match=reason) as err:
            node.deliver(table)
        assert err.value.retryable is False and node.link is None


def test_records_that_are_not_tags_become_one_metric_per_column(tmp_path):
    node = edge_node(tmp_path, "G", device_column="line")
    wide = pl.DataFrame(
        {"timestamp": [T0, T0 + timedelta(seconds=1)], "line": ["L1", None], "speed": [1, 2],
         "ok": [True, False], "mode": ["auto", "manual"], "_key": ["k1", "k2"]}
    ).to_arrow()  # fmt: skip
    tags = pl.from_arrow(node.wide_to_tags(wide))
    assert tags.columns == ["timestamp", "line", "tag", "value", "value_text", "_key"]
    assert tags.select("line", "tag", "value", "value_text", "_key").rows() == [
        ("L1", "speed", 1.0, None, "k1/speed"), ("L1", "ok", 1.0, None, "k1/ok"), ("L1", "mode", None, "auto", "k1/mode"),
        (None, "speed", 2.0, None, "k2/speed"), (None, "ok", 0.0, None, "k2/ok"), (None, "mode", None, "manual", "k2/mode"),
    ]  # fmt: skip


# ---- the TCK's edge-node assertions ----------------------------------------------------------------


@pytest.mark.services
def test_birth_data_and_death_follow_the_edge_node_rules(tmp_path, group, spy):
    node = edge_node(tmp_path, group, device_id="Pump1")
    table = tags_table(["Flow", "Level", "Mode"], rounds=2, text={"Mode": "auto"}, quality="uncertain")
    try:
        node.open()
        node.deliver(table)
        spy.wait(lambda m: m.kind == "DDATA")
    finally:
        node.close()
    spy.wait(lambda m: m.kind == "NDEATH")
    nbirth, dbirth, ddata, ndeath = (
        spy.wait(lambda m, k=k: m.kind == k)[0] for k in ("NBIRTH", "DBIRTH", "DDATA", "NDEATH")
    )
    assert spy.kinds() == ["NBIRTH", "DBIRTH", "DDATA", "NDEATH"]
    # topics: namespace/group_id/VERB/edge_node_id[/device_id]
    assert nbirth.topic == f"spBv1.0/{group}/NBIRTH/Box1"
    assert dbirth.topic == f"spBv1.0/{group}/DBIRTH/Box1/Pump1"
    assert ddata.topic == f"spBv1.0/{group}/DDATA/Box1/Pump1"
    assert ndeath.topic == f"spBv1.0/{group}/NDEATH/Box1"
    # births and data: QoS 0, not retained; payload timestamp; seq 0 at NBIRTH, then +1
    for m in (nbirth, dbirth, ddata):
        assert (m.qos, m.retain) == (0, False), m.kind
        assert m.payload.HasField("timestamp") and m.payload.timestamp > T0_MS
    assert [nbirth.seq, dbirth.seq, ddata.seq] == [0, 1, 2]
    # NBIRTH: bdSeq Int64 (0 on a first start), Node Control/Rebirth Boolean false without an alias
    assert (nbirth.metric("bdSeq").datatype, bd_seq(nbirth)) == (sp.INT64, 0)
    rebirth = nbirth.metric(sp.REBIRTH_METRIC)
    assert (rebirth.datatype, rebirth.boolean_value, rebirth.HasField("alias")) == (sp.BOOLEAN, False, False)
    # DBIRTH: name, alias, datatype and current value of every metric; aliases unique on the node
    born = {m.name: m for m in dbirth.payload.metrics}
    assert set(born) == {"Flow", "Level", "Mode"}
    assert all(m.HasField("alias") and m.HasField("datatype") for m in born.values())
    aliases = [m.alias for m in dbirth.payload.metrics] + [
        m.alias for m in nbirth.payload.metrics if m.HasField("alias")
    ]
    assert len(set(aliases)) == len(aliases)
    assert (born["Flow"].datatype, born["Mode"].datatype) == (sp.DOUBLE, sp.STRING)
    # a new metric is born with its first value, which DDATA leaves out: nothing twice, in time order
    assert (born["Flow"].double_value, born["Mode"].string_value) == (0.0, "auto-0")
    assert (born["Flow"].timestamp, born["Level"].timestamp) == (T0_MS, T0_MS)
    # DDATA: aliases only (no names, no datatypes), every record, chronological, quality property
    by_alias = {m.alias: name for name, m in born.items()}
    got = [
        (by_alias[m.alias], m.timestamp, m.double_value if m.HasField("double_value") else m.string_value)
        for m in ddata.payload.metrics
    ]
    assert not any(m.HasField("name") or m.HasField("datatype") for m in ddata.payload.metrics)
    assert got == [
        ("Flow", T0_MS + 1000, 10.0),
        ("Level", T0_MS + 1000, 11.0),
        ("Mode", T0_MS + 1000, "auto-1"),
    ]
    quality = ddata.payload.metrics[0].properties
    assert list(quality.keys) == ["Quality"] and quality.values[0].int_value == 64
    assert not any(m.is_historical for m in ddata.payload.metrics)
    # the clean stop's NDEATH: only bdSeq, the NBIRTH's, and no seq
    assert (
        [m.name for m in ndeath.payload.metrics] == ["bdSeq"] and bd_seq(ndeath) == 0 and ndeath.seq is None
    )
    assert load_bd_seq(node.state_file) == (1, None)


@pytest.mark.services
def test_seq_wraps_after_255_and_payloads_carry_many_metrics(tmp_path, group, spy):
    node = edge_node(tmp_path, group, max_metrics_per_message=2)
    try:
        node.open()
        node.deliver(tags_table(["a", "b"], rounds=301))  # births a, b; then 300 NDATA of 2 metrics
        node.config = node.config.model_copy(update={"max_metrics_per_message": 2000})
        node.deliver(tags_table(["a", "b"], rounds=2500, start=T0 + timedelta(hours=1)))
        spy.wait(lambda m: m.kind == "NDATA", count=300 + 3)
    finally:
        node.close()
    assert [m.kind for m in spy.messages[:2]] == ["NBIRTH", "NBIRTH"]  # new node metrics: a rebirth
    seqs = [m.seq for m in spy.messages[1:] if m.kind != "NDEATH"]
    assert seqs == [i % 256 for i in range(len(seqs))] and len(seqs) == 1 + 300 + 3
    big = [len(m.payload.metrics) for m in spy.messages if m.kind == "NDATA"][300:]
    assert big == [2000, 2000, 1000]


@pytest.mark.services
def test_will_and_bd_seq_across_reconnects_and_restarts(tmp_path, group, spy):
    """The broker publishes the Will (NDEATH, QoS 1, the NBIRTH's bdSeq) when the link breaks; the
    node reconnects with bdSeq + 1 and births its metrics again; a new process goes on from the
    saved bdSeq."""
    with FaultProxy("127.0.0.1", 1883) as proxy:
        node = edge_node(tmp_path, group, port=proxy.port, device_id="Pump1")
        try:
            node.open()
            node.deliver(tags_table(["Flow"], rounds=2))
            spy.wait(lambda m: m.kind == "DDATA")
            proxy.reset_all()  # no DISCONNECT: the broker sends the will
            will = spy.wait(lambda m: m.kind == "NDEATH")[0]
            assert (will.qos, will.retain, bd_seq(will), will.seq) == (1, False, 0, None)
            reborn = spy.wait(lambda m: m.kind == "NBIRTH", count=2)[1]
            assert (bd_seq(reborn), reborn.seq) == (1, 0)
            dbirth = spy.wait(lambda m: m.kind == "DBIRTH", count=2)[1]
            assert [(m.name, m.double_value) for m in dbirth.payload.metrics] == [("Flow", 10.0)]  # current
            wait_for(lambda: node.link.connected, 10, what="reconnected")
            node.deliver(tags_table(["Flow"], start=T0 + timedelta(minutes=1)))
            spy.wait(lambda m: m.kind == "DDATA", count=2)
        finally:
            node.close()
    assert bd_seq(spy.wait(lambda m: m.kind == "NDEATH", count=2)[1]) == 1
    restarted = edge_node(tmp_path, group)
    try:
        restarted.open()
        assert bd_seq(spy.wait(lambda m: m.kind == "NBIRTH", count=3)[2]) == 2
    finally:
        restarted.close()
    spy.wait(lambda m: m.kind == "NDEATH" and bd_seq(m) == 2)
    births = [bd_seq(m) for m in spy.messages if m.kind == "NBIRTH"]
    deaths = [bd_seq(m) for m in spy.messages if m.kind == "NDEATH"]
    assert births == [0, 1, 2]
    # every death pairs a birth, in order (through the proxy the broker may also send the will of
    # a cleanly closed link: a host ignores that repeated death, its bdSeq is no longer current)
    assert sorted(set(deaths)) == [0, 1, 2] and deaths == sorted(deaths)
    assert load_bd_seq(restarted.state_file) == (3, None)


@pytest.mark.services
def test_ncmd_rebirth_and_a_new_metric_give_a_full_birth_sequence(tmp_path, group, spy):
    node = edge_node(tmp_path, group, device_id="Pump1")
    try:
        node.open()
        node.deliver(tags_table(["Flow", "Level"], rounds=2))
        spy.wait(lambda m: m.kind == "DDATA")
        rebirth_command(group)
        spy.wait(lambda m: m.kind == "DBIRTH", count=2)
        wait_for(lambda: node.counters["rebirth_requests"] == 1, 10, what="rebirth counted")
        node.deliver(tags_table(["Flow", "Level", "Speed"], start=T0 + timedelta(minutes=1)))
        spy.wait(lambda m: m.kind == "DDATA", count=2)
    finally:
        node.close()
    spy.wait(lambda m: m.kind == "NDEATH")
    messages = [m for m in spy.messages if m.kind != "NCMD"]
    kinds = [m.kind for m in messages]
    assert kinds == ["NBIRTH", "DBIRTH", "DDATA", "NBIRTH", "DBIRTH", "NBIRTH", "DBIRTH", "DDATA", "NDEATH"]
    seqs = [m.seq for m in messages]
    assert seqs == [0, 1, 2, 0, 1, 0, 1, 2, None]
    births = [m for m in messages if m.kind == "DBIRTH"]
    assert [sorted(x.name for x in b.payload.metrics) for b in births] == [
        ["Flow", "Level"], ["Flow", "Level"], ["Flow", "Level", "Speed"],
    ]  # fmt: skip
    assert {bd_seq(m) for m in messages if m.kind in ("NBIRTH", "NDEATH")} == {0}  # one connection
    last = messages[-2]
    born = {m.alias for m in births[-1].payload.metrics}
    assert {m.alias for m in last.payload.metrics} <= born and len(
        last.payload.metrics
    ) == 2  # Speed: in DBIRTH


@pytest.mark.services
def test_historical_backlog_and_devices_from_a_column(tmp_path, group, spy):
    node = edge_node(tmp_path, group, device_column="source")
    try:
        node.open()
        node.deliver(tags_table(["t"], source="plc1"), historical=True)
        node.deliver(tags_table(["t"], rounds=2, source="plc2", start=T0 + timedelta(seconds=5)))
        node.deliver(tags_table(["n"], rounds=2))  # no source: a node metric (NDATA)
        spy.wait(lambda m: m.kind == "NDATA")
    finally:
        node.close()
    topics = [m.topic.split("/", 2)[2] for m in spy.messages if m.kind != "NBIRTH"]
    assert topics[:4] == ["DBIRTH/Box1/plc1", "DDATA/Box1/plc1", "DBIRTH/Box1/plc2", "DDATA/Box1/plc2"]
    ddata = [m for m in spy.messages if m.kind == "DDATA"]
    assert [[m.is_historical for m in d.payload.metrics] for d in ddata] == [[True], [False]]
    assert [m.timestamp for m in ddata[1].payload.metrics] == [T0_MS + 6000]  # the first is in DBIRTH


@pytest.mark.services
def test_unreachable_or_silent_broker_is_a_retryable_error(tmp_path, group, spy):
    with FaultProxy("127.0.0.1", 1883) as proxy:
        proxy.refuse()
        node = edge_node(tmp_path, group, port=proxy.port, connect_timeout=1, ack_timeout=1)
        try:
            with pytest.raises(DeliveryError, match="not connected") as err:
                node.open()
            assert err.value.retryable
            assert node.link is None  # a failed open leaves no client reconnecting
            proxy.pass_through()
            node.open()
            node.deliver(tags_table(["x"], rounds=2))
            proxy.black_hole()  # accepts and never answers: no acknowledgement
            with pytest.raises(DeliveryError) as err:
                node.deliver(tags_table(["x"], start=T0 + timedelta(seconds=2)))
            assert err.value.retryable
            proxy.pass_through()
            proxy.reset_all()

            def delivered() -> bool:
                try:
                    node.deliver(tags_table(["x"], start=T0 + timedelta(seconds=2)))
                except DeliveryError:
                    return False
                return True

            wait_for(delivered, 30, 0.2, what="delivery after the broker answers again")
        finally:
            node.close()
    values = [m.payload.metrics[0].timestamp for m in spy.messages if m.kind == "NDATA"]
    assert values[0] == T0_MS + 1000 and values[-1] == T0_MS + 2000
    assert max(bd_seq(m) for m in spy.messages if m.kind == "NBIRTH") >= 1


KILLED_NODE = """
import sys
from pathlib import Path
from tests.upstream.test_sparkplug_edge import edge_node, tags_table
node = edge_node(Path(sys.argv[1]), sys.argv[2], device_id="Pump1")
node.open()
node.deliver(tags_table(["Flow"], rounds=2))
print("delivered", flush=True)
sys.stdin.read()
"""


@pytest.mark.services
def test_sigkill_sends_the_will_and_the_next_start_takes_the_next_bd_seq(tmp_path, group, spy):
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_NODE, str(tmp_path), group],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "delivered"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    will = spy.wait(lambda m: m.kind == "NDEATH")[0]  # the broker saw the TCP connection drop
    assert (bd_seq(will), will.qos) == (0, 1)
    node = edge_node(tmp_path, group, device_id="Pump1")
    try:
        node.open()
        assert bd_seq(spy.wait(lambda m: m.kind == "NBIRTH", count=2)[1]) == 1
    finally:
        node.close()


@pytest.mark.services
def test_garbage_and_other_commands_are_counted_and_the_node_goes_on(tmp_path, group, spy):
    node = edge_node(tmp_path, group)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"host-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    try:
        node.open()
        spy.wait(lambda m: m.kind == "NBIRTH")  # as a host: commands follow the birth it saw
        ncmd = f"spBv1.0/{group}/NCMD/Box1"
        client.publish(ncmd, b"\xff\x00 not protobuf", qos=1).wait_for_publish(10)
        other = sp.encode_payload([sp.Metric("Node Control/Reboot", True, sp.BOOLEAN)])
        client.publish(ncmd, other, qos=1).wait_for_publish(10)
        wait_for(lambda: (node.counters["bad_commands"], node.counters["ignored_commands"]) == (1, 1), 10)
        rebirth_command(group)
        spy.wait(lambda m: m.kind == "NBIRTH", count=2)
        node.deliver(tags_table(["x"], rounds=2))
        spy.wait(lambda m: m.kind == "NDATA")
    finally:
        client.disconnect()
        client.loop_stop()
        node.close()
    assert node.counters["callback_errors"] == 0 and node.counters["rebirth_requests"] == 1


@pytest.mark.services
def test_births_wait_for_the_primary_host_and_its_death_takes_the_node_down(tmp_path, group, spy):
    """`primary_host_id`: no birth before the host's STATE says online (spec 3.0
    message-flow-edge-node-birth-publish-phid-wait*), and an offline STATE makes the node send its
    NDEATH and disconnect (-phid-offline); meanwhile `deliver` fails retryably, so the outbox keeps
    the data."""
    host_id = f"scada-{uuid.uuid4().hex[:8]}"
    state_topic = f"spBv1.0/STATE/{host_id}"
    host = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"host-{uuid.uuid4().hex[:8]}")
    host.connect("127.0.0.1", 1883)
    host.loop_start()

    def state(online: bool, ts: int) -> None:
        payload = json.dumps({"online": online, "timestamp": ts})
        host.publish(state_topic, payload, qos=1, retain=True).wait_for_publish(10)

    node = edge_node(tmp_path, group, primary_host_id=host_id, connect_timeout=1)
    try:
        state(False, T0_MS)
        node.open()  # connected, and waiting
        with pytest.raises(DeliveryError, match=r"not online \(its STATE is offline") as err:
            node.deliver(tags_table(["x"], rounds=2))
        assert err.value.retryable and "NBIRTH" not in spy.kinds()
        state(True, T0_MS + 1)
        spy.wait(lambda m: m.kind == "NBIRTH")
        node.deliver(tags_table(["x"], rounds=2))
        spy.wait(lambda m: m.kind == "NDATA")
        state(False, T0_MS - 5)  # older than the last STATE: stale, ignored
        wait_for(lambda: node.counters["stale_host_states"] == 1, 10)
        state(False, T0_MS + 2)
        death = spy.wait(lambda m: m.kind == "NDEATH")[0]
        assert bd_seq(death) == bd_seq(spy.wait(lambda m: m.kind == "NBIRTH")[-1])
        with pytest.raises(DeliveryError) as err:
            node.deliver(tags_table(["x"], rounds=2, start=T0 + timedelta(minutes=1)))
        assert err.value.retryable
    finally:
        node.close()
        host.publish(state_topic, b"", qos=1, retain=True).wait_for_publish(10)  # clear the retained STATE
        host.disconnect()
        host.loop_stop()
    # born once the host was online (then reborn with the new metric x), dead when it went offline
    assert spy.kinds() == ["NBIRTH", "NBIRTH", "NDATA", "NDEATH"]
