"""The historian's per-minute rollup alone: one minute of raw tag rows (100,000 tags a second by
default) rolled up the way `TagHistorian.advance_rollup` does it (`tag_rollup.slice_sql`, in slices
of tags), in a DuckDB file opened with the historian's settings (`connection_config`: the 32 MB
memory_limit), against fewer, larger slices, against one statement on one thread, and against the
partials the writer keeps in memory as it commits (`engine.store.tag_rollup_memory`: the minute's
rows handed over as a stream commits them, ~15,000 rows a frame, then one INSERT of the partials).
Prints one JSON document: wall and CPU seconds per variant, or the error (an out-of-memory is a
result here).

    python tests/benchmarks/bench_rollup_slices.py [--tags 100000] [--long-names] [--rounds 2]
        [--memory-limit 32MB] [--work /tmp/rollup-bench]

A stream commits ~6.5 times a second at 100,000 values a second (`bench_modbus.py --historian`):
390 frames a minute, so the kept variant gets the minute in frames of `tags * 60 / 390` rows.

`--long-names`: tag names like OPC UA node ids (`ns=2;s=Plant0/Area/Line/Machine/Sensor_1.Value`)
instead of `meter0.hr1`: the aggregation's memory grows with the names, which bounds the slice size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from engine.store import tag_rollup
from engine.store.historian import connection_config, release_at_once

MINUTE = 1_000  # the minute rolled up (any minute: the rows are made for it)


def build(path: Path, tags: int, long_names: bool) -> None:
    """One minute of `tags` rows a second, in time order as a stream writes them, checkpointed."""
    name = (
        "'ns=2;s=Plant' || (i // 12500) || '/Area/Line/Machine/Sensor_' || (i % 12500) || '.Value'"
        if long_names
        else "'meter' || (i // 12500) || '.hr' || (i % 12500)"
    )
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE tags (timestamp TIMESTAMPTZ, tag VARCHAR, value DOUBLE, value_text VARCHAR,"
        " quality VARCHAR, reason VARCHAR, source VARCHAR, server_timestamp TIMESTAMPTZ,"
        " received_at TIMESTAMPTZ)"
    )
    for second in range(60):
        at = f"{MINUTE} * 60000000::BIGINT + {second} * 1000000"
        con.execute(
            f"INSERT INTO tags SELECT make_timestamptz({at}), {name}, random() * 100, NULL,"
            " CASE WHEN i % 97 = 0 THEN 'bad' ELSE 'good' END, NULL, 'bench', NULL,"
            f" make_timestamptz({at} + 5000) FROM range({tags}) t(i)"
        )
    con.execute("CHECKPOINT")
    con.close()


def open_minute(path: Path, memory_limit: str, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """The minute's file with the historian's settings, and the rollup's table as a temporary one:
    every variant starts from an empty rollup."""
    config = connection_config(path)
    config["memory_limit"] = memory_limit
    if threads is not None:
        config["threads"] = threads
    con = duckdb.connect(str(path), config=config)
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {tag_rollup.MINUTES_TABLE} AS {tag_rollup.partials_sql('tags', 'WHERE false')}"
    )
    return con


def variant(path: Path, statements: list[str], memory_limit: str, threads: int | None) -> dict:
    con = open_minute(path, memory_limit, threads)
    target = f"temp.{tag_rollup.MINUTES_TABLE}"
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    error = None
    try:
        for statement in statements:
            con.execute(statement.replace(f"INSERT INTO {tag_rollup.MINUTES_TABLE}", f"INSERT INTO {target}"))
    except duckdb.Error as exc:
        error = str(exc).splitlines()[0]
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    rows = con.execute(f"SELECT count(*) FROM {target}").fetchone()[0]  # type: ignore[index]
    con.close()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "rollup_rows": rows, "error": error}


def kept_variant(path: Path, memory_limit: str, frame_rows: int) -> dict:
    """The minute's partials kept in memory as its frames commit, then written with one INSERT."""
    import polars as pl

    from engine.store.historian import arrow_stream
    from engine.store.tag_rollup_memory import KeptMinutes

    con = open_minute(path, memory_limit)
    table = pl.from_arrow(con.sql("SELECT * FROM tags").to_arrow_table())  # not timed: the stream's frames
    assert isinstance(table, pl.DataFrame)
    frames = [table.slice(i, frame_rows) for i in range(0, table.height, frame_rows)]
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    kept = KeptMinutes()
    kept.start(None)
    for frame in frames:
        kept.keep(frame, MINUTE)
    partials = kept.partials(MINUTE + 1)
    con.register("_kept", arrow_stream(partials))
    con.execute(tag_rollup.append_sql("_kept").replace("INSERT INTO ", "INSERT INTO temp.", 1))
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    rows = con.execute(f"SELECT count(*) FROM temp.{tag_rollup.MINUTES_TABLE}").fetchone()[0]  # type: ignore[index]
    con.close()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "rollup_rows": rows, "error": None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tags", type=int, default=100_000)
    parser.add_argument("--long-names", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--memory-limit", default="32MB")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rollup-bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"minute-{args.tags}{'-long' if args.long_names else ''}.duckdb"
    if not path.exists():
        build(path, args.tags, args.long_names)
    release_at_once(True)  # as a foreground stream's historian (the bench_modbus.py case)
    slices = tag_rollup.slices_for(args.tags)
    variants: dict[str, tuple[int, int | None]] = {
        f"{slices} slices (as the historian: {tag_rollup.TAGS_PER_SLICE} tags each)": (slices, None),
        **{f"{k} slices": (k, None) for k in (3, 2) if k < slices},
        "one statement": (1, None),
        "one statement, one DuckDB thread": (1, 1),
    }
    kept_name = "kept in memory as frames of ~15,000 rows commit, one INSERT"
    results: dict[str, list[dict]] = {name: [] for name in [*variants, kept_name]}
    for _ in range(args.rounds):
        for name, (k, threads) in variants.items():
            statements = [tag_rollup.slice_sql("tags", MINUTE, MINUTE + 1, k, i) for i in range(k)]
            results[name].append(variant(path, statements, args.memory_limit, threads))
        results[kept_name].append(kept_variant(path, args.memory_limit, args.tags * 60 // 390))
    print(
        json.dumps(
            {
                "benchmark": "bench_rollup_slices",
                "machine": {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]},
                "tags": args.tags,
                "raw_rows": args.tags * 60,
                "long_names": args.long_names,
                "memory_limit": args.memory_limit,
                "duckdb": duckdb.__version__,
                "runs": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
