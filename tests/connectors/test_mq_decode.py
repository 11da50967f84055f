"""The message queue sources' JSON decoding (engine/connectors/mq_common.py), without a broker:
a micro-batch of bodies decoded at once gives back every record of every good message, in order,
and every bad message is rejected with a reason; nothing a body holds makes it raise (hypothesis)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.connectors.mq_common import decode_json, parse_timestamps

names = st.sampled_from(["tag", "value", "line", "ok", "note"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=20),
)
records = st.dictionaries(names, scalars, min_size=1, max_size=5)
good_bodies = st.one_of(
    records.map(lambda r: json.dumps(r).encode()),
    st.lists(records, max_size=4).map(lambda rs: json.dumps(rs, indent=1).encode()),  # line breaks inside
)
bad_bodies = st.one_of(
    st.binary(max_size=40).filter(lambda b: not b.strip().startswith((b"{", b"["))),
    st.sampled_from([b"42", b'"text"', b"[1, 2]", b"{", b"null", b"[{}, 3]"]),
)


def expected_records(body: bytes) -> list[dict]:
    value = json.loads(body)
    return value if isinstance(value, list) else [value]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(good_bodies, bad_bodies), max_size=12))
def test_every_good_record_comes_back_in_order_and_every_bad_message_is_rejected(bodies):
    frame, bad = decode_json(bodies)
    bad_index = {i for i, _ in bad}
    expected: list[tuple[int, dict]] = []
    for i, body in enumerate(bodies):
        try:
            recs = expected_records(body)
            ok = all(isinstance(r, dict) for r in recs)
        except ValueError:
            ok = False
        if not ok:
            assert i in bad_index
            continue
        if i in bad_index:  # two good messages disagreed beyond a common type: kept apart, with a reason
            continue
        expected += [(i, r) for r in recs]
    assert all(reason for _, reason in bad)
    rows = frame.to_dicts() if frame.height else []
    assert [row["_m"] for row in rows] == [i for i, _ in expected]  # every record, in order
    # each field of each record is in the frame (numbers may widen: int -> float, anything -> text)
    for (_, rec), row in zip(expected, rows, strict=True):
        for key, value in rec.items():
            if value is None:
                assert row.get(key) is None
            elif isinstance(value, bool) or isinstance(row.get(key), str):
                assert row.get(key) is not None
            elif isinstance(value, int | float):
                assert float(row[key]) == float(value)


def test_golden_batch():
    bodies = [
        b'{"tag": "a", "value": 1, "timestamp": "2026-01-01T00:00:00Z"}',
        b'[{"tag": "b", "value": 2.5, "timestamp": 1767225600}, {"tag": "c", "value": 3}]',
        b"not json",
        b'{"tag": "d", "value": 4, "timestamp": "2026-01-01 01:00:00"}',
    ]
    frame, bad = decode_json(bodies)
    assert bad == [(2, "not JSON: Expecting value: line 1 column 1 (char 0)")]
    assert frame.get_column("tag").to_list() == ["a", "b", "c", "d"]
    assert frame.get_column("_m").to_list() == [0, 1, 1, 3]
    # mixed text and numbers in one field: the bodies are decoded one by one, the field as text
    parsed, failed = parse_timestamps(
        frame.with_columns(pl.col("timestamp").cast(pl.String)), "timestamp", "s"
    )
    assert failed.get_column("tag").to_list() == ["b"]  # "1767225600" as text is not ISO 8601
    assert parsed.get_column("timestamp").to_list() == [
        datetime(2026, 1, 1, tzinfo=UTC),
        None,
        datetime(2026, 1, 1, 1, tzinfo=UTC),
    ]


def test_epoch_numbers_in_the_given_unit():
    frame = pl.DataFrame({"timestamp": [1767225600000, None]})
    parsed, failed = parse_timestamps(frame, "timestamp", "ms")
    assert failed.height == 0
    assert parsed.get_column("timestamp").to_list() == [datetime(2026, 1, 1, tzinfo=UTC), None]
