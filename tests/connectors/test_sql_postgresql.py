"""The `postgresql` source (ADBC) and the destination's batch modes against the real server on
127.0.0.1:5432: round trip of every common type, streaming, params, incremental runs, modes,
atomic replace, one-line errors."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import polars as pl
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.connectors import registry
from engine.connectors.sql_common import WatermarkStore
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.runner import run_pipeline
from engine.spec.validate import validate
from engine.workspace import Workspace
from tests.conftest import require_service
from tests.connectors import nodes

pytestmark = pytest.mark.services
DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
BASE = {"host": "127.0.0.1", "port": 5432, "database": "test", "username": "postgres", "connect_timeout": 3}


def sql(statement: str, params=None):
    with psycopg.connect(DSN, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None


@pytest.fixture
def table():
    require_service("postgresql")
    name = "t_sql_" + uuid.uuid4().hex[:10]
    yield name
    sql(f'DROP TABLE IF EXISTS "{name}"')


@pytest.fixture
def ctx(tmp_path):
    return nodes.run_context(tmp_path)


def source(ctx, name="src", **config):
    return nodes.source("postgresql", ctx, {**BASE, **config}, name)


def write(ctx, *batches, **config):
    nodes.write_all(nodes.sink("postgresql", ctx, {**BASE, "delivery": "direct", **config}), batches)


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
            "real": pl.Series([1.5, 2.5, None], dtype=pl.Float32),
            "name": ["a", 'it\'s "q"\nline', None],
            "flag": [True, False, None],
            "ts": [base, None, base + dt.timedelta(days=4000)],
            "tsz": pl.Series([base, base, None]).dt.replace_time_zone("UTC"),
            "day": [dt.date(2024, 1, 2), None, dt.date(1970, 1, 1)],
            "clock": [dt.time(1, 2, 3, 4), None, dt.time(23, 59)],
            "blob": [b"\x00\x01", None, b"zz"],
            "price": pl.Series(
                [decimal.Decimal("1.25"), None, decimal.Decimal("-3.50")], dtype=pl.Decimal(10, 2)
            ),
        }
    )
    write(ctx, frame, table=table)
    back = read(ctx, table=table).drop("_key").sort("id")
    assert back.schema["tsz"] == pl.Datetime("us", "UTC")
    assert back.equals(frame), (back, frame)


def test_streams_in_batches_with_bounded_params(ctx, table):
    sql(f'CREATE TABLE "{table}" AS SELECT i AS id, md5(i::text) AS h FROM generate_series(1, 400000) i')
    reader = source(
        ctx, query=f'SELECT id, h FROM "{table}" WHERE id > $1 AND h <> $2', params=[100, "x"]
    ).read(batch_rows=20_000)
    first = next(reader)
    assert 0 < first.height < 399_900  # out before the whole result was fetched
    total = first.height + sum(b.height for b in reader)
    assert total == 399_900


def test_no_rows_still_gives_the_columns(ctx, table):
    sql(f'CREATE TABLE "{table}" (id bigint, name text)')
    (frame,) = list(source(ctx, table=table).read())
    assert frame.height == 0 and frame.columns == ["id", "name"]


def test_modes_append_upsert_replace(ctx, table):
    write(ctx, pl.DataFrame({"k": [1, 2], "v": ["a", "b"]}), table=table, key=["k"])
    write(ctx, pl.DataFrame({"k": [2, 3], "v": ["B", "c"]}), table=table, key=["k"], mode="upsert")
    assert sql(f'SELECT k, v FROM "{table}" ORDER BY k') == [(1, "a"), (2, "B"), (3, "c")]
    write(ctx, pl.DataFrame({"other": [1.5, 2.5]}), table=table, mode="replace")
    assert sql(f'SELECT other FROM "{table}" ORDER BY other') == [(1.5,), (2.5,)]


def test_a_failed_replace_leaves_the_old_table(ctx, table):
    write(ctx, pl.DataFrame({"k": [1, 2]}), table=table)
    with pytest.raises(ConnectorError) as err:
        write(ctx, pl.DataFrame({"k": [7], "text": ["nul \x00 inside"]}), table=table, mode="replace")
    assert "\n" not in str(err.value)
    assert sql(f'SELECT k FROM "{table}" ORDER BY k') == [(1,), (2,)]


def test_create_false_and_replace_needs_direct(ctx, table):
    with pytest.raises(ConnectorError, match="no such table"):
        write(ctx, pl.DataFrame({"k": [1]}), table=table, create=False)
    cls = registry.get("postgresql")
    with pytest.raises(ValueError, match="mode replace needs delivery direct"):
        cls.SinkConfig.model_validate(
            {**BASE, "table": table, "mode": "replace", "delivery": "store_and_forward"}
        )


def test_errors_one_line_with_host_never_the_password(ctx):
    require_service("postgresql")
    with pytest.raises(ConnectorError) as err:
        list(source(ctx, table="x", port=1, password="hunter2").read())
    text = str(err.value)
    assert text.startswith("postgresql 127.0.0.1:1/test: ") and "hunter2" not in text and "\n" not in text
    with pytest.raises(ConnectorError, match=r"^postgresql 127\.0\.0\.1:5432/test: .*no_such_table_x"):
        list(source(ctx, table="no_such_table_x").read())


def test_check_reports_version_and_permissions(ctx, table):
    write(ctx, pl.DataFrame({"k": [1]}), table=table)
    line = source(ctx, table=table).check()
    assert line.startswith("PostgreSQL 1") and "can SELECT, INSERT, CREATE on public." in line
    cls = registry.get("postgresql")
    target = cls.make_target(cls.SinkConfig.model_validate({**BASE, "table": table}), ctx, "dst")
    assert "can SELECT, INSERT, CREATE" in target.check()


def test_test_connection_through_the_engine_api_shows_the_version_line(tmp_path, table):
    """The Connectors page's Test button (and POST /connectors/{id}/test) shows what answered."""
    from engine.api import LocalEngine

    require_service("postgresql")
    sql(f'CREATE TABLE "{table}" (k bigint)')
    with LocalEngine(tmp_path / "data") as engine:
        for role, config in (("source", {**BASE, "table": table}), ("destination", {**BASE, "table": table})):
            result = engine.connectors.test("postgresql", role, config).result(60)
            assert result["ok"] is True and result["error"] is None, result
            assert result["detail"].startswith("PostgreSQL 1") and "can SELECT" in result["detail"]


