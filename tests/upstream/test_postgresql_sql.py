"""The PostgreSQL upstream without a server: the Arrow -> PostgreSQL type map, the SQL it issues
(golden files, including the TimescaleDB path, which cannot run here: the extension is not
installed), the error classification, and the binary COPY encoder (decoded back, hypothesis)."""

from __future__ import annotations

import datetime as dt
import decimal
import struct
from pathlib import Path

import psycopg.errors
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.connectors import registry
from engine.connectors.postgresql import (
    PG_EPOCH_US,
    PostgreSQLSinkConfig,
    classify,
    create_table_sql,
    default_time_column,
    encode_copy,
    insert_sql,
    pg_type,
    plan_columns,
    watchdog_s,
)
from engine.context import RunContext

GOLDEN = Path(__file__).parent / "golden"

TAGS = pa.schema(
    [
        ("timestamp", pa.timestamp("us", "UTC")),
        ("tag", pa.large_string()),
        ("value", pa.float64()),
        ("value_text", pa.large_string()),
        ("quality", pa.large_string()),
        ("_key", pa.large_string()),
    ]
)


def _golden(name: str, statements: list[str]) -> None:
    assert "\n".join(statements) + "\n" == (GOLDEN / name).read_text(encoding="utf-8")


def test_type_map():
    expected = {
        pa.bool_(): "boolean",
        pa.int8(): "smallint",
        pa.uint8(): "smallint",
        pa.int16(): "smallint",
        pa.int32(): "integer",
        pa.uint16(): "integer",
        pa.int64(): "bigint",
        pa.uint32(): "bigint",
        pa.uint64(): "numeric(20,0)",
        pa.float32(): "real",
        pa.float64(): "double precision",
        pa.decimal128(12, 3): "numeric(12,3)",
        pa.string(): "text",
        pa.large_string(): "text",
        pa.dictionary(pa.int32(), pa.string()): "text",
        pa.null(): "text",
        pa.binary(): "bytea",
        pa.timestamp("us", "UTC"): "timestamptz",
        pa.timestamp("ns"): "timestamp",
        pa.date32(): "date",
        pa.time64("us"): "time",
        pa.duration("us"): "interval",
    }
    assert {t: pg_type(t)[0] for t in expected} == expected
    # numbers PostgreSQL has no binary twin for travel as text and are cast on insert
    assert pg_type(pa.uint64())[1] == pg_type(pa.decimal128(12, 3))[1] == "text"


def test_unstorable_column_is_one_line():
    with pytest.raises(ValueError) as info:
        plan_columns(pa.schema([("readings", pa.list_(pa.float64()))]))
    message = str(info.value)
    assert "\n" not in message and message.startswith("column 'readings': type list<item: double>")
    assert "allowed:" in message


def test_create_table_sql_golden():
    columns = plan_columns(TAGS)
    _golden(
        "create_tags.sql",
        create_table_sql("plant", "tags", columns, time_column=None, timescale=False),
    )


def test_create_hypertable_sql_golden():
    """TimescaleDB: the time column is NOT NULL, the table becomes a hypertable on it, and the
    unique index the deduplication relies on includes it (Timescale requires the partitioning
    column in every unique index)."""
    columns = plan_columns(TAGS)
    time_column = default_time_column(TAGS, None)
    assert time_column == "timestamp"
    _golden(
        "create_tags_timescale.sql",
        create_table_sql("plant", "tags", columns, time_column=time_column, timescale=True),
    )


def test_insert_sql_golden():
    columns = plan_columns(pa.schema([("tag", pa.string()), ("count", pa.uint64()), ("_key", pa.string())]))
    _golden(
        "insert.sql",
        [
            insert_sql("plant", "tags", "_agg_stage_x", columns, ["_key"], "append"),
            insert_sql("plant", "tags", "_agg_stage_x", columns, ["_key", "timestamp"], "upsert"),
        ],
    )


