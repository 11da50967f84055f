"""JSON payload mapping, without a broker: golden cases, a strftime format, and a property test
that no payload at all is lost or breaks the batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.tags import TAG_SCHEMA
from protocols.mqtt.config import JsonMapping
from protocols.mqtt.json_payload import JsonDecoder, compile_path

GOLDEN = sorted((Path(__file__).parent / "golden").glob("json_*.json"))
RECEIVED = datetime(2030, 1, 1, tzinfo=UTC)


def decode(mapping: dict, messages: list[tuple[str, bytes]]):
    decoder = JsonDecoder(JsonMapping.model_validate(mapping), "mqtt")
    topics, payloads = [t for t, _ in messages], [p for _, p in messages]
    return decoder, *decoder.decode(topics, payloads, [RECEIVED] * len(messages))


@pytest.mark.parametrize("case", GOLDEN, ids=lambda p: p.stem)
def test_golden(case):
    spec = json.loads(case.read_text())
    messages = [(m["topic"], m["payload"].encode()) for m in spec["messages"]]
    _, frame, rejected = decode(spec["mapping"], messages)
    assert frame.schema == TAG_SCHEMA
    assert frame["source"].unique().to_list() == ["mqtt"]
    got = frame.select("tag", "value", "value_text", "timestamp", "quality", "reason").to_dicts()
    want = [
        {
            **w,
            "timestamp": RECEIVED if w["timestamp"] == "received" else datetime.fromisoformat(w["timestamp"]),
        }
        for w in spec["expected"]
    ]
    assert got == want
    bad_topics = {
        m["topic"] for m, w in zip(spec["messages"], spec["expected"], strict=False) if w["quality"] == "bad"
    }
    assert {topic for topic, _ in rejected} == bad_topics


def test_strftime_format_is_utc_unless_it_has_an_offset():
    mapping = {"timestamp_path": "$.t", "timestamp_format": "%d/%m/%Y %H:%M"}
    _, frame, rejected = decode(mapping, [("a", b'{"value": 1, "t": "01/01/2026 10:30"}')])
    assert rejected == []
    assert frame["timestamp"].to_list() == [datetime(2026, 1, 1, 10, 30, tzinfo=UTC)]


def test_missing_fields_are_counted():
    decoder, frame, _ = decode({"fields": ["$.a", "$.b"]}, [("t", b'{"a": 1}'), ("t", b"{}")])
    assert frame["tag"].to_list() == ["t/a"]
    assert decoder.fields_missing == 3


def test_compile_path():
    assert compile_path("$.a.b[2].c") == ("a", "b", 2, "c")
    assert compile_path("value") == ("value",)


def test_bad_paths_are_config_errors():
    with pytest.raises(ValueError, match="not a JSON path"):
        JsonMapping(value_path="$..x")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["value", "ts", "q", "x"]), children, max_size=4)
    ),
    max_leaves=10,
)
payloads = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=30),
    st.fixed_dictionaries({"value": json_values, "ts": json_values}).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(payloads, min_size=1, max_size=10))
def test_every_message_gives_exactly_one_record(batch):
    mapping = {"timestamp_path": "$.ts", "quality_path": "$.q"}
    _, frame, rejected = decode(mapping, [(f"t/{i}", p) for i, p in enumerate(batch)])
    assert frame.schema == TAG_SCHEMA
    assert frame.height == len(batch)
    bad = frame.filter(frame["reason"].str.starts_with("bad_payload: "))
    assert (bad["quality"] == "bad").all()
    odd = frame.filter(frame["reason"].str.starts_with("implausible_timestamp: "))
    assert bad.height + odd.height == len(rejected)
    assert odd["timestamp"].is_null().all() and (odd["quality"] != "good").all()
    assert frame.filter(frame["quality"] != "good")["reason"].is_not_null().all()
    assert bad.filter(bad["value"].is_not_null() | bad["value_text"].is_not_null()).is_empty()


def test_a_configured_timestamp_that_is_missing_is_null_and_without_a_path_receive_time():
    with_path = {"timestamp_path": "$.ts", "epoch_unit": "ms"}
    _, frame, rejected = decode(with_path, [("a", b'{"value": 1}'), ("a", b'{"value": 2, "ts": null}')])
    assert rejected == []
    assert frame.select("timestamp", "quality", "received_at").rows() == [(None, "good", RECEIVED)] * 2
    _, frame, _ = decode({}, [("a", b'{"value": 3}')])  # no path: the sender has no clock
    assert frame["timestamp"].to_list() == [RECEIVED]


def test_milliseconds_where_seconds_are_configured_are_kept_uncertain():
    _, frame, rejected = decode(
        {"timestamp_path": "$.ts", "epoch_unit": "s"},
        [("a", b'{"value": 1, "ts": 1767225600000}'), ("b", b'{"value": 2, "ts": 1767225600}')],
    )
    assert frame.select("tag", "value", "timestamp", "quality").rows() == [
        ("a", 1.0, None, "uncertain"),
        ("b", 2.0, datetime(2026, 1, 1, tzinfo=UTC), "good"),
    ]
    assert rejected == [
        ("a", "implausible_timestamp: 1767225600000.0 at $.ts (auto) is outside 1990-01-01..now+1 day")
    ]


def test_a_duplicate_key_is_a_bad_payload_naming_the_key():
    messages = [
        ("t/top", b'{"value": 1, "value": 2}'),
        ("t/nested", b'{"value": 3, "meta": {"unit": "kW", "unit": "MW"}}'),
        ("t/fine", b'{"value": 4, "meta": {"value": 5}}'),  # the same key in two objects is fine
    ]
    _, frame, rejected = decode({}, messages)
    reasons = dict(zip(frame["tag"], frame["reason"], strict=True))
    assert reasons["t/top"] == 'bad_payload: duplicate key "value" (keys are unique in an object)'
    assert reasons["t/nested"] == 'bad_payload: duplicate key "unit" (keys are unique in an object)'
    assert reasons["t/fine"] is None
    assert frame.filter(frame["tag"] == "t/fine")["value"].to_list() == [4.0]
    assert sorted(topic for topic, _ in rejected) == ["t/nested", "t/top"]
