"""The DuckDB destination feeds its INSERT an Arrow C stream of Polars frames, made with ctypes
(engine/connectors/duckdb_connector.py `ArrowFeed`): no pyarrow on the way (issue 12: importing it,
with the numpy it brings, was a fifth of a 1 M-row run's CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from engine.connectors import duckdb_connector
from engine.connectors.duckdb_connector import DuckDBConnector, DuckDBSink
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.store.historian import Historian

ROOT = Path(__file__).resolve().parents[2]
ROWS = 300_000

# The modules a process imported, written at its exit, then `aggregator ARGS` run as the console
# script runs it.
PROBE = (
    "import sys, runpy, atexit, json;"
    "out = sys.argv.pop(1);"
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted({m.split('.')[0] for m in sys.modules}))));"
    "sys.argv = ['aggregator', *sys.argv[1:]];"
    "runpy.run_module('app.cli', run_name='__main__')"
)


def _aggregator(tmp_path: Path, *args: str) -> tuple[set[str], subprocess.CompletedProcess]:
    mods = tmp_path / "mods.json"
    env = {**os.environ, "AGGREGATOR_ALLOWED_ROOTS": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(mods), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return set(json.loads(mods.read_text())), proc


def _orders_spec(tmp_path: Path) -> Path:
    """ROWS order rows as CSV -> trim, a filter, a computed column -> the historian's `orders`."""
    i = pl.int_range(ROWS)
    pl.select(
        id=i,
        email=pl.format(" user{}@example.com ", i),
        status=pl.lit(pl.Series(["done", "cancelled", "open"])).gather(i % 3),
        price=i.cast(pl.Float64) / 100,
    ).write_csv(tmp_path / "orders.csv")
    spec = tmp_path / "p.json"
    spec.write_text(
        json.dumps(
            {
                "name": "orders to duckdb",
                "sources": [{"name": "in", "connector_type": "file", "config": {"path": "orders.csv"}}],
                "transformations": [
                    {"type": "field_mapping", "field_name": "email", "operation": "trim"},
                    {
                        "type": "record_filter",
                        "condition": {"field": "status", "operator": "not_equals", "value": "cancelled"},
                    },
                ],
                "destinations": [
                    {
                        "name": "out",
                        "connector_type": "duckdb",
                        "config": {"table": "orders", "mode": "replace"},
                    }
                ],
            }
        )
    )
    return spec


def test_a_run_into_duckdb_and_its_validation_import_no_pyarrow(tmp_path):
    spec = _orders_spec(tmp_path)
    modules, proc = _aggregator(tmp_path, "validate", str(spec))
    assert "valid" in proc.stdout
    assert not modules & {"pyarrow", "numpy", "pandas"}, sorted(modules & {"pyarrow", "numpy", "pandas"})

    data = tmp_path / "data"
    modules, _ = _aggregator(tmp_path, "run", str(spec), "--data-dir", str(data))
    assert not modules & {"pyarrow", "numpy", "pandas"}, sorted(modules & {"pyarrow", "numpy", "pandas"})
    historian = Historian(data / "historian.duckdb")
    try:
        rows = (
            historian.cursor()
            .execute("SELECT count(*), count(DISTINCT id), min(email) FROM orders")
            .fetchone()
        )
    finally:
        historian.close()
    kept = ROWS - len(range(1, ROWS, 3))
    assert rows == (kept, kept, "user0@example.com")


@pytest.fixture
def ctx(tmp_path):
    historian = Historian(tmp_path / "data" / "historian.duckdb")
    yield RunContext(base_dir=tmp_path, historian=historian)
    historian.close()


def _sink(ctx: RunContext, **config) -> DuckDBSink:
    return DuckDBConnector.make_sink(DuckDBConnector.SinkConfig.model_validate(config), ctx, "out")


def _rows(ctx: RunContext, query: str) -> list[tuple]:
    cur = ctx.historian.cursor()
    try:
        return cur.execute(query).fetchall()
    finally:
        cur.close()


def _frame(start: int, n: int) -> pl.DataFrame:
    i = pl.int_range(start, start + n)
    return pl.select(id=i, s=pl.format("v{}", i))


def test_one_stream_carries_frames_of_several_chunks_and_empty_frames_and_releases_everything(ctx):
    """Every frame's every chunk goes through the one stream, in order, empty ones too; no stream
    DuckDB took (one to bind the INSERT, one to run it) is left alive."""
    out = _sink(ctx, table="t")
    out.open()
    chunked = pl.concat([_frame(10, 5), _frame(15, 5), _frame(20, 5)], rechunk=False)
    assert chunked.n_chunks() == 3
    feed = None
    for frame in (_frame(0, 10), chunked, _frame(25, 0), _frame(25, 100_000)):
        out.write(frame)
        feed = feed or out.feed
        assert out.feed is feed
    out.close()
    assert _rows(ctx, "SELECT count(*), count(DISTINCT id), min(id), max(id), max(s) FROM t") == [
        (100_025, 100_025, 0, 100_024, "v99999")
    ]
    assert duckdb_connector._streams == {}


def test_an_aborted_or_failed_feed_leaves_no_stream_alive_and_no_rows(ctx):
    out = _sink(ctx, table="t")
    out.open()
    out.write(_frame(0, 10))
    out.abort()
    assert duckdb_connector._streams == {}
    assert _rows(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_name = 't'") == [(0,)]

    out = _sink(ctx, table="t")
    out.open()
    out.write(_frame(0, 10))
    out.close()
    out = _sink(ctx, table="t")
    out.open()
    with pytest.raises(ConnectorError, match=r"historian.duckdb:t: .*"):
        out.write(_frame(0, 10))
        out.write(_frame(10, 10).with_columns(pl.lit("not a number").alias("id")))
        out.close()
    assert duckdb_connector._streams == {}
    assert _rows(ctx, "SELECT count(*) FROM t") == [(10,)]


def test_the_insert_gets_whole_row_groups_so_the_checkpoint_has_none_to_merge(ctx):
    """Batches of a few hundred to 25 k rows, as a run gives them, reach DuckDB's two insert threads
    as whole row groups: each thread writes full row groups out as it goes and only the last one is
    partial. Split at random between the threads, each thread ended on a partial row group, which
    the checkpoint at close merged and compressed again (0.4-0.7 s of a 1 M-row run's close)."""
    cur = ctx.historian.cursor()
    cur.execute("SET GLOBAL threads = 2")  # what a 2-core machine has; one thread never split them
    cur.close()
    out = _sink(ctx, table="t", mode="replace")
    out.open()
    rows, sizes = 0, [300, 25_000, 6_110, 24_256, 7_882, 16_384, 1_000]
    while rows < 600_000:
        n = sizes[(rows // 7) % len(sizes)]
        i = pl.int_range(rows, rows + n)
        out.write(pl.select(id=i, s=pl.format("value number {}", i), x=i.cast(pl.Float64) / 7))
        rows += n
    out.close()
    groups = _rows(
        ctx, "SELECT persistent, count(DISTINCT row_group_id) FROM pragma_storage_info('t') GROUP BY ALL"
    )
    assert groups == [(True, -(-rows // duckdb_connector.ROW_GROUP_ROWS))]
    assert _rows(ctx, "SELECT count(*), count(DISTINCT id) FROM t") == [(rows, rows)]
