"""Garbage into each MQTT path (Sparkplug B and JSON) through the real Mosquitto broker, and the
good messages after it still stored in a real historian: no single bad message or metric stops the
source, and every bad one is counted and kept with its reason."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import polars as pl
import pytest

from engine.context import RunContext
from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian
from engine.tags import as_frame
from protocols.mqtt import sparkplug as sp
from tests.conftest import require_service
from tests.protocols.mqtt.test_source import Collector, make_source, publish, publisher, start_and_subscribe

pytestmark = pytest.mark.services
T0 = 1767225600000  # 2026-01-01T00:00:00Z in ms
AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def prefix():
    require_service("mosquitto")
    return f"garbage-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store(tmp_path):
    historian = Historian(tmp_path / "historian.duckdb")
    yield TagHistorian(historian)
    historian.close()


def storing(got: Collector, store: TagHistorian):
    """The source's emit: every batch goes into the historian, then to the collector."""

    def emit(frame: pl.DataFrame) -> None:
        store.append(frame)
        got.emit(frame)

    return emit


def start(source, got: Collector, store: TagHistorian) -> None:
    source.start(storing(got, store))
    got.wait(lambda c: "subscribed" in c.states)


class RunLog(list):
    """The run's log (RunContext.log: the run record in a real run): (level, message, node)."""

    def __call__(self, level: str, message: str, node: str | None = None) -> None:
        self.append((level, message, node))

    def warnings(self) -> list[str]:
        return [f"{node}: {message}" for level, message, node in self if level == "warning"]


def test_sparkplug_garbage_is_counted_and_later_messages_are_stored(prefix, store):
    group = prefix
    ns = f"spBv1.0/{group}"
    run_log = RunLog()
    config = {"topics": [f"{ns}/#"], "sparkplug": {"request_rebirth": False}}
    source, got = make_source("sparkplug_b", config, RunContext(log=run_log))
    start(source, got, store)
    pub = publisher()
    data = f"{ns}/NDATA/E"
    tag = f"{group}/E"
    birth = [
        sp.Metric("bdSeq", 1, sp.INT64),
        sp.Metric("a", 0.5, sp.DOUBLE, alias=1),
        sp.Metric("when", AT, sp.DATETIME, alias=2),
        sp.Metric("n", 7, sp.INT32, alias=3),
    ]

    def ndata(seq, metrics, timestamp=T0 + 1000):
        return sp.encode_payload(metrics, timestamp=timestamp, seq=seq)

    wrong_type = sp.payload_class()()  # an Int32 alias carrying a string
    wrong_type.timestamp, wrong_type.seq = T0 + 5000, 5
    wrong_type.metrics.add(alias=3, string_value="seven")
    try:
        publish(pub, f"{ns}/NBIRTH/E", sp.encode_payload(birth, timestamp=T0, seq=0))
        publish(pub, f"{ns}/NDATA/Bogus", b"\xff\xff\xff")  # not protobuf
        publish(pub, f"{ns}/NDATA/E/too/deep", b"")  # not a Sparkplug topic
        # Microseconds where Sparkplug says milliseconds: in a metric, and in the payload.
        publish(pub, data, ndata(1, [sp.Metric(None, 1.0, alias=1, timestamp=T0 * 1000)]))
        publish(pub, data, ndata(2, [sp.Metric(None, 2.0, alias=1)], timestamp=T0 * 1000))
        # A DateTime value past year 9999, next to a good metric in the same message.
        publish(
            pub, data, ndata(3, [sp.Metric(None, 2**62, sp.DATETIME, alias=2), sp.Metric(None, 3.0, alias=1)])
        )
        # A huge (what -1 becomes on the uint64 wire) and a 1970 metric timestamp.
        publish(pub, data, ndata(4, [sp.Metric(None, 4.0, alias=1, timestamp=2**64 - 1)]))
        publish(pub, data, wrong_type.SerializeToString())
        publish(pub, data, ndata(6, [sp.Metric(None, 6.0, alias=99)]))  # never born
        publish(pub, data, ndata(7, [sp.Metric(None, 7.0, alias=1)], timestamp=None))  # no timestamp
        publish(pub, data, ndata(8, [sp.Metric(None, 8.0, alias=1)], timestamp=0))  # 0: none either
        publish(pub, data, ndata(9, [sp.Metric(None, 9.0, alias=1)], timestamp=T0 + 9000))  # all good
        got.wait(lambda c: c.frame.filter(pl.col("value") == 9.0).height == 1)
    finally:
        pub.loop_stop()
        source.stop()

    stored = store.raw("*")
    rows = {
        (r["tag"], r["value"], r["value_text"]): r
        for r in stored.select("tag", "value", "value_text", "timestamp", "quality", "reason").to_dicts()
    }
    good_after = rows[(f"{tag}/a", 9.0, None)]
    assert (good_after["timestamp"], good_after["quality"], good_after["reason"]) == (
        datetime(2026, 1, 1, 0, 0, 9, tzinfo=UTC),
        "good",
        None,
    )
    for value in (1.0, 2.0, 4.0):  # implausible timestamps: the value kept, uncertain, no timestamp
        row = rows[(f"{tag}/a", value, None)]
        assert (row["timestamp"], row["quality"]) == (None, "uncertain")
        assert row["reason"].startswith("implausible_timestamp: ")
    assert "metric a timestamp 1767225600000000 ms" in rows[(f"{tag}/a", 1.0, None)]["reason"]
    assert "payload timestamp 1767225600000000 ms" in rows[(f"{tag}/a", 2.0, None)]["reason"]
    for value in (7.0, 8.0):  # no timestamp: null, never 1970, and good
        row = rows[(f"{tag}/a", value, None)]
        assert (row["timestamp"], row["quality"], row["reason"]) == (None, "good", None)
    assert rows[(f"{tag}/a", 3.0, None)]["quality"] == "good"
    bad_when = rows[(f"{tag}/when", None, None)]
    assert bad_when["quality"] == "bad"
    assert bad_when["reason"].startswith("bad_payload: metric when: ")
    assert "past year 9999" in bad_when["reason"]
    assert rows[(f"{tag}/n", None, "seven")]["quality"] == "good"  # kept as sent: text
    assert rows[(f"{tag}/alias_99", 6.0, None)]["reason"] == "unknown_alias"
    assert rows[(f"{ns}/NDATA/Bogus", None, None)]["reason"].startswith(
        "bad_payload: not a Sparkplug B payload"
    )
    assert rows[(f"{ns}/NDATA/E/too/deep", None, None)]["reason"].startswith("bad_payload: ")

    c = source.counters
    assert (c["bad_payloads"], c["implausible_timestamps"], c["bad_metrics"], c["unknown_alias"]) == (
        2,
        3,
        1,
        1,
    )
    assert c.get("sequence_gaps", 0) == 0  # the bad messages came from elsewhere: E's seq is whole
    items = [item for item, _ in source.last_errors]
    assert f"{ns}/NDATA/E metric when" in items and f"{ns}/NDATA/E metric a" in items
    assert f"{ns}/NDATA/Bogus" in items
    logged = run_log.warnings()  # with the item; one per kind of problem every 10 s
    assert f"mqtt-test: {ns}/NDATA/E metric a: implausible_timestamp: metric a timestamp" in "\n".join(logged)
    assert [m.split(": ", 3)[2].split(":")[0] for m in logged] == ["bad_payload", "implausible_timestamp"]
    assert got.states[-2:] == ["subscribed", "stopped"]  # never lost, never failed