def test_incremental_runs(tmp_path, table):
    sql(f'CREATE TABLE "{table}" (id bigint, at timestamptz)')
    sql(
        f"INSERT INTO \"{table}\" SELECT i, '2024-01-01'::timestamptz + i * interval '1 minute' FROM generate_series(1, 5) i"
    )
    out = tmp_path / "out.sqlite"

    def doc(broken=False):
        dest = {"path": str(out), "table": "copy", "mode": "upsert" if broken else "append"}
        if broken:
            dest["keys"] = ["missing_column"]
        return {
            "name": "pg-inc",
            "spec_version": 1,
            "nodes": [
                {
                    "id": "src",
                    "kind": "source",
                    "connector_type": "postgresql",
                    "config": {
                        **BASE,
                        "table": table,
                        "incremental": {"column": "at", "initial": "2024-01-01T00:02:00Z"},
                    },
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
        assert record["rows_out"] == 3  # above the initial mark: minutes 3, 4, 5
        sql(
            f"INSERT INTO \"{table}\" SELECT i, '2024-01-01'::timestamptz + i * interval '1 minute' FROM generate_series(6, 7) i"
        )
        assert run_pipeline(validate(doc(broken=True)), ws, base_dir=tmp_path)["status"] == "failed"
        found, mark = WatermarkStore(tmp_path / "data").get("pg-inc", "src", "at")
        assert found and mark == dt.datetime(2024, 1, 1, 0, 5, tzinfo=dt.UTC)
        record = run_pipeline(validate(doc()), ws, base_dir=tmp_path)
        assert record["rows_out"] == 2, record["error"]
        assert run_pipeline(validate(doc()), ws, base_dir=tmp_path)["rows_out"] == 0


def test_ssl_mode_require_against_a_server_without_tls_is_one_line(ctx):
    require_service("postgresql")
    with pytest.raises(ConnectorError) as err:
        list(source(ctx, table="x", ssl_mode="require").read())
    text = str(err.value)
    assert text.startswith("postgresql 127.0.0.1:5432/test: ") and "\n" not in text
    assert "SSL" in text or "ssl" in text


@settings(max_examples=60, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_client_side_binding_round_trips_text_and_floats(text, number):
    """Text and floats bound on the client read back exactly from PostgreSQL through the source."""
    require_service("postgresql")
    ctx = RunContext(run_id="h", pipeline="p")
    (frame,) = list(
        source(ctx, query="SELECT $1::text AS v, $2::float8 AS x, '$1' AS lit", params=[text, number]).read()
    )
    assert frame.row(0) == (text, number, "$1")