def test_default_time_column():
    assert default_time_column(pa.schema([("timestamp", pa.string())]), None) is None
    assert default_time_column(pa.schema([("ts", pa.timestamp("us"))]), "ts") == "ts"
    assert default_time_column(pa.schema([("ts", pa.timestamp("us"))]), None) is None


@pytest.mark.parametrize(
    ("sqlstate", "retryable"),
    [
        ("23505", False),  # unique violation (not on _key: the key conflicts are skipped)
        ("23514", False),  # check constraint
        ("22P02", False),  # invalid text representation
        ("42804", False),  # datatype mismatch
        ("42P01", True),  # the table was dropped under us: look again
        ("42501", True),  # permission: fixed by an administrator, data kept
        ("57014", True),  # statement timeout
        ("40001", True),  # serialization failure
        ("40P01", True),  # deadlock
        ("57P01", True),  # admin shutdown
        ("08006", True),  # connection failure
        ("53300", True),  # too many connections
    ],
)
def test_classify(sqlstate, retryable):
    error = classify(psycopg.errors.lookup(sqlstate)("boom\nDETAIL: more"))
    assert error.retryable is retryable
    assert "\n" not in str(error) and "boom" in str(error)


def test_config_keys_and_secret():
    ctx = RunContext(secret=lambda name: {"PG": "s3cret"}[name])
    raw = {
        "host": "db.plant",
        "port": 5433,
        "database": "central",
        "username": "edge",
        "password": {"secret": "PG"},
        "ssl_mode": "require",
        "schema": "plant",
        "connect_timeout": 5,
        "table": "tags",
        "mode": "append",
    }
    config = PostgreSQLSinkConfig.model_validate(ctx.resolve_config(raw))
    assert config.password == "s3cret" and config.schema_ == "plant" and config.delivery is None
    target = registry.get("postgresql").make_target(config, ctx, "central")
    assert target.describe_target() == "postgresql://db.plant:5433/central plant.tags"
    assert "s3cret" not in target.describe_target()
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        PostgreSQLSinkConfig.model_validate({"database": "d", "table": "tags; drop table x"})
    assert watchdog_s(60) == 65 and watchdog_s(1) == 2


# ---- the binary COPY encoder, decoded back ------------------------------------------------------------


def decode_copy(pieces, wires: list[str]) -> list[tuple]:
    """A small reader of PostgreSQL's binary COPY format for the wire types the encoder writes."""
    data = b"".join(bytes(p) for p in pieces)
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00" and data[11:19] == b"\0" * 8
    pos, rows = 19, []
    while True:
        (count,) = struct.unpack_from(">h", data, pos)
        pos += 2
        if count == -1:
            assert pos == len(data)
            return rows
        assert count == len(wires)
        row = []
        for wire in wires:
            (length,) = struct.unpack_from(">i", data, pos)
            pos += 4
            if length == -1:
                row.append(None)
                continue
            raw, pos = data[pos : pos + length], pos + length
            row.append(_decode(wire, raw))
        rows.append(tuple(row))


def _decode(wire: str, raw: bytes):
    if wire == "text":
        return raw.decode()
    if wire == "bytea":
        return raw
    if wire == "boolean":
        return raw == b"\x01"
    fmt = {"smallint": ">h", "integer": ">i", "bigint": ">q", "real": ">f", "double precision": ">d"}
    if wire in fmt:
        return struct.unpack(fmt[wire], raw)[0]
    if wire in ("timestamp", "timestamptz"):
        return struct.unpack(">q", raw)[0] + PG_EPOCH_US
    if wire == "date":
        return struct.unpack(">i", raw)[0] + 10_957
    if wire == "time":
        return struct.unpack(">q", raw)[0]
    if wire == "interval":
        us, days, months = struct.unpack(">qii", raw)
        assert days == months == 0
        return us
    raise AssertionError(wire)


