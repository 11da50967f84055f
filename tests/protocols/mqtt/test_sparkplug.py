"""Sparkplug B codec and session, without a broker: golden cases and round-trip properties."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.tags import TAG_SCHEMA, TagBatchBuilder
from protocols.mqtt import sparkplug as sp

GOLDEN = sorted((Path(__file__).parent / "golden").glob("sparkplug_*.json"))
RECEIVED = datetime(2030, 1, 1, tzinfo=UTC)


def run_messages(messages, session=None):
    session = session or sp.SparkplugSession()
    builder = TagBatchBuilder("mqtt")
    for m in messages:
        session.handle(m["topic"], bytes.fromhex(m["payload_hex"]), builder, RECEIVED)
    return builder.take(), session


@pytest.mark.parametrize("case", GOLDEN, ids=lambda p: p.stem)
def test_golden(case):
    spec = json.loads(case.read_text())
    frame, _ = run_messages(spec["messages"])
    assert frame.schema == TAG_SCHEMA
    got = frame.select("tag", "value", "value_text", "timestamp", "quality", "reason").to_dicts()
    assert len(got) == len(spec["expected"])
    for row, want in zip(got, spec["expected"], strict=True):
        ts = want["timestamp"] and (
            RECEIVED if want["timestamp"] == "received" else datetime.fromisoformat(want["timestamp"])
        )
        assert row == {**want, "timestamp": ts}


def test_death_forgets_births_and_counts():
    spec = json.loads((Path(__file__).parent / "golden" / "sparkplug_ndeath_gaps.json").read_text())
    _, session = run_messages(spec["messages"])
    assert session.births == {}
    assert session.counters == {"births": 2, "deaths": 1}
    # Data after the death, before a new birth: the alias is unknown again.
    after, _ = run_messages([spec["messages"][2]], session)
    assert after["reason"].to_list() == ["unknown_alias"]


def test_ddeath_gaps_only_that_device():
    b = TagBatchBuilder("s")
    s = sp.SparkplugSession()
    s.handle("spBv1.0/G/NBIRTH/E", sp.encode_payload([sp.Metric("n", 1, sp.INT32)]), b, RECEIVED)
    for dev in ("D1", "D2"):
        s.handle(f"spBv1.0/G/DBIRTH/E/{dev}", sp.encode_payload([sp.Metric("x", 1.0)]), b, RECEIVED)
    b.take()
    s.handle("spBv1.0/G/DDEATH/E/D1", b"", b, RECEIVED)
    gaps = b.take()
    assert gaps["tag"].to_list() == ["G/E/D1/x"]
    assert gaps["reason"].to_list() == ["comm_lost"]
    assert sorted(s.known_tags()) == ["G/E/D2/x", "G/E/n"]


def test_filters_and_ignored_topics():
    b = TagBatchBuilder("s")
    s = sp.SparkplugSession(group_ids=["G"], edge_nodes=["E"])
    data = sp.encode_payload([sp.Metric("x", 1.0)])
    s.handle("spBv1.0/Other/NDATA/E", data, b, RECEIVED)
    s.handle("spBv1.0/G/NDATA/Other", data, b, RECEIVED)
    s.handle("spBv1.0/STATE/host1", b"ONLINE", b, RECEIVED)
    s.handle("spBv1.0/G/NCMD/E", data, b, RECEIVED)
    s.handle("spBv1.0/G/NDATA/E", data, b, RECEIVED)
    assert b.take()["tag"].to_list() == ["G/E/x"]
    assert s.counters == {"filtered": 2, "ignored": 2}


@pytest.mark.parametrize(
    ("topic", "payload"),
    [("spBv1.0/G/NDATA/E", b"\xff\xff\xff"), ("spBv1.0/G/BOGUS/E", b""), ("other/G/NDATA/E", b"")],
)
def test_bad_input_is_a_clear_error(topic, payload):
    with pytest.raises(sp.SparkplugError, match=r"Sparkplug|spBv1\.0"):
        sp.SparkplugSession().handle(topic, payload, TagBatchBuilder("s"), RECEIVED)


def test_template_members_are_flattened():
    payload = sp.payload_class()()
    m = payload.metrics.add(name="Turbine", datatype=sp.TEMPLATE)
    m.template_value.metrics.add(name="RPM", datatype=sp.FLOAT, float_value=11.5)
    frame, _ = run_messages(
        [{"topic": "spBv1.0/G/NDATA/E", "payload_hex": payload.SerializeToString().hex()}]
    )
    assert frame.select("tag", "value").rows() == [("G/E/Turbine/RPM", 11.5)]


_INT_RANGES = {
    sp.INT8: (-(2**7), 2**7 - 1),
    sp.INT16: (-(2**15), 2**15 - 1),
    sp.INT32: (-(2**31), 2**31 - 1),
    sp.INT64: (-(2**63), 2**63 - 1),
    sp.UINT8: (0, 2**8 - 1),
    sp.UINT16: (0, 2**16 - 1),
    sp.UINT32: (0, 2**32 - 1),
    sp.UINT64: (0, 2**64 - 1),
}


@st.composite
def metrics(draw):
    datatype = draw(st.sampled_from([*_INT_RANGES, sp.DOUBLE, sp.FLOAT, sp.BOOLEAN, sp.STRING, sp.BYTES]))
    if draw(st.booleans()) and draw(st.booleans()):
        value = None
    elif datatype in _INT_RANGES:
        value = draw(st.integers(*_INT_RANGES[datatype]))
    elif datatype == sp.DOUBLE:
        value = draw(st.floats(allow_nan=False))
    elif datatype == sp.FLOAT:
        value = draw(st.floats(allow_nan=False, width=32))
    elif datatype == sp.BOOLEAN:
        value = draw(st.booleans())
    elif datatype == sp.STRING:
        value = draw(st.text())
    else:
        value = draw(st.binary())
    name = draw(st.text(min_size=1, max_size=20))
    ts = draw(st.none() | st.integers(0, 2**41))
    return sp.Metric(name, value, datatype, alias=draw(st.none() | st.integers(0, 2**64 - 1)), timestamp=ts)


@settings(max_examples=150, deadline=None)
@given(st.lists(metrics(), max_size=8), st.none() | st.integers(0, 2**41), st.none() | st.integers(0, 255))
def test_round_trip(ms, timestamp, seq):
    decoded = sp.decode_payload(sp.encode_payload(ms, timestamp=timestamp, seq=seq))
    assert (decoded.timestamp if decoded.HasField("timestamp") else None) == timestamp
    assert (decoded.seq if decoded.HasField("seq") else None) == seq
    assert len(decoded.metrics) == len(ms)
    for m, pm in zip(ms, decoded.metrics, strict=True):
        assert pm.name == m.name
        assert (pm.alias if pm.HasField("alias") else None) == m.alias
        assert (pm.timestamp if pm.HasField("timestamp") else None) == m.timestamp
        assert pm.is_null == (m.value is None)
        assert sp.metric_value(pm, pm.datatype) == m.value


def _msg(session, builder, kind, seq, metrics=(), device=None):
    topic = f"spBv1.0/G/{kind}/E" + (f"/{device}" if device else "")
    payload = sp.encode_payload(list(metrics), timestamp=1767225600000, seq=seq)
    session.handle(topic, payload, builder, RECEIVED)


def test_sequence_numbers_wrap_and_a_gap_asks_for_one_rebirth():
    s, b = sp.SparkplugSession(), TagBatchBuilder("s")
    _msg(s, b, "NBIRTH", 254, [sp.Metric("bdSeq", 3, sp.INT64), sp.Metric("x", 1.0, alias=1)])
    _msg(s, b, "NDATA", 255, [sp.Metric(None, 2.0, alias=1)])
    _msg(s, b, "NDATA", 0, [sp.Metric(None, 3.0, alias=1)])  # 255 -> 0 is no gap
    assert "sequence_gaps" not in s.counters and s.rebirths == []
    b.take()
    _msg(s, b, "NDATA", 2, [sp.Metric(None, 4.0, alias=1)])  # 1 is lost
    _msg(s, b, "NDATA", 5, [sp.Metric(None, 5.0, alias=1)])  # and 3, 4: flagged, not asked twice
    frame = b.take()
    assert frame.select("tag", "value", "quality", "reason").rows() == [
        ("G/E/bdSeq", None, "bad", "sequence_gap"),
        ("G/E/x", None, "bad", "sequence_gap"),
        ("G/E/x", 4.0, "good", None),
        ("G/E/bdSeq", None, "bad", "sequence_gap"),
        ("G/E/x", None, "bad", "sequence_gap"),
        ("G/E/x", 5.0, "good", None),
    ]
    assert frame["timestamp"][0] < frame["timestamp"][2]  # the gap sits just before the data
    assert s.counters["sequence_gaps"] == 2 and s.rebirths == [("G", "E")]
    assert s.problems[0] == ("spBv1.0/G/NDATA/E", "sequence_gap: seq 2 after 0, expected 1")
    _msg(s, b, "NBIRTH", 0, [sp.Metric("bdSeq", 3, sp.INT64), sp.Metric("x", 1.0, alias=1)])
    _msg(s, b, "NDATA", 2, [sp.Metric(None, 6.0, alias=1)])  # a new gap after the rebirth: asked again
    assert s.rebirths == [("G", "E"), ("G", "E")]


def test_data_from_a_node_never_born_asks_for_a_rebirth():
    s, b = sp.SparkplugSession(), TagBatchBuilder("s")
    _msg(s, b, "DDATA", 7, [sp.Metric(None, 1.0, alias=4)], device="D")
    assert b.take().select("tag", "quality", "reason").rows() == [
        ("G/E/D/alias_4", "uncertain", "unknown_alias")
    ]
    assert s.rebirths == [("G", "E")]


def test_an_ndeath_without_bdseq_is_a_death_and_a_mismatched_one_is_stale():
    s, b = sp.SparkplugSession(), TagBatchBuilder("s")
    _msg(s, b, "NBIRTH", 0, [sp.Metric("bdSeq", 5, sp.UINT64), sp.Metric("x", 1.0)])
    s.handle("spBv1.0/G/NDEATH/E", sp.encode_payload([sp.Metric("bdSeq", 4, sp.UINT64)]), b, RECEIVED)
    assert s.counters["stale_deaths"] == 1 and s.known_tags() == ["G/E/bdSeq", "G/E/x"]
    s.handle("spBv1.0/G/NDEATH/E", b"", b, RECEIVED)
    assert s.counters["deaths"] == 1 and s.known_tags() == []


def test_a_metric_timestamp_in_microseconds_is_kept_uncertain_without_a_timestamp():
    s, b = sp.SparkplugSession(), TagBatchBuilder("s")
    _msg(s, b, "NDATA", None, [sp.Metric("x", 1.0, timestamp=1767225600000 * 1000), sp.Metric("y", 2.0)])
    frame = b.take()
    assert frame.select("tag", "value", "quality").rows() == [
        ("G/E/x", 1.0, "uncertain"),
        ("G/E/y", 2.0, "good"),
    ]
    assert frame["timestamp"].to_list() == [None, datetime(2026, 1, 1, tzinfo=UTC)]
    assert frame["received_at"].to_list() == [RECEIVED, RECEIVED]


def test_template_members_inherit_or_carry_their_own_implausible_timestamp():
    payload = sp.payload_class()()
    payload.timestamp = 1767225600000
    m = payload.metrics.add(name="Turbine", datatype=sp.TEMPLATE, timestamp=1767225600000 * 1000)
    m.template_value.metrics.add(name="RPM", datatype=sp.FLOAT, float_value=11.5)
    ok = payload.metrics.add(name="Mast", datatype=sp.TEMPLATE)
    ok.template_value.metrics.add(name="Dir", datatype=sp.DOUBLE, double_value=90.0, timestamp=5)
    ok.template_value.metrics.add(name="Speed", datatype=sp.DOUBLE, double_value=7.0)
    frame, session = run_messages(
        [{"topic": "spBv1.0/G/NDATA/E", "payload_hex": payload.SerializeToString().hex()}]
    )
    rows = frame.select("tag", "value", "timestamp", "quality").rows()
    assert rows == [
        ("G/E/Turbine/RPM", 11.5, None, "uncertain"),
        ("G/E/Mast/Dir", 90.0, None, "uncertain"),
        ("G/E/Mast/Speed", 7.0, datetime(2026, 1, 1, tzinfo=UTC), "good"),
    ]
    assert session.counters["implausible_timestamps"] == 2
    assert [item for item, _ in session.problems] == [
        "spBv1.0/G/NDATA/E metric Turbine",
        "spBv1.0/G/NDATA/E member G/E/Mast/Dir",
    ]


def test_no_timestamp_is_null_never_1970_and_received_at_orders():
    b = TagBatchBuilder("s")
    s = sp.SparkplugSession()
    s.handle("spBv1.0/G/NDATA/E", sp.encode_payload([sp.Metric("x", 1.0)]), b, RECEIVED)  # none at all
    s.handle("spBv1.0/G/NDATA/E", sp.encode_payload([sp.Metric("x", 2.0)], timestamp=0), b, RECEIVED)
    s.handle("spBv1.0/G/NDATA/E", sp.encode_payload([sp.Metric("x", 3.0, timestamp=0)]), b, RECEIVED)
    frame = b.take()
    assert frame.select("value", "timestamp", "quality", "reason", "received_at").rows() == [
        (v, None, "good", None, RECEIVED) for v in (1.0, 2.0, 3.0)
    ]
