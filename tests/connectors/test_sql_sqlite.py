"""The `sqlite` connector: round trips of every common type, modes, atomic failure, streaming,
incremental reads through real runs (the mark advances only when the run commits), errors."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.connectors import registry
from engine.connectors.sql_common import WatermarkStore, bind_client_side, render_literal
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.runner import run_pipeline
from engine.spec.validate import validate
from engine.workspace import Workspace


def typed_frame(n: int = 3) -> pl.DataFrame:
    base = dt.datetime(2024, 5, 1, 12, 30, 15, 123456)
    return pl.DataFrame(
        {
            "id": list(range(n)),
            "small": pl.Series([1, -2, None][:n] + [3] * max(0, n - 3), dtype=pl.Int16),
            "value": [0.5, None, -1e10][:n] + [2.5] * max(0, n - 3),
            "name": ["a", 'it\'s "quoted"\nnew line', None][:n] + ["x"] * max(0, n - 3),
            "flag": [True, False, None][:n] + [True] * max(0, n - 3),
            "ts": [base, None, base + dt.timedelta(days=400)][:n] + [base] * max(0, n - 3),
            "tsz": pl.Series([base, base, None][:n] + [base] * max(0, n - 3)).dt.replace_time_zone("UTC"),
            "day": [dt.date(2024, 1, 2), None, dt.date(1999, 12, 31)][:n]
            + [dt.date(2000, 1, 1)] * max(0, n - 3),
            "blob": [b"\x00\x01", None, b"zz"][:n] + [b""] * max(0, n - 3),
        }
    )


@pytest.fixture
def ctx(tmp_path):
    return RunContext(run_id="r1", pipeline="p", data_dir=tmp_path, base_dir=tmp_path)


def sink(ctx, **config):
    cls = registry.get("sqlite")
    return cls.make_sink(cls.SinkConfig.model_validate({"path": "db.sqlite", **config}), ctx, "dst")


def source(ctx, name="src", **config):
    cls = registry.get("sqlite")
    return cls.make_source(cls.SourceConfig.model_validate({"path": "db.sqlite", **config}), ctx, name)


def write(ctx, *batches, **config):
    s = sink(ctx, **config)
    s.open()
    for b in batches:
        s.write(b)
    s.close()


def read(ctx, **config) -> pl.DataFrame:
    return pl.concat(list(source(ctx, **config).read()))


def test_round_trip_of_every_common_type(ctx):
    frame = typed_frame()
    write(ctx, frame, table="t")
    back = read(ctx, table="t")
    assert back.schema["flag"] == pl.Boolean
    assert back.schema["ts"] == pl.Datetime("us")
    assert back.schema["tsz"] == pl.Datetime("us", "UTC")
    assert back.schema["day"] == pl.Date
    assert back.cast({"small": pl.Int16}).equals(frame)


def test_no_rows_still_gives_the_columns(ctx):
    write(ctx, pl.DataFrame({"id": [1], "name": ["a"]}), table="t")
    (frame,) = list(source(ctx, query="SELECT id, name FROM t WHERE id > 5").read())
    assert frame.height == 0 and frame.columns == ["id", "name"]


def test_modes_append_replace_upsert(ctx):
    write(ctx, pl.DataFrame({"k": [1, 2], "v": ["a", "b"]}), table="t")
    write(ctx, pl.DataFrame({"k": [3], "v": ["c"]}), table="t", mode="append")
    assert read(ctx, table="t").sort("k")["k"].to_list() == [1, 2, 3]
    write(ctx, pl.DataFrame({"k": [2, 4, 4], "v": ["B", "d", "D"]}), table="t", mode="upsert", keys=["k"])
    assert read(ctx, table="t").sort("k").rows() == [(1, "a"), (2, "B"), (3, "c"), (4, "D")]
    write(ctx, pl.DataFrame({"other": [9.5]}), table="t", mode="replace")
    assert read(ctx, table="t").rows() == [(9.5,)]


def test_a_failed_run_leaves_the_table_as_it_was(ctx):
    write(ctx, pl.DataFrame({"k": [1, 2]}), table="t")
    for mode in ("append", "replace"):
        s = sink(ctx, table="t", mode=mode)
        s.open()
        s.write(pl.DataFrame({"k": [7, 8, 9]}))
        s.abort()
        assert read(ctx, table="t")["k"].to_list() == [1, 2]
    s = sink(ctx, table="t", mode="upsert", keys=["nope"])
    s.open()
    with pytest.raises(ConnectorError, match="key column 'nope' is not in the data"):
        s.write(pl.DataFrame({"k": [5]}))
    assert read(ctx, table="t")["k"].to_list() == [1, 2]


def test_create_false_refuses_a_missing_table(ctx):
    with pytest.raises(ConnectorError, match="no such table"):
        write(ctx, pl.DataFrame({"k": [1]}), table="absent", create=False)


def test_streams_in_batches(ctx):
    write(ctx, pl.DataFrame({"id": range(50_000)}), table="big")
    reader = source(ctx, table="big").read(batch_rows=1000)
    first = next(reader)
    assert first.height == 1000  # the first batch is out before the rest is fetched
    rest = sum(b.height for b in reader)
    assert rest == 49_000


def test_query_with_params_and_limit(ctx):
    write(ctx, pl.DataFrame({"id": range(10), "g": ["a", "b"] * 5}), table="t")
    got = read(ctx, query="SELECT id FROM t WHERE g = ? AND id > ?", params=["a", 2])
    assert got["id"].to_list() == [4, 6, 8]
    assert sum(b.height for b in source(ctx, table="t").read(limit=3)) == 3


def test_errors_are_one_line_naming_the_connector(ctx, tmp_path):
    with pytest.raises(ConnectorError, match=r"^sqlite .*missing.sqlite: file not found$"):
        list(source(ctx, path="missing.sqlite", table="t").read())
    write(ctx, pl.DataFrame({"k": [1]}), table="t")
    with pytest.raises(ConnectorError) as err:
        list(source(ctx, query="SELECT nope FROM t").read())
    assert "\n" not in str(err.value) and str(err.value).startswith("sqlite ")
    assert "can SELECT" in source(ctx, table="t").check()
    assert "can SELECT, INSERT, CREATE" in sink(ctx, table="t").check()


def test_literals_and_client_side_binding():
    assert render_literal("it's", "postgresql") == "'it''s'"
    assert render_literal("a\\'", "mysql") == "'a\\\\'''"
    assert render_literal(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "postgresql").endswith("::timestamptz")
    sql = bind_client_side("SELECT '$1', \"$1\" FROM t WHERE a = $2 AND b = $1 -- $3", [1, "x"], "postgresql")
    assert sql == "SELECT '$1', \"$1\" FROM t WHERE a = 'x' AND b = 1 -- $3"
    assert bind_client_side("SELECT 1 WHERE a = %s AND b = '%s'", [None], "mysql").endswith(
        "a = NULL AND b = '%s'"
    )
    with pytest.raises(ValueError, match="has no value"):
        bind_client_side("SELECT $2", [1], "postgresql")


def _incremental_doc(db: Path, out: Path, *, broken: bool = False) -> dict:
    dest = {"path": str(out), "table": "copy", "mode": "upsert" if broken else "append"}
    if broken:
        dest["keys"] = ["missing_column"]  # fails at the first batch: the run does not commit
    return {
        "name": "inc",
        "spec_version": 1,
        "nodes": [
            {
                "id": "src",
                "kind": "source",
                "connector_type": "sqlite",
                "config": {
                    "path": str(db),
                    "table": "events",
                    "incremental": {"column": "ts", "initial": None},
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


def _add_events(ctx, start: int, count: int) -> None:
    base = dt.datetime(2024, 1, 1)
    write(
        ctx,
        pl.DataFrame(
            {
                "id": range(start, start + count),
                "ts": [base + dt.timedelta(seconds=i) for i in range(start, start + count)],
            }
        ),
        table="events",
    )


def test_incremental_advances_only_when_the_run_commits(ctx, tmp_path):
    db, out = tmp_path / "db.sqlite", tmp_path / "out.sqlite"
    _add_events(ctx, 0, 5)
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(_incremental_doc(db, out)), ws, base_dir=tmp_path)
        assert record["status"] == "success", record["error"]
        assert record["rows_out"] == 5
        found, mark = WatermarkStore(tmp_path / "data").get("inc", "src", "ts")
        assert found and mark == dt.datetime(2024, 1, 1, 0, 0, 4)
        _add_events(ctx, 5, 3)
        record = run_pipeline(validate(_incremental_doc(db, out, broken=True)), ws, base_dir=tmp_path)
        assert record["status"] == "failed"
        assert WatermarkStore(tmp_path / "data").get("inc", "src", "ts")[1] == mark  # not advanced
        record = run_pipeline(validate(_incremental_doc(db, out)), ws, base_dir=tmp_path)
        assert record["status"] == "success", record["error"]
        assert record["rows_out"] == 3  # the failed run's rows are read again, the old ones are not
        record = run_pipeline(validate(_incremental_doc(db, out)), ws, base_dir=tmp_path)
        assert record["rows_out"] == 0
    copied = pl.read_database("SELECT id FROM copy ORDER BY id", sqlite3.connect(out))
    assert copied["id"].to_list() == list(range(8))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_client_side_binding_round_trips_any_value(values):
    """The literals of `bind_client_side` read back as the values (standard SQL quoting, as
    PostgreSQL takes it; SQLite shares the rules), whatever quotes, `$n` or comments the text holds."""
    query = "SELECT " + ", ".join(f"${i + 1}" for i in range(len(values)))
    row = sqlite3.connect(":memory:").execute(bind_client_side(query, values, "postgresql")).fetchone()
    for got, value in zip(row, values, strict=True):
        if isinstance(value, float):  # SQLite's own text-to-double may be 1 ulp off (PostgreSQL's is exact)
            assert got == pytest.approx(value, rel=1e-15, abs=0.0)
        else:
            assert got == (int(value) if isinstance(value, bool) else value)