def test_json_garbage_is_counted_and_later_messages_are_stored(prefix, store):
    run_log = RunLog()
    source, got = make_source(
        "mqtt",
        {"topics": [f"{prefix}/#"], "json": {"timestamp_path": "$.ts", "epoch_unit": "s"}},
        RunContext(log=run_log),
    )
    start(source, got, store)
    pub = publisher()
    s = T0 // 1000
    messages = [
        ("ms", f'{{"value": 1, "ts": {T0}}}'),  # milliseconds where seconds are configured
        ("ns", f'{{"value": 2, "ts": {T0 * 1_000_000}}}'),  # nanoseconds: overflows microseconds
        ("negative", '{"value": 3, "ts": -5}'),
        ("huge", '{"value": 4, "ts": 1e400}'),  # json.loads makes it inf
        ("iso-far", '{"value": 5, "ts": "9999-12-31T23:59:59Z"}'),
        ("iso-old", '{"value": 6, "ts": "0001-01-01T00:00:00"}'),
        ("zero", '{"value": 7, "ts": 0}'),  # 0: no timestamp
        ("missing", '{"value": 8}'),
        ("not-json", "{broken"),
        ("wrong-type", '{"value": {"x": 1}, "ts": 1767225600}'),
        ("ts-object", '{"value": 9, "ts": {"s": 1}}'),
        ("ts-text", '{"value": 10, "ts": "yesterday"}'),
        ("big-value", '{"value": 1' + "0" * 400 + "}"),  # beyond a float
        ("big-ts", '{"value": 12, "ts": 1' + "0" * 400 + "}"),
        ("good", f'{{"value": 11, "ts": {s + 11}}}'),
    ]
    try:
        for name, payload in messages:
            publish(pub, f"{prefix}/{name}", payload)
        got.wait(lambda c: c.frame.filter(pl.col("tag") == f"{prefix}/good").height == 1)
    finally:
        pub.loop_stop()
        source.stop()

    stored = store.raw("*")
    by_tag = {
        r["tag"].removeprefix(f"{prefix}/"): r
        for r in stored.select("tag", "value", "timestamp", "quality", "reason").to_dicts()
    }
    assert set(by_tag) == {name for name, _ in messages}  # one record each, none lost
    assert (by_tag["good"]["value"], by_tag["good"]["timestamp"], by_tag["good"]["quality"]) == (
        11.0,
        datetime(2026, 1, 1, 0, 0, 11, tzinfo=UTC),
        "good",
    )
    for name, value in (
        ("ms", 1.0),
        ("ns", 2.0),
        ("negative", 3.0),
        ("huge", 4.0),
        ("iso-far", 5.0),
        ("iso-old", 6.0),
        ("big-ts", 12.0),
    ):
        row = by_tag[name]
        assert (row["value"], row["timestamp"], row["quality"]) == (value, None, "uncertain"), name
        assert row["reason"].startswith("implausible_timestamp: ") and " at $.ts (" in row["reason"], name
    assert by_tag["ms"]["reason"] == (
        f"implausible_timestamp: {float(T0)} at $.ts (auto) is outside 1990-01-01..now+1 day"
    )
    for name, value in (("zero", 7.0), ("missing", 8.0)):
        assert (by_tag[name]["value"], by_tag[name]["timestamp"], by_tag[name]["quality"]) == (
            value,
            None,
            "good",
        )
    for name, what in (
        ("not-json", "not JSON"),
        ("wrong-type", "expected a number, boolean or string at $.value, got an object"),
        ("ts-object", "expected a timestamp at $.ts, got an object"),
        ("ts-text", "unreadable timestamp at $.ts (auto): yesterday"),
        ("big-value", "a number out of range at $.value (10000000000000000000...)"),
    ):
        row = by_tag[name]
        assert (row["value"], row["quality"]) == (None, "bad"), name
        assert row["reason"].startswith(f"bad_payload: {what}"), name
    assert source.counters["bad_payloads"] == 5
    assert source.counters["implausible_timestamps"] == 7
    assert {item for item, _ in source.last_errors} >= {f"{prefix}/ms", f"{prefix}/not-json"}
    assert run_log.warnings() == [  # the first of each kind, with its item
        f"mqtt-test: {prefix}/ms: {by_tag['ms']['reason']}",
        f"mqtt-test: {prefix}/not-json: {by_tag['not-json']['reason']}",
    ]


