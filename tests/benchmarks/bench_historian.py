"""Tag historian benchmark (plain script, prints JSON).

    .venv/bin/python tests/benchmarks/bench_historian.py [--tags 1000] [--points 10000] [--dir D]

Legs: ingest rate of 10k-row streaming batches (rows/s, `tag_last` upsert included); a historian of
tags x points rows (1 s apart, time-major like live data) built in big batches; then one tag in
1-minute buckets over the whole range, every tag in 1-minute buckets, and the last values of all.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian
from engine.tags import TAG_SCHEMA

START = datetime(2024, 1, 1, tzinfo=UTC)


def frame(tags: int, first_point: int, points: int, seed: int = 0) -> pl.DataFrame:
    """tags x points rows, time-major (every tag at t0, then every tag at t1...), columnwise."""
    rng = np.random.default_rng(seed + first_point)
    n = tags * points
    step = np.arange(first_point, first_point + points, dtype=np.int64).repeat(tags)
    tag_index = np.tile(np.arange(tags, dtype=np.int32), points)
    start_us = int(START.timestamp() * 1_000_000)
    quality = np.where(rng.random(n) < 0.01, "bad", "good")
    names = pl.Series([f"plant.unit{i // 50:03d}.tag{i:05d}" for i in range(tags)])
    return (
        pl.DataFrame(
            {
                "timestamp": pl.Series(start_us + step * 1_000_000).cast(pl.Datetime("us", "UTC")),
                "server_timestamp": pl.repeat(None, n, dtype=TAG_SCHEMA["server_timestamp"], eager=True),
                "tag": names.gather(tag_index),
                "value": rng.normal(100.0, 10.0, n),
                "value_text": pl.repeat(None, n, dtype=pl.String, eager=True),
                "quality": quality,
                "reason": pl.repeat(None, n, dtype=pl.String, eager=True),
                "source": pl.repeat("bench", n, eager=True),
                "received_at": pl.Series(start_us + step * 1_000_000 + 5_000).cast(pl.Datetime("us", "UTC")),
            }
        )
        .with_columns(
            reason=pl.when(pl.col("quality") == "bad").then(pl.lit("comm_lost")),
        )
        .cast(TAG_SCHEMA)
    )  # type: ignore[arg-type]


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tags", type=int, default=1000)
    p.add_argument("--points", type=int, default=10_000)
    p.add_argument("--dir", type=Path)
    args = p.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_historian_"))
    report: dict = {"tags": args.tags, "points": args.points, "rows": args.tags * args.points}

    # Leg 1: streaming ingest, 10k-row batches (10 points of 1,000 tags), each its own transaction.
    for old in work.glob("*.duckdb*"):  # a re-run starts from empty files
        old.unlink()
    ingest = TagHistorian(Historian(work / "ingest.duckdb"))
    batches = [frame(1000, i * 10, 10, seed=1) for i in range(100)]
    t0 = time.perf_counter()
    for batch in batches:
        ingest.append(batch)
    elapsed = time.perf_counter() - t0
    report["ingest_10k_batches_rows_per_s"] = round(sum(b.height for b in batches) / elapsed)
    ingest.historian.close()

    # Leg 2: the big historian, built in batches of 1 M rows.
    th = TagHistorian(Historian(work / "historian.duckdb"))
    per_batch = max(1, 1_000_000 // args.tags)
    t0 = time.perf_counter()
    for first in range(0, args.points, per_batch):
        th.append(frame(args.tags, first, min(per_batch, args.points - first)))
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    cur = th.cursor()
    cur.execute("CHECKPOINT")  # as DuckDB does by itself once the WAL passes 16 MB
    cur.close()
    report["checkpoint_s"] = round(time.perf_counter() - t0, 2)
    report["build_s"] = round(build, 2)
    report["build_rows_per_s"] = round(report["rows"] / build)

    one_tag = "plant.unit000.tag00007"
    end = START + timedelta(seconds=args.points)
    t, result = timed(lambda: th.query([one_tag], START, end, "1m"))
    report["one_tag_1m_ms"] = round(t * 1000, 1)
    report["one_tag_1m_rows"] = result.height  # type: ignore[union-attr]
    t, result = timed(lambda: th.query("*", START, end, "1m"))
    report["all_tags_1m_s"] = round(t, 3)
    report["all_tags_1m_rows"] = result.height  # type: ignore[union-attr]
    t, result = timed(lambda: th.last_values("*"))
    report["last_values_all_ms"] = round(t * 1000, 1)
    report["last_values_rows"] = result.height  # type: ignore[union-attr]
    t, _ = timed(th.tags, repeat=1)
    report["tag_list_ms"] = round(t * 1000, 1)
    report["db_mb"] = round((work / "historian.duckdb").stat().st_size / 1e6, 1)
    th.historian.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