def _expected(array: pa.Array, wire: str) -> list:
    t = array.type
    if pa.types.is_timestamp(t):
        return array.cast(pa.timestamp("us", t.tz)).cast(pa.int64()).to_pylist()
    if pa.types.is_date(t):
        return array.cast(pa.int32()).to_pylist()
    if pa.types.is_time(t) or pa.types.is_duration(t):
        target = pa.time64("us") if pa.types.is_time(t) else pa.duration("us")
        return array.cast(target).cast(pa.int64()).to_pylist()
    if wire == "text" and not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return array.cast(pa.string()).to_pylist()
    if pa.types.is_float32(t):
        return [
            None if v is None else struct.unpack(">f", struct.pack(">f", v))[0] for v in array.to_pylist()
        ]
    return array.to_pylist()


_COLUMNS = {
    "b": (pa.bool_(), st.booleans()),
    "i8": (pa.int8(), st.integers(-128, 127)),
    "u16": (pa.uint16(), st.integers(0, 65535)),
    "i32": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "i64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "u64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "f32": (pa.float32(), st.floats(width=32, allow_nan=False)),
    "f64": (pa.float64(), st.floats(allow_nan=False)),
    "s": (pa.large_string(), st.text()),
    "s32": (pa.string(), st.text(max_size=5)),
    "bin": (pa.binary(), st.binary()),
    "dec": (pa.decimal128(10, 2), st.decimals(min_value=-(10**7), max_value=10**7, places=2)),
    "ts": (pa.timestamp("us", "UTC"), st.datetimes(timezones=st.just(dt.UTC))),
    "tsn": (
        pa.timestamp("ns"),
        st.datetimes(min_value=dt.datetime(1700, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    ),
    "d": (pa.date32(), st.dates()),
    "t": (pa.time64("us"), st.times()),
    "dur": (
        pa.duration("us"),
        st.timedeltas(min_value=dt.timedelta(days=-9999), max_value=dt.timedelta(days=9999)),
    ),
}


@st.composite
def tables(draw):
    names = draw(st.lists(st.sampled_from(sorted(_COLUMNS)), min_size=1, max_size=6, unique=True))
    n = draw(st.integers(0, 12))
    arrays = {}
    for name in names:
        arrow_type, values = _COLUMNS[name]
        arrays[name] = pa.array(draw(st.lists(st.none() | values, min_size=n, max_size=n)), arrow_type)
    arrays["_key"] = pa.array([f"k{i}" for i in range(n)], pa.large_string())
    return pa.table(arrays)


@settings(max_examples=100, deadline=None)
@given(tables())
def test_encoder_round_trip(table):
    columns = plan_columns(table.schema)
    rows = decode_copy(encode_copy(table, columns), [c.wire for c in columns])
    assert len(rows) == table.num_rows
    for index, column in enumerate(columns):
        decoded = [row[index] for row in rows]
        expected = _expected(table.column(column.name).combine_chunks(), column.wire)
        assert decoded == expected, column.name


def test_encoder_sliced_and_chunked():
    """A table that is a slice of a bigger one, in several chunks, encodes only its own rows."""
    big = pa.table({"tag": ["a", "bb", None, "dddd"] * 3, "_key": [str(i) for i in range(12)]})
    table = pa.concat_tables([big.slice(1, 3), big.slice(7, 2)])
    columns = plan_columns(table.schema)
    rows = decode_copy(encode_copy(table, columns), ["text", "text"])
    assert rows == [("bb", "1"), (None, "2"), ("dddd", "3"), ("dddd", "7"), ("a", "8")]


def test_encoder_row_numbers_for_upsert():
    table = pa.table({"_key": ["a", "a"], "v": [1.0, None]})
    rows = decode_copy(
        encode_copy(table, plan_columns(table.schema), row_numbers=True),
        ["text", "double precision", "bigint"],
    )
    assert rows == [("a", 1.0, 0), ("a", None, 1)]


def test_decimal_text():
    table = pa.table({"dec": pa.array([decimal.Decimal("-1.50")], pa.decimal128(5, 2)), "_key": ["k"]})
    rows = decode_copy(encode_copy(table, plan_columns(table.schema)), ["text", "text"])
    assert rows == [("-1.50", "k")]
