"""What a minute of a 100,000 values/s stream costs DuckDB (the version installed) to insert, commit
and checkpoint, by commit size, row group size and columns (issue 12, docs/performance.md). Plain
script, real DuckDB, the historian's 32 MB memory_limit, a checkpoint whenever the WAL holds 16 MiB
(as the stream's timer does); the frames are made before the clock starts. Prints one JSON line per
variant: CPU and wall seconds, checkpoints, the file's size after a last checkpoint.

    python tests/benchmarks/probe_duckdb_insert.py [--commits 390] [--row-group-size N]
        [--columns all|timestamp,tag,value|...] [--tag-as-int]

- `--commits`: transactions a minute (390: 6.5 a second, as `bench_modbus.py --historian`); at
  122,880 rows or more a transaction DuckDB writes row groups straight to the file, no WAL.
- `--row-group-size`: the database's (`ATTACH ... (ROW_GROUP_SIZE n)`; the default is 122,880).
- `--columns`: the `tags` columns kept (the table's order); `--tag-as-int` stores the tag as an
  INTEGER instead of its name.
- `--set`: a DuckDB setting on top (e.g. `block_allocator_memory=64MB`); the JSON line gives the
  system CPU and the page faults (fresh memory touched) beside the total.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import duckdb
import numpy as np
import polars as pl

TYPES = {
    "timestamp": "TIMESTAMPTZ",
    "tag": "VARCHAR",
    "value": "DOUBLE",
    "value_text": "VARCHAR",
    "quality": "VARCHAR",
    "reason": "VARCHAR",
    "source": "VARCHAR",
    "server_timestamp": "TIMESTAMPTZ",
    "received_at": "TIMESTAMPTZ",
}


def minute_of_frames(commits: int, tags: int = 100_000) -> list[pl.DataFrame]:
    per = tags * 60 // commits
    names = pl.Series([f"meter{i // 12_500}.hr{i % 12_500:05d}" for i in range(tags)])
    sources = pl.Series([f"meter{i // 12_500}" for i in range(tags)])
    time_type = pl.Datetime("us", "UTC")
    rng, out = np.random.default_rng(1), []
    for k in range(commits):
        rows = (np.arange(per) + k * per) % tags
        at = pl.Series(np.full(per, 1_700_000_000_000_000 + (k * per // tags) * 1_000_000)).cast(time_type)
        out.append(
            pl.DataFrame(
                {
                    "timestamp": at,
                    "tag": names.gather(rows),
                    "value": rng.integers(0, 65_535, per).astype("float64"),
                    "value_text": pl.Series([None] * per, dtype=pl.String),
                    "quality": pl.repeat("good", per, eager=True),
                    "reason": pl.Series([None] * per, dtype=pl.String),
                    "source": sources.gather(rows),
                    "server_timestamp": pl.Series([None] * per, dtype=time_type),
                    "received_at": at,
                }
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=390)
    parser.add_argument("--row-group-size", type=int, default=None)
    parser.add_argument("--columns", default="all")
    parser.add_argument("--tag-as-int", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a DuckDB setting")
    args = parser.parse_args()
    columns = list(TYPES) if args.columns == "all" else args.columns.split(",")
    unknown = [c for c in columns if c not in TYPES]
    if unknown:
        sys.exit(f"--columns: '{unknown[0]}' is not a tags column ({', '.join(TYPES)})")
    types = {c: ("INTEGER" if c == "tag" and args.tag_as_int else TYPES[c]) for c in columns}
    frames = minute_of_frames(args.commits)
    if args.tag_as_int:
        frames = [f.with_columns(pl.col("tag").str.slice(10).cast(pl.Int32)) for f in frames]
    frames = [f.select(columns).to_arrow() for f in frames]
    work = tempfile.mkdtemp(prefix="probe-insert-")
    path = os.path.join(work, "h.duckdb")
    config = {"memory_limit": "32MB", "checkpoint_threshold": "64MiB"}
    for setting in args.set:
        name, _, value = setting.partition("=")
        config[name.strip()] = value.strip()
    if args.row_group_size:
        con = duckdb.connect(config=config)
        con.execute(f"ATTACH '{path}' AS h (ROW_GROUP_SIZE {args.row_group_size})")
        con.execute("USE h")
    else:
        con = duckdb.connect(path, config=config)
    try:
        con.execute(f"CREATE TABLE tags ({', '.join(f'{c} {t}' for c, t in types.items())})")
        cur = con.cursor()
        if args.row_group_size:
            cur.execute("USE h")
        checkpoints = 0
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for frame in frames:
            cur.execute("BEGIN")
            cur.register("_b", frame)
            cur.execute("INSERT INTO tags SELECT * FROM _b")
            cur.unregister("_b")
            cur.execute("COMMIT")
            wal = path + ".wal"
            if os.path.exists(wal) and os.path.getsize(wal) >= 16 * 2**20:
                cur.execute("CHECKPOINT")
                checkpoints += 1
        wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        cur.execute("CHECKPOINT")
        cur.close()
        size = os.path.getsize(path)
    finally:
        con.close()
        shutil.rmtree(work)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result = {
        "duckdb": duckdb.__version__,
        "rows": sum(f.num_rows for f in frames),
        "commits": args.commits,
        "row_group_size": args.row_group_size or 122_880,
        "columns": columns,
        "tag_as_int": args.tag_as_int,
        "settings": args.set,
        "cpu_s": round(cpu, 2),
        "system_cpu_s": round(after.ru_stime - before.ru_stime, 2),
        "page_faults": after.ru_minflt - before.ru_minflt,
        "wall_s": round(wall, 2),
        "checkpoints": checkpoints,
        "file_mb": round(size / 2**20, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
