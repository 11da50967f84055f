"""The `mysql` connector against the real MariaDB on 127.0.0.1:3306 (root, database `test`): round
trip of every common type, streaming, params, modes, atomic failure, incremental runs, errors."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import polars as pl
import pymysql
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.connectors.sql_common import WatermarkStore
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.runner import run_pipeline
from engine.spec.validate import validate
from engine.workspace import Workspace
from tests.conftest import require_service
from tests.connectors import nodes

pytestmark = pytest.mark.services
BASE = {"host": "127.0.0.1", "port": 3306, "database": "test", "username": "root", "connect_timeout": 3}


def sql(statement: str, args=None):
    conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute(statement, args)
        return list(cur.fetchall()) if cur.description else None
    finally:
        conn.close()


@pytest.fixture
def table():
    require_service("mariadb")
    name = "t_sql_" + uuid.uuid4().hex[:10]
    yield name
    sql(f"DROP TABLE IF EXISTS `{name}`")


@pytest.fixture
def ctx(tmp_path):
    return nodes.run_context(tmp_path)


def source(ctx, name="src", **config):
    return nodes.source("mysql", ctx, {**BASE, **config}, name)


def sink(ctx, **config):
    return nodes.sink("mysql", ctx, {**BASE, **config})


def write(ctx, *batches, **config):
    nodes.write_all(sink(ctx, **config), batches)


def read(ctx, **config) -> pl.DataFrame:
    return nodes.read_all(source(ctx, **config))


def test_round_trip_of_every_common_type(ctx, table):
    base = dt.datetime(2024, 5, 1, 12, 30, 15, 123456)
    frame = pl.DataFrame(
        {
            "id": [1, 2, 3],
            "small": pl.Series([1, None, -3], dtype=pl.Int16),
            "int": pl.Series([10, 20, None], dtype=pl.Int32),
            "value": [0.5, None, -1e300],
            "name": ["a", 'it\'s "q"\nline, with comma \\ and NULL', None],
            "empty": ["", "NULL", None],
            "flag": [True, False, None],
            "ts": [base, None, base + dt.timedelta(days=4000)],
            "day": [dt.date(2024, 1, 2), None, dt.date(1970, 1, 1)],
            "blob": [b'\x00\x01,"\n', None, b"zz"],
            "price": pl.Series(
                [decimal.Decimal("1.25"), None, decimal.Decimal("-3.50")], dtype=pl.Decimal(10, 2)
            ),
        }
    )
    write(ctx, frame, table=table)
    back = read(ctx, table=table).sort("id")
    assert back["name"].to_list() == frame["name"].to_list()
    assert back["empty"].to_list() == frame["empty"].to_list()
    assert back["ts"].to_list() == frame["ts"].to_list()
    assert back["day"].to_list() == frame["day"].to_list()
    assert back["blob"].to_list() == frame["blob"].to_list()
    assert back["value"].to_list() == frame["value"].to_list()
    assert back["small"].to_list() == [1, None, -3] and back["int"].to_list() == [10, 20, None]
    assert [None if v is None else bool(v) for v in back["flag"].to_list()] == [True, False, None]
    assert [None if v is None else decimal.Decimal(str(v)) for v in back["price"].to_list()] == frame[
        "price"
    ].to_list()
    tz = pl.DataFrame({"id": [9], "at": [base]}).with_columns(
        pl.col("at").dt.replace_time_zone("Europe/Berlin")
    )
    write(ctx, tz, table=table + "z")
    try:
        assert read(ctx, table=table + "z")["at"].to_list() == [base - dt.timedelta(hours=2)]  # stored in UTC
    finally:
        sql(f"DROP TABLE `{table}z`")


def test_streams_in_batches_with_params(ctx, table):
    sql(f"CREATE TABLE `{table}` (id BIGINT, h VARCHAR(40))")
    sql(f"INSERT INTO `{table}` SELECT seq, md5(seq) FROM seq_1_to_200000")
    reader = source(
        ctx, query=f"SELECT id, h FROM `{table}` WHERE id > %s AND h <> %s", params=[100, "x"]
    ).read(batch_rows=10_000)
    first = next(reader)
    assert 0 < first.height < 199_900  # out before the whole result was fetched
    assert first.height + sum(b.height for b in reader) == 199_900


def test_no_rows_still_gives_the_columns(ctx, table):
    sql(f"CREATE TABLE `{table}` (id BIGINT, name TEXT)")
    (frame,) = list(source(ctx, table=table).read())
    assert frame.height == 0 and frame.columns == ["id", "name"]


def test_modes_append_upsert_replace(ctx, table):
    write(ctx, pl.DataFrame({"k": [1, 2], "v": ["a", "b"]}), table=table)
    write(ctx, pl.DataFrame({"k": [3], "v": ["c"]}), table=table)
    write(ctx, pl.DataFrame({"k": [2, 4, 4], "v": ["B", "d", "D"]}), table=table, mode="upsert", keys=["k"])
    assert sql(f"SELECT k, v FROM `{table}` ORDER BY k") == [(1, "a"), (2, "B"), (3, "c"), (4, "D")]
    write(ctx, pl.DataFrame({"other": [1.5]}), table=table, mode="replace")
    assert sql(f"SELECT * FROM `{table}`") == [(1.5,)]


def test_a_failed_run_leaves_the_table_as_it_was(ctx, table):
    write(ctx, pl.DataFrame({"k": [1, 2]}), table=table)
    for mode in ("append", "replace", "upsert"):
        s = sink(ctx, table=table, mode=mode, keys=["k"] if mode == "upsert" else None)
        s.open()
        s.write(pl.DataFrame({"k": [7, 8]}))
        s.abort()
        assert sql(f"SELECT k FROM `{table}` ORDER BY k") == [(1,), (2,)]
    assert not sql("SHOW TABLES LIKE '\\_agg\\_stage%%'")  # no stage left behind
    with pytest.raises(ConnectorError, match="no such table"):
        write(ctx, pl.DataFrame({"k": [1]}), table=table + "_absent", create=False)


def test_errors_one_line_with_host_never_the_password(ctx, table):
    with pytest.raises(ConnectorError) as err:
        list(source(ctx, table="x", port=1, password="hunter2").read())
    text = str(err.value)
    assert text.startswith("mysql 127.0.0.1:1/test: ") and "hunter2" not in text and "\n" not in text
    with pytest.raises(ConnectorError) as err:
        list(source(ctx, table="no_such_table_x").read())
    assert str(err.value).startswith("mysql 127.0.0.1:3306/test: ") and "no_such_table_x" in str(err.value)
    assert "\n" not in str(err.value)


def test_check_reports_version_and_permissions(ctx, table):
    write(ctx, pl.DataFrame({"k": [1]}), table=table)
    line = source(ctx, table=table).check()
    assert line.startswith("MariaDB 10.") and "can SELECT, INSERT, CREATE" in line
    assert "can SELECT, INSERT, CREATE" in sink(ctx, table=table).check()


def test_incremental_runs(tmp_path, table):
    sql(f"CREATE TABLE `{table}` (id BIGINT, v DOUBLE)")
    sql(f"INSERT INTO `{table}` SELECT seq, seq FROM seq_1_to_5")
    out = tmp_path / "out.sqlite"

    def doc(broken=False):
        dest = {"path": str(out), "table": "copy", "mode": "upsert" if broken else "append"}
        if broken:
            dest["keys"] = ["missing_column"]
        return {
            "name": "my-inc",
            "spec_version": 1,
            "nodes": [
                {
                    "id": "src",
                    "kind": "source",
                    "connector_type": "mysql",
                    "config": {**BASE, "table": table, "incremental": {"column": "id", "initial": 0}},
                },
                {
                    "id": "dst",
                    "kind": "destination",
                    "inputs": ["src"],
                    "connector_type": "sqlite",
                    "config": dest,
                },
            ],
        }

    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc()), ws, base_dir=tmp_path)
        assert record["status"] == "success", record["error"]
        assert record["rows_out"] == 5
        sql(f"INSERT INTO `{table}` SELECT seq, seq FROM seq_6_to_7")
        assert run_pipeline(validate(doc(broken=True)), ws, base_dir=tmp_path)["status"] == "failed"
        assert WatermarkStore(tmp_path / "data").get("my-inc", "src", "id") == (True, 5)
        assert run_pipeline(validate(doc()), ws, base_dir=tmp_path)["rows_out"] == 2
        assert run_pipeline(validate(doc()), ws, base_dir=tmp_path)["rows_out"] == 0


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
)
def test_client_side_binding_round_trips_any_text(text):
    """A text parameter bound on the client reads back as itself from MariaDB (quotes, backslashes,
    `%s` and comment marks inside), through the source itself."""
    require_service("mariadb")
    ctx = RunContext(run_id="h", pipeline="p")
    (frame,) = list(source(ctx, query="SELECT %s AS v, %s AS n", params=[text, 7]).read())
    assert frame["v"].to_list() == [text] and frame["n"].to_list() == [7]


def test_ssl_mode_required_against_a_server_without_tls_is_one_line(ctx):
    require_service("mariadb")
    for make in (
        lambda: list(source(ctx, table="x", ssl_mode="required").read()),
        sink(ctx, table="x", ssl_mode="required").open,
    ):
        with pytest.raises(ConnectorError) as err:
            make()
        text = str(err.value)
        assert text.startswith("mysql 127.0.0.1:3306/test") and "\n" not in text and "SSL" in text
