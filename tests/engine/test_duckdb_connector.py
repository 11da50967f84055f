"""The `duckdb` connector against a real DuckDB file: reads, modes, schema evolution, transactions."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pytest
from pydantic import ValidationError

from engine.connectors import registry
from engine.connectors.duckdb_connector import DuckDBConnector, DuckDBSink, DuckDBSource
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.store.historian import Historian

ORDERS = pl.DataFrame({"id": [1, 2, 3], "product": ["bolt", "nut", "gear"], "price": [0.5, 0.25, 12.0]})


@pytest.fixture
def ctx(tmp_path):
    historian = Historian(tmp_path / "data" / "historian.duckdb")
    yield RunContext(base_dir=tmp_path, historian=historian)
    historian.close()


def sink(ctx: RunContext, **config) -> DuckDBSink:
    return DuckDBConnector.make_sink(DuckDBConnector.SinkConfig.model_validate(config), ctx, "out")


def source(ctx: RunContext, **config) -> DuckDBSource:
    return DuckDBConnector.make_source(DuckDBConnector.SourceConfig.model_validate(config), ctx, "in")


def write(ctx: RunContext, *batches: pl.DataFrame, **config) -> None:
    out = sink(ctx, **config)
    out.open()
    for batch in batches:
        out.write(batch)
    out.close()


def table(ctx: RunContext, name: str = "orders", order: str = "id") -> pl.DataFrame:
    return pl.concat(list(source(ctx, query=f"SELECT * FROM {name} ORDER BY {order}").read()))


def column_types(ctx: RunContext, name: str = "orders") -> dict[str, str]:
    cur = ctx.historian.cursor()
    try:
        return dict(cur.execute(f"SELECT column_name, column_type FROM (DESCRIBE {name})").fetchall())
    finally:
        cur.close()


# ---- source ------------------------------------------------------------------------------------
def test_registry_knows_duckdb():
    assert registry.get("DuckDB") is DuckDBConnector
    assert DuckDBConnector.describe()["roles"] == ["source", "destination"]


def test_reads_a_table_and_a_query(ctx):
    write(ctx, ORDERS, table="orders")
    assert table(ctx).equals(ORDERS)
    cheap = pl.concat(
        list(source(ctx, query="SELECT product FROM orders WHERE price < 1 ORDER BY id").read())
    )
    assert cheap["product"].to_list() == ["bolt", "nut"]


def test_reads_in_batches_and_stops_at_the_limit(ctx):
    batches = list(source(ctx, query="SELECT range AS i FROM range(25)").read(batch_rows=10))
    assert [b.height for b in batches] == [10, 10, 5]
    limited = list(source(ctx, query="SELECT range AS i FROM range(1000000)").read(limit=3, batch_rows=2))
    assert [b["i"].to_list() for b in limited] == [[0, 1], [2]]


def test_schema_without_reading_rows(ctx):
    write(ctx, ORDERS, table="orders")
    assert source(ctx, table="orders").schema() == ORDERS.schema
    assert source(ctx, table="missing").schema() is None
    assert source(RunContext(), table="orders").schema() is None  # no historian: unknown


def test_check_and_read_of_a_missing_table(ctx):
    with pytest.raises(
        ConnectorError, match=r"historian.duckdb:missing: Catalog Error: Table with name missing"
    ):
        source(ctx, table="missing").check()
    with pytest.raises(ConnectorError, match="Table with name missing does not exist"):
        list(source(ctx, table="missing").read())


def test_a_query_must_be_one_select(ctx):
    write(ctx, ORDERS, table="orders")
    with pytest.raises(ConnectorError, match="give one SELECT statement"):
        list(source(ctx, query="DELETE FROM orders").read())
    with pytest.raises(ConnectorError, match="give one SELECT statement"):
        list(source(ctx, query="SELECT 1; DROP TABLE orders").read())
    assert table(ctx).height == 3


def test_timestamps_come_out_in_utc(ctx):
    frame = next(iter(source(ctx, query="SELECT TIMESTAMPTZ '2026-01-01 09:00:00+01' AS at").read()))
    assert frame.schema["at"] == pl.Datetime("us", "UTC")
    assert frame["at"][0] == dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC)


def test_another_database_file(ctx, tmp_path):
    write(ctx, ORDERS, table="orders", database="other/plant.duckdb")
    assert (tmp_path / "other" / "plant.duckdb").is_file()
    back = pl.concat(list(source(ctx, table="orders", database="other/plant.duckdb").read()))
    assert back.sort("id").equals(ORDERS)
    assert source(ctx, table="orders").schema() is None  # not in the historian
    with pytest.raises(ConnectorError, match=r"nope\.duckdb: file not found"):
        list(source(ctx, table="orders", database="nope.duckdb").read())


# ---- sink --------------------------------------------------------------------------------------
def test_append_creates_then_appends(ctx):
    write(ctx, ORDERS, table="orders")
    write(ctx, ORDERS.head(1), ORDERS.tail(1), table="orders")
    assert table(ctx)["id"].to_list() == [1, 1, 2, 3, 3]


def test_describe_target(ctx):
    out = sink(ctx, table="main.orders")
    out.open()
    assert out.describe_target() == "historian.duckdb:main.orders"
    out.abort()


def test_schema_evolution_adds_columns(ctx):
    write(ctx, ORDERS, table="orders")
    write(
        ctx,
        pl.DataFrame({"id": [4], "plant": ["north"]}),
        pl.DataFrame({"id": [5], "PLANT": ["south"]}),
        table="orders",
    )
    back = table(ctx)
    assert back.columns == ["id", "product", "price", "plant"]
    assert back.filter(pl.col("id") >= 4).select("id", "plant", "price").to_dicts() == [
        {"id": 4, "plant": "north", "price": None},
        {"id": 5, "plant": "south", "price": None},
    ]


def test_replace(ctx):
    write(ctx, ORDERS, table="orders")
    write(
        ctx,
        pl.DataFrame({"id": [7], "other": ["x"]}),
        pl.DataFrame({"id": [8], "other": ["y"]}),
        table="orders",
        mode="replace",
    )
    assert table(ctx).to_dicts() == [{"id": 7, "other": "x"}, {"id": 8, "other": "y"}]


def test_replace_with_no_rows_empties_the_table(ctx):
    write(ctx, ORDERS, table="orders")
    write(ctx, table="orders", mode="replace")
    assert table(ctx).height == 0
    assert list(column_types(ctx)) == ["id", "product", "price"]


def test_upsert_updates_matching_keys_and_inserts_the_rest(ctx):
    write(ctx, ORDERS, table="orders")
    change = pl.DataFrame({"id": [2, 4, 4], "price": [0.3, 9.0, 9.5]})  # id 4 twice: the last one wins
    write(ctx, change, table="orders", mode="upsert", keys=["id"])
    assert table(ctx).to_dicts() == [
        {"id": 1, "product": "bolt", "price": 0.5},
        {"id": 2, "product": "nut", "price": 0.3},  # columns not in the batch keep their value
        {"id": 3, "product": "gear", "price": 12.0},
        {"id": 4, "product": None, "price": 9.5},
    ]


def test_upsert_on_two_keys_into_a_new_table(ctx):
    rows = pl.DataFrame({"site": ["a", "a", "b"], "tag": ["t1", "t1", "t1"], "v": [1, 2, 3]})
    write(ctx, rows, table="latest", mode="upsert", keys=["site", "tag"])
    write(
        ctx,
        pl.DataFrame({"site": ["b"], "tag": ["t1"], "v": [30]}),
        table="latest",
        mode="upsert",
        keys=["site", "tag"],
    )
    assert table(ctx, "latest", "site").to_dicts() == [
        {"site": "a", "tag": "t1", "v": 2},
        {"site": "b", "tag": "t1", "v": 30},
    ]


def test_upsert_with_a_key_missing_from_the_data(ctx):
    out = sink(ctx, table="orders", mode="upsert", keys=["sku"])
    out.open()
    with pytest.raises(ConnectorError, match="key column 'sku' is not in the data"):
        out.write(ORDERS)
    out.abort()


def test_types_keep_time_zones_structs_and_lists(ctx):
    rows = pl.DataFrame(
        {
            "aware": pl.Series([dt.datetime(2026, 1, 1, 8)]).dt.replace_time_zone("UTC"),
            "naive": [dt.datetime(2026, 1, 1, 8)],
            "customer": [{"name": "Ann", "age": 40}],
            "tags": [["a", "b"]],
        }
    )
    write(ctx, rows, table="typed")
    assert column_types(ctx, "typed") == {
        "aware": "TIMESTAMP WITH TIME ZONE",
        "naive": "TIMESTAMP",
        "customer": 'STRUCT("name" VARCHAR, age BIGINT)',
        "tags": "VARCHAR[]",
    }
    assert table(ctx, "typed", "naive").equals(rows)


# ---- one transaction ---------------------------------------------------------------------------
def test_abort_leaves_the_table_unchanged(ctx):
    write(ctx, ORDERS, table="orders")
    out = sink(ctx, table="orders")
    out.open()
    out.write(ORDERS)
    out.write(pl.DataFrame({"id": [9], "new_column": ["x"]}))
    out.abort()
    assert table(ctx).equals(ORDERS)
    assert list(column_types(ctx)) == ["id", "product", "price"]


def test_an_aborted_replace_keeps_the_old_table(ctx):
    write(ctx, ORDERS, table="orders")
    out = sink(ctx, table="orders", mode="replace")
    out.open()
    out.write(pl.DataFrame({"z": [1]}))
    out.abort()
    assert table(ctx).equals(ORDERS)


def test_an_aborted_first_write_creates_no_table(ctx):
    out = sink(ctx, table="fresh")
    out.open()
    out.write(ORDERS)
    out.abort()
    assert source(ctx, table="fresh").schema() is None


def test_a_failing_batch_rolls_everything_back(ctx):
    write(ctx, ORDERS, table="orders")
    out = sink(ctx, table="orders")
    out.open()
    out.write(ORDERS)
    out.flush()  # written into the open transaction
    # The insert runs beside the writer: the error comes from this write (when the insert has
    # reached the batch already) or at the latest from the flush, which the executor calls on
    # every destination before any of them commits.
    with pytest.raises(ConnectorError, match=r"historian.duckdb:orders: Conversion Error"):
        out.write(pl.DataFrame({"id": ["not a number"]}))
        out.flush()
    out.abort()  # the executor still calls abort: harmless
    assert table(ctx).equals(ORDERS)


def test_nothing_is_visible_before_close(ctx):
    write(ctx, ORDERS, table="orders")
    out = sink(ctx, table="orders")
    out.open()
    out.write(ORDERS)
    assert table(ctx).height == 3  # another cursor sees the committed state only
    out.close()
    assert table(ctx).height == 6


# ---- configuration -----------------------------------------------------------------------------
def test_upsert_without_keys_names_keys():
    with pytest.raises(ValidationError) as info:
        DuckDBConnector.SinkConfig.model_validate({"table": "t", "mode": "upsert"})
    assert info.value.errors()[0]["loc"] == ("keys",)
    assert "mode upsert needs `keys`" in str(info.value)


def test_table_or_query_exactly_one():
    with pytest.raises(ValidationError, match="give either `table` or `query`, not both"):
        DuckDBConnector.SourceConfig.model_validate({"table": "t", "query": "SELECT 1"})
    with pytest.raises(ValidationError, match="give `table` or `query`"):
        DuckDBConnector.SourceConfig.model_validate({})


@pytest.mark.parametrize("name", ["orders; DROP TABLE x", "a.b.c", "1st", 'x"y', ""])
def test_table_names_are_identifiers(name):
    with pytest.raises(ValidationError, match="letters, digits and underscores"):
        DuckDBConnector.SinkConfig.model_validate({"table": name})


def test_quoted_names_allow_reserved_words(ctx):
    write(ctx, pl.DataFrame({"at": [1], "select": [2]}), table="main.order")
    cur = ctx.historian.cursor()
    assert cur.execute('SELECT "at", "select" FROM main."order"').fetchall() == [(1, 2)]
    cur.close()


def test_no_historian_and_no_database():
    out = sink(RunContext(), table="orders")
    with pytest.raises(ConnectorError, match="no embedded historian"):
        out.open()


def test_the_database_can_be_the_historian_file(ctx, tmp_path):
    write(ctx, ORDERS, table="orders", database=str(tmp_path / "data" / "historian.duckdb"))
    assert table(ctx).equals(ORDERS)  # same instance: no second connection to the same file


def test_sink_check(ctx, tmp_path):
    sink(ctx, table="orders").check()
    sink(ctx, table="orders", database="x/y.duckdb").check()
    assert duckdb.connect(str(tmp_path / "x" / "y.duckdb")).execute("SELECT 1").fetchone() == (1,)


def test_all_null_and_categorical_columns_are_stored_as_text(ctx):
    first = pl.DataFrame({"id": [1], "note": [None], "kind": pl.Series(["a"], dtype=pl.Categorical)})
    write(ctx, first, pl.DataFrame({"id": [2], "note": ["later"], "kind": ["new kind"]}), table="loose")
    assert column_types(ctx, "loose") == {"id": "BIGINT", "note": "VARCHAR", "kind": "VARCHAR"}
    assert table(ctx, "loose")["kind"].to_list() == ["a", "new kind"]


def test_describe_lists_both_roles_with_their_schemas():
    described = DuckDBConnector.describe()
    assert set(described["destination_schema"]["properties"]) == {"table", "database", "mode", "keys"}
    assert set(described["source_schema"]["properties"]) == {"table", "query", "database"}


def test_no_progress_bar_on_our_stdout(tmp_path):
    """DuckDB draws a progress bar on stdout for queries over 2 s; it would break `--json` output."""
    from engine.store.historian import Historian

    historian = Historian(tmp_path / "h.duckdb")
    cur = historian.cursor()
    assert cur.execute("SELECT current_setting('enable_progress_bar')").fetchall() == [(False,)]
    cur.close()
    historian.close()


def tables_in(ctx: RunContext) -> set[str]:
    cur = ctx.historian.cursor()
    try:
        return {r[0] for r in cur.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        cur.close()


def test_replace_builds_a_stage_and_swaps_it_in_at_commit(ctx):
    write(ctx, ORDERS, table="orders")
    out = sink(ctx, table="orders", mode="replace")
    out.open()
    out.write(pl.DataFrame({"id": [7], "other": ["x"]}))
    out.flush()  # small batches are held back until about a million rows or the end of the run
    # Until commit, readers still see the old table; the new rows wait in a stage named after the run.
    assert table(ctx).height == 3
    assert any(t.startswith("_stage_orders_") for t in tables_in(ctx))
    out.close()
    assert table(ctx).to_dicts() == [{"id": 7, "other": "x"}]
    assert tables_in(ctx) == {"orders"}


def test_an_aborted_replace_keeps_the_old_table_and_no_stage(ctx):
    write(ctx, ORDERS, table="orders")
    out = sink(ctx, table="orders", mode="replace")
    out.open()
    out.write(pl.DataFrame({"id": [7], "other": ["x"]}))
    out.abort()
    assert table(ctx).equals(ORDERS)
    assert tables_in(ctx) == {"orders"}


def test_replace_in_a_schema(ctx):
    write(ctx, ORDERS, table="plant.orders", mode="replace")
    write(ctx, ORDERS.head(1), table="plant.orders", mode="replace")
    assert table(ctx, "plant.orders").height == 1


def test_batches_stream_into_one_insert_visible_only_at_close(ctx):
    write(ctx, ORDERS, table="orders")
    out = sink(ctx, table="orders")
    out.open()
    feeds = set()
    for i in range(1, 6):
        out.write(ORDERS.with_columns(pl.col("id") + 10 * i))
        feeds.add(id(out.feed))
    assert len(feeds) == 1 and out.feed is not None  # one INSERT statement reads every batch
    out.flush()
    assert out.feed is None
    assert table(ctx).height == 3  # another reader sees nothing before the commit
    out.close()
    assert table(ctx).height == 18


def test_a_changed_batch_schema_starts_a_new_insert_and_adds_the_column(ctx):
    out = sink(ctx, table="orders")
    out.open()
    out.write(ORDERS)
    first = out.feed
    out.write(ORDERS.with_columns(pl.lit("x").alias("extra")))
    assert out.feed is not first
    out.close()
    result = table(ctx)
    assert result.height == 6 and result.get_column("extra").null_count() == 3


def test_an_insert_that_fails_mid_stream_rolls_back_with_one_line(ctx):
    write(ctx, ORDERS, table="orders")
    out = sink(ctx, table="orders")
    out.open()
    out.write(ORDERS)
    with pytest.raises(ConnectorError, match=r"historian.duckdb:orders: .*") as err:
        out.write(ORDERS.with_columns(pl.lit("not a number").alias("id")))
        out.close()
    assert "\n" not in str(err.value)
    assert out.con is None and out.feed is None
    assert table(ctx).equals(ORDERS)


def test_abort_stops_a_running_insert(ctx):
    write(ctx, ORDERS, table="orders")
    out = sink(ctx, table="orders")
    out.open()
    out.write(ORDERS.with_columns(pl.col("id") + 100))
    feed = out.feed
    out.abort()
    assert feed is not None and not feed.thread.is_alive()
    assert table(ctx).equals(ORDERS)
