"""Drain to PostgreSQL benchmark (plain script, prints JSON).

    .venv/bin/python tests/benchmarks/bench_pg_drain.py [--rows 1000000] [--chunk 50000] [--repeat 3]

The rows are tag records as the outbox holds them (timestamp, tag, value, quality, _key). Legs,
each into a fresh table on the PostgreSQL server at 127.0.0.1:5432 (user postgres, db test):

- `target`: our `postgresql` upstream target delivering the rows in the forwarder's chunks
  (engine/outbox/forwarder.py CHUNK_ROWS), each chunk a transaction: binary COPY into the staging
  table, then INSERT ... ON CONFLICT (_key) DO NOTHING into the table with its unique index;
- `target_redeliver`: the same chunks delivered again into the filled table (every key already
  there: the cost of the forwarder's at-least-once retries);
- `outbox_drain`: end to end: the same rows (as pipeline frames) accepted into a durable outbox
  while the upstream is unreachable, then a fresh OutboxManager (a service starting) forwards the
  backlog to PostgreSQL; timed from the forwarder's start until nothing is pending (the outbox's
  reads, the forwarder's bookkeeping and fsyncs included);
- `psql_copy`: `psql -c "\\copy ... FROM 'rows.csv' CSV"` of the same rows from a CSV written once,
  into a table of the same columns with the same unique index on _key (the tool a user would
  otherwise pick; it does not deduplicate: a second copy of the same rows fails).

Every figure is the median of `--repeat` runs, legs alternating, each after a CHECKPOINT (so that
one leg's writes are not flushed during the next); the load average is reported at the start and
the end (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.connectors import registry
from engine.connectors.postgresql import PostgreSQLSinkConfig, PostgreSQLTarget
from engine.context import RunContext
from tests.net import closed_port
from tests.upstream.pg import tags

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
TARGET_ROWS_PER_S = 150_000

try:
    from engine.outbox.forwarder import CHUNK_ROWS
except ImportError:  # the forwarder's chunk size, if it is not importable in this tree
    CHUNK_ROWS = 50_000


def sql(query: str) -> list[tuple]:
    with psycopg.connect(DSN, autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


def fresh(table: str, *, with_layout: bool) -> None:
    sql(f'DROP TABLE IF EXISTS "{table}"')
    if with_layout:  # psql's leg: the layout our target creates, made by hand
        sql(
            f'CREATE TABLE "{table}" ("timestamp" timestamptz, tag text, value double precision, '
            'quality text, _key text COLLATE "C" NOT NULL)'
        )
        sql(f'CREATE UNIQUE INDEX "{table}__key_uq" ON "{table}" (_key)')
    sql("CHECKPOINT")  # the previous leg's dirty pages are written now, not during this leg


def leg_target(table, chunks, rows: int) -> tuple[float, float]:
    fresh(table, with_layout=False)
    config = PostgreSQLSinkConfig.model_validate(
        {"host": "127.0.0.1", "port": 5432, "database": "test", "username": "postgres", "table": table}
    )
    target = PostgreSQLTarget(config, RunContext(), "bench")
    try:
        target.open()
        started = time.perf_counter()
        for chunk in chunks:
            target.deliver(chunk)
        first = time.perf_counter() - started
        started = time.perf_counter()
        for chunk in chunks:
            target.deliver(chunk)
        again = time.perf_counter() - started  # (no CHECKPOINT between: a retry comes on a busy server)
    finally:
        target.close()
    assert sql(f'SELECT count(*) FROM "{table}"')[0][0] == rows
    return rows / first, rows / again


def leg_outbox(table: str, frame, rows: int, chunk: int) -> float:
    from engine.outbox.manager import OutboxManager

    fresh(table, with_layout=False)
    cls = registry.get("postgresql")
    good = {"host": "127.0.0.1", "port": 5432, "database": "test", "username": "postgres", "table": table}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        filling = OutboxManager(data_dir)
        config = cls.SinkConfig.model_validate({**good, "port": closed_port(), "connect_timeout": 1})
        ctx = RunContext(
            pipeline="bench", data_dir=data_dir, delivery_default="store_and_forward", outbox=filling
        )
        sink = cls.make_sink(config, ctx, "central")
        for start in range(0, rows, chunk):
            sink.open()
            sink.write(frame.slice(start, chunk))
            sink.close()
        filling.close()

        draining = OutboxManager(data_dir)
        config = cls.SinkConfig.model_validate(good)
        try:
            started = time.perf_counter()
            draining.start(
                lambda pipeline, destination: (lambda: cls.make_target(config, ctx, "central"), config)
            )
            store = draining.store("bench", "central")
            while store.pending()[1]:
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
        finally:
            draining.close()
    assert sql(f'SELECT count(*) FROM "{table}"')[0][0] == rows
    return rows / elapsed


def leg_psql(table: str, csv: Path, rows: int) -> float:
    fresh(table, with_layout=True)
    command = [
        "psql",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "test",
        "-v",
        "ON_ERROR_STOP=1",
        "-q",
        "-c",
        f'\\copy "{table}" ("timestamp", tag, value, quality, _key) FROM \'{csv}\' WITH (FORMAT csv, HEADER true)',
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    elapsed = time.perf_counter() - started
    assert sql(f'SELECT count(*) FROM "{table}"')[0][0] == rows
    return rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=CHUNK_ROWS)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    data = tags(0, args.rows, tags_n=1000)
    chunks = [data.slice(start, args.chunk) for start in range(0, args.rows, args.chunk)]
    results: dict[str, list[float]] = {
        "target": [],
        "target_redeliver": [],
        "outbox_drain": [],
        "psql_copy": [],
    }
    frame = pl.from_arrow(data).drop("_key")  # what a pipeline hands the destination
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "rows.csv"
        pl.from_arrow(data).write_csv(csv)  # written once, outside the timings
        for _ in range(args.repeat):
            first, again = leg_target("bench_pg_drain_target", chunks, args.rows)
            results["target"].append(first)
            results["target_redeliver"].append(again)
            results["outbox_drain"].append(leg_outbox("bench_pg_drain_outbox", frame, args.rows, args.chunk))
            results["psql_copy"].append(leg_psql("bench_pg_drain_psql", csv, args.rows))
    sql('DROP TABLE IF EXISTS "bench_pg_drain_target"')
    sql('DROP TABLE IF EXISTS "bench_pg_drain_psql"')
    sql('DROP TABLE IF EXISTS "bench_pg_drain_outbox"')
    medians = {name: round(statistics.median(values)) for name, values in results.items()}
    print(
        json.dumps(
            {
                "benchmark": "pg_drain",
                "rows": args.rows,
                "chunk_rows": args.chunk,
                "repeat": args.repeat,
                "rows_per_s": medians,
                "runs_rows_per_s": {name: [round(v) for v in values] for name, values in results.items()},
                "target_vs_psql_copy": round(medians["target"] / medians["psql_copy"], 2),
                "target_rows_per_s": TARGET_ROWS_PER_S,
                "met": medians["target"] >= TARGET_ROWS_PER_S,
                "server": sql("SHOW server_version")[0][0],
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average_start": round(load_start, 2),
                    "load_average_end": round(os.getloadavg()[0], 2),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