def test_a_failing_emit_is_counted_and_the_batcher_goes_on(prefix):
    run_log = RunLog()
    config = {"topics": [f"{prefix}/#"], "batch_max_messages": 1}
    source, got = make_source("mqtt", config, RunContext(log=run_log))
    failed: list[pl.DataFrame] = []
    refused = threading.Event()

    def emit(frame: pl.DataFrame) -> None:
        if not failed:
            failed.append(as_frame(frame))
            refused.set()
            raise RuntimeError("destination\nrefused")
        got.emit(frame)

    source.on_state = got.on_state
    source.start(emit)
    got.wait(lambda c: "subscribed" in c.states)
    pub = publisher()
    try:
        publish(pub, f"{prefix}/a", '{"value": 1}')
        assert refused.wait(10)
        publish(pub, f"{prefix}/a", '{"value": 2}')
        got.wait(lambda c: c.frame.filter(pl.col("value") == 2.0).height == 1)
    finally:
        pub.loop_stop()
        source.stop()
    assert failed[0]["value"].to_list() == [1.0]
    assert source.counters["emit_errors"] == 1 and source.counters["item_errors"] == 1
    assert ("emit of 1 records", "RuntimeError: destination refused") in source.last_errors
    assert run_log.warnings() == ["mqtt-test: emit of 1 records: RuntimeError: destination refused"]


def test_an_exception_in_a_paho_callback_does_not_end_the_network_thread(prefix):
    run_log = RunLog()
    source, got = make_source("mqtt", {"topics": [f"{prefix}/#"]}, RunContext(log=run_log))
    raised: list[str] = []

    def on_state(name, state, detail) -> None:  # a state listener that breaks once
        got.on_state(name, state, detail)
        if state == "subscribed" and not raised:
            raised.append(state)
            raise RuntimeError("listener broke")

    source.on_state = on_state
    start_and_subscribe(source, got)
    pub = publisher()
    try:
        publish(pub, f"{prefix}/a", '{"value": 1}')
        got.wait(lambda c: c.frame.filter(pl.col("value") == 1.0).height == 1)
    finally:
        pub.loop_stop()
        source.stop()
    assert source.counters["callback_errors"] == 1 and source.counters["item_errors"] == 1
    assert ("paho on_subscribe", "RuntimeError: listener broke") in source.last_errors
    assert run_log.warnings() == ["mqtt-test: paho on_subscribe: RuntimeError: listener broke"]
