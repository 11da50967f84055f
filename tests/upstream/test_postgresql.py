"""The PostgreSQL upstream target against the real server on 127.0.0.1:5432."""

from __future__ import annotations

import datetime as dt
import decimal

import psycopg
import pyarrow as pa
import pytest

from engine.connectors import registry
from engine.errors import ConnectorError
from engine.outbox.target import DeliveryError, UpstreamTarget
from tests.conftest import require_service
from tests.net import closed_port
from tests.upstream.pg import Logs, count, drop, exists, keys, sql, table_name, tags, target

pytestmark = pytest.mark.services


@pytest.fixture
def table():
    require_service("postgresql")
    name = table_name()
    yield name
    drop(name)


def test_tag_batch_lands_with_its_columns_and_key(table):
    t = target(table)
    assert isinstance(t, UpstreamTarget)
    batch = tags(0, 1000)
    try:
        t.deliver(batch)
    finally:
        t.close()
    columns = sql(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    assert columns == [
        ("timestamp", "timestamp with time zone", "YES"),
        ("tag", "text", "YES"),
        ("value", "double precision", "YES"),
        ("quality", "text", "YES"),
        ("_key", "text", "NO"),
    ]
    index = sql("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,))
    assert index == [(f"CREATE UNIQUE INDEX {table[:50]}__key_uq ON public.{table} USING btree (_key)",)]
    rows = sql(f'SELECT timestamp, tag, value, quality, _key FROM "{table}" ORDER BY _key')
    expected = sorted(
        zip(*(batch.column(c).to_pylist() for c in batch.column_names), strict=True), key=lambda r: r[4]
    )
    assert rows == expected


def test_same_table_twice_leaves_one_copy(table):
    t = target(table)
    try:
        t.deliver(tags(0, 5000))
        t.deliver(tags(0, 5000))  # the forwarder's retry after a lost acknowledgement
        t.deliver(tags(2500, 5000))  # overlapping: half already there
    finally:
        t.close()
    assert count(table) == 7500
    assert keys(table) == sorted(tags(0, 7500).column("_key").to_pylist())


def test_many_edge_boxes_share_one_table(table):
    """The key includes the edge id: the same tags at the same times from two boxes are two rows."""
    one, two = target(table), target(table)
    try:
        one.deliver(tags(0, 100, edge="edge-a"))
        two.deliver(tags(0, 100, edge="edge-b"))
        one.deliver(tags(0, 100, edge="edge-a"))
    finally:
        one.close()
        two.close()
    assert sql(f"SELECT split_part(_key, '/', 1), count(*) FROM \"{table}\" GROUP BY 1 ORDER BY 1") == [
        ("edge-a", 100),
        ("edge-b", 100),
    ]


def test_new_column_is_added(table):
    t = target(table)
    try:
        t.deliver(tags(0, 10))
        later = tags(10, 10).append_column("unit", pa.array(["degC"] * 10))
        t.deliver(later)
    finally:
        t.close()
    assert sql(f'SELECT unit IS NULL, count(*) FROM "{table}" GROUP BY 1 ORDER BY 1') == [
        (False, 10),
        (True, 10),
    ]


def test_upsert_keeps_the_last_row_per_key(table):
    t = target(table, mode="upsert")
    first = pa.table({"_key": ["a", "b"], "value": [1.0, 2.0]})
    again = pa.table({"_key": ["a", "a", "c"], "value": [10.0, 11.0, 3.0]})
    try:
        t.deliver(first)
        t.deliver(again)
    finally:
        t.close()
    assert sql(f'SELECT _key, value FROM "{table}" ORDER BY _key') == [("a", 11.0), ("b", 2.0), ("c", 3.0)]


def test_a_refused_batch_leaves_nothing_in_the_stage(table):
    """The staging COPY runs outside the transaction: after a refused INSERT the stage still holds
    that batch, and the next delivery must not carry it along (nor its poison)."""
    sql(
        f'CREATE TABLE "{table}" (value double precision CHECK (value < 100), _key text COLLATE "C" NOT NULL)'
    )
    t = target(table, mode="upsert")
    try:
        with pytest.raises(DeliveryError) as info:
            t.deliver(pa.table({"value": [1.0, 500.0], "_key": ["a", "poison"]}))
        assert info.value.retryable is False
        t.deliver(pa.table({"value": [2.0], "_key": ["b"]}))
        t.deliver(pa.table({"value": [3.0], "_key": ["c"]}))
    finally:
        t.close()
    assert sql(f'SELECT _key, value FROM "{table}" ORDER BY _key') == [("b", 2.0), ("c", 3.0)]


def test_every_type_round_trips(table):
    values = pa.table(
        {
            "b": pa.array([True, None], pa.bool_()),
            "i16": pa.array([-3, None], pa.int16()),
            "i64": pa.array([2**62, None], pa.int64()),
            "u64": pa.array([2**64 - 1, None], pa.uint64()),
            "f32": pa.array([1.5, None], pa.float32()),
            "dec": pa.array([decimal.Decimal("12.34"), None], pa.decimal128(6, 2)),
            "s": pa.array(['é ✓ "q" \\ \t', None], pa.large_string()),
            "cat": pa.array(["x", None]).dictionary_encode(),
            "bin": pa.array([b"\x00\xff", None], pa.binary()),
            "ts": pa.array([dt.datetime(1999, 12, 31, 23, 59, 59, 999999), None], pa.timestamp("us")),
            "d": pa.array([dt.date(1969, 7, 20), None], pa.date32()),
            "t": pa.array([dt.time(13, 14, 15, 16), None], pa.time64("us")),
            "dur": pa.array([dt.timedelta(days=-2, microseconds=5), None], pa.duration("us")),
            "_key": ["k1", "k2"],
        }
    )
    t = target(table)
    try:
        t.deliver(values)
    finally:
        t.close()
    rows = sql(f'SELECT b, i16, i64, u64, f32, dec, s, cat, bin, ts, d, t, dur FROM "{table}" ORDER BY _key')
    assert rows[0] == (
        True,
        -3,
        2**62,
        decimal.Decimal(2**64 - 1),
        1.5,
        decimal.Decimal("12.34"),
        'é ✓ "q" \\ \t',
        "x",
        b"\x00\xff",
        dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
        dt.date(1969, 7, 20),
        dt.time(13, 14, 15, 16),
        dt.timedelta(days=-2, microseconds=5),
    )
    assert rows[1] == (None,) * 13


def test_naive_times_into_a_timestamptz_column_are_utc(table):
    """The session's time zone is UTC whatever the server's or the role's default: a role here
    defaults to Tokyo time, and the naive 12:00 still lands as 12:00 UTC."""
    role = f"tz_{table}"
    sql(f'CREATE TABLE "{table}" ("timestamp" timestamptz, _key text NOT NULL)')
    sql(f'CREATE UNIQUE INDEX "{table}__key_uq" ON "{table}" (_key)')  # the role may only insert
    sql(f"CREATE ROLE {role} LOGIN")
    try:
        sql(f"ALTER ROLE {role} SET TimeZone = 'Asia/Tokyo'")
        sql(f'GRANT ALL ON "{table}" TO {role}')
        t = target(table, username=role)
        try:
            naive = pa.array([dt.datetime(2026, 1, 1, 12)], pa.timestamp("us"))
            t.deliver(pa.table({"timestamp": naive, "_key": ["a"]}))
        finally:
            t.close()
        assert sql(f'SELECT "timestamp" FROM "{table}"') == [(dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC),)]
    finally:
        drop(table)
        sql(f"DROP ROLE {role}")


def test_refused_data_is_not_retryable_and_changes_nothing(table):
    sql(f'CREATE TABLE "{table}" (tag text, value double precision CHECK (value < 100), _key text NOT NULL)')
    t = target(table)
    try:
        t.deliver(pa.table({"tag": ["a"], "value": [1.0], "_key": ["k0"]}))
        with pytest.raises(DeliveryError) as info:
            t.deliver(pa.table({"tag": ["b", "c"], "value": [2.0, 500.0], "_key": ["k1", "k2"]}))
        assert info.value.retryable is False
        assert "\n" not in str(info.value) and "check constraint" in str(info.value)
        # a column of another type: the server cannot take the batch either
        with pytest.raises(DeliveryError) as info:
            t.deliver(pa.table({"tag": [1], "value": ["x"], "_key": ["k3"]}))
        assert info.value.retryable is False and "value" in str(info.value)
        t.deliver(pa.table({"tag": ["d"], "value": [4.0], "_key": ["k4"]}))  # the link is still fine
    finally:
        t.close()
    assert keys(table) == ["k0", "k4"]
    # the table was made by someone else: the unique index on _key was added to it
    assert sql(
        "SELECT count(*) FROM pg_indexes WHERE tablename = %s AND indexdef LIKE '%%UNIQUE%%'", (table,)
    ) == [(1,)]


def test_table_dropped_under_the_target_is_retryable_then_recreated(table):
    t = target(table)
    try:
        t.deliver(tags(0, 10))
        drop(table)
        with pytest.raises(DeliveryError) as info:
            t.deliver(tags(10, 10))
        assert info.value.retryable is True
        t.deliver(tags(10, 10))
    finally:
        t.close()
    assert count(table) == 10


def _poisoned(batch: pa.Table) -> pa.Table:
    """The batch with its last row's key NULL: the table's NOT NULL refuses it on the server."""
    keys = batch.column("_key").to_pylist()
    return batch.set_column(
        batch.schema.get_field_index("_key"), "_key", pa.array([*keys[:-1], None], pa.large_string())
    )


def test_direct_mode_one_transaction(table):
    t = target(table)
    try:
        t.deliver_all([tags(0, 100), tags(100, 100), tags(0, 50)])
        assert count(table) == 200
        before = keys(table)
        with pytest.raises(DeliveryError) as info:
            t.deliver_all([tags(200, 100), _poisoned(tags(300, 10))])
        assert info.value.retryable is False and "_key" in str(info.value)
        assert keys(table) == before  # the failed run left the table as it was
    finally:
        t.close()


def test_failed_direct_run_does_not_create_the_table(table):
    t = target(table)
    try:
        with pytest.raises(DeliveryError):
            t.deliver_all([tags(0, 10), _poisoned(tags(10, 10))])
        assert not exists(table)
        t.deliver_all([tags(0, 10)])  # the target forgot the rolled-back table: it creates it again
    finally:
        t.close()
    assert count(table) == 10


def test_unreachable_is_retryable():
    t = target("never", port=closed_port(), connect_timeout=2)
    with pytest.raises(DeliveryError) as info:
        t.deliver(tags(0, 1))
    assert info.value.retryable is True and "cannot connect" in str(info.value)
    with pytest.raises(ConnectorError):
        t.check()


def test_ssl_required_by_the_config_is_never_skipped(table):
    """The server here has no TLS: ssl_mode require refuses to go on in clear text."""
    t = target(table, ssl_mode="require", connect_timeout=2)
    with pytest.raises(DeliveryError) as info:
        t.deliver(tags(0, 1))
    assert info.value.retryable is True and "SSL" in str(info.value) and "\n" not in str(info.value)
    assert not exists(table)


def test_login_refused_is_retryable_and_logged_once(table):
    logs = Logs()
    user = f"nobody_{table}"
    for _ in range(3):  # a new target each time, as the forwarder makes one for every reconnect
        t = target(table, logs, username=user, password="hunter2-secret")
        with pytest.raises(DeliveryError) as info:
            t.deliver(tags(0, 1))
        assert info.value.retryable is True
        assert user in str(info.value) and "hunter2" not in str(info.value)
    assert len([line for line in logs if line[0] == "error"]) == 1
    assert "refused the login" in logs[0][1] and "hunter2" not in logs[0][1]


def test_check_and_registry(table):
    connector = registry.get("postgresql")
    assert connector is not None and connector.roles() == ["source", "destination"]
    target(table).check()  # no error


def test_hypertable_path_when_timescale_is_installed(table):
    """TimescaleDB is not installed on this machine; when it is, the table is a hypertable."""
    installed = sql("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")[0][0]
    t = target(table)
    try:
        t.deliver(tags(0, 10))
    finally:
        t.close()
    hypertables = (
        sql("SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = %s", (table,))[
            0
        ][0]
        if installed
        else 0
    )
    assert hypertables == installed
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test") as conn:
        indexdef = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,)).fetchone()[
            0
        ]
    assert indexdef.endswith('(_key, "timestamp")' if installed else "(_key)")
