"""Tag historian benchmark (plain script, prints JSON).

    .venv/bin/python tests/benchmarks/bench_historian.py [--tags 1000] [--points 10000] [--repeat 5] [--dir D]

Legs: ingest rate of 10k-row streaming batches in time order (rows/s, `tag_last` and the 1-minute
rollup included), beside DuckDB's plain INSERT of the same batches; a historian of tags x points
rows (1 s apart, time-major like live data) built in big batches; then bucketed queries (one tag and
every tag in 1-minute buckets over the whole range, ranges cutting through minutes, and the raw path
for comparison), a check that the rollup gives the raw rows' result, and the last values of all.
Every figure is the median of `--repeat` runs (one-tag queries: at least 7); the load average is
reported at the start and the end (the machine is shared).

    .venv/bin/python tests/benchmarks/bench_historian.py --sink-path 10

`--sink-path ROUNDS` (issue 12): the `historian` destination's path alone, as a real-time pipeline
drives it at the Modbus scale: the real `HistorianSink` (its `commit_lock` held around each
commit's writes, as the streaming runtime holds it), rounds of 8 batches of 12,500 distinct
tags (100,000 tags), a commit every 4 batches (50,000 rows, a grouped commit), the live ring buffer
not read (headless), the rounds 1 s apart inside one minute (the once-a-minute rollup stays out);
CPU-µs per value over the rounds after the first two. Code that keeps the newest rows per tag in
memory (`engine.store.tag_newest`) writes `tag_last` once every 5 rounds here, as every 5 s of a real
stream (code that writes it on the timer thread, beside the batches, is timed until the last write
handed over is done). Copied into a checkout of older code, it measures that code the same way
(docs/performance.md, "Streaming ingest").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.store.historian import Historian, arrow_view
from engine.store.tag_historian import TagHistorian
from engine.store.tag_last import LAST_COLUMNS
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


def timed(fn, repeat: int = 5) -> tuple[float, list[float], object]:
    """Median of `repeat` runs (the machine is shared: a median resists one slow spell), all runs."""
    runs, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), runs, result


PREVIOUS_LAST_UPSERT = (
    "INSERT INTO tag_last BY NAME SELECT * FROM _n ON CONFLICT (tag) DO UPDATE SET timestamp = excluded.timestamp,"
    " value = excluded.value, value_text = excluded.value_text, quality = excluded.quality, reason = excluded.reason,"
    " source = excluded.source, received_at = excluded.received_at"
    " WHERE excluded.timestamp >= tag_last.timestamp OR tag_last.timestamp IS NULL"
)


def ingest_run(path: Path, batches: list[pl.DataFrame], how: str) -> float:
    """Rows/s of one streaming ingest into a fresh file, every batch its own transaction.
    `historian`: `TagHistorian.append` (rows, rollup, newest-row log); `plain`: DuckDB alone, one
    INSERT of the Arrow batch (the ceiling); `previous`: what `append` did before the rollup (rows
    and an upsert of the newest row per tag into `tag_last`)."""
    for old in path.parent.glob(path.name + "*"):
        old.unlink()
    store = TagHistorian(Historian(path))
    cur = store.cursor()
    t0 = time.perf_counter()
    for batch in batches:
        if how == "historian":
            store.append(batch)
            continue
        cur.execute("BEGIN TRANSACTION")
        cur.register("_b", arrow_view(batch))
        cur.execute("INSERT INTO tags BY NAME SELECT * FROM _b")
        cur.unregister("_b")
        if how == "previous":
            newest = batch.select(*LAST_COLUMNS).sort("timestamp", maintain_order=True).group_by("tag").last()
            cur.register("_n", arrow_view(newest))
            cur.execute(PREVIOUS_LAST_UPSERT)
            cur.unregister("_n")
        cur.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    cur.close()
    store.historian.close()
    return sum(b.height for b in batches) / elapsed


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def sink_path(rounds: int) -> dict:
    """See the module doc (`--sink-path`)."""
    from engine.connectors.historian_connector import HistorianConnector, HistorianSinkConfig
    from engine.context import RunContext

    work = Path(tempfile.mkdtemp(prefix="bench_sink_path_"))
    historian = Historian(work / "historian.duckdb")
    sink = HistorianConnector.make_sink(
        HistorianSinkConfig(), RunContext(data_dir=work, historian=historian), "h"
    )
    sink.open()
    if hasattr(sink.live, "_lease_until"):
        sink.live._lease_until = 0.0  # headless: nobody reads the live view (the first lease lapsed)
    first = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    names = [[f"meter{m}.r{i}" for i in range(12_500)] for m in range(8)]

    def batch(meter: int, second: int) -> pl.DataFrame:
        at = first + timedelta(seconds=second)
        n = len(names[meter])
        return pl.DataFrame(
            {"timestamp": [at] * n, "tag": names[meter], "value": [float(second)] * n, "quality": ["good"] * n,
             "source": ["modbus"] * n, "received_at": [at] * n}
        ).with_columns(
            *(pl.lit(None, TAG_SCHEMA[c]).alias(c) for c in ("value_text", "reason", "server_timestamp"))
        ).select(TAG_SCHEMA.names()).cast(dict(TAG_SCHEMA))  # fmt: skip

    batches = [[batch(m, r) for m in range(8)] for r in range(rounds)]
    writes_last = hasattr(sink.store, "write_last")
    if writes_last:
        sink.store.last_every = float("inf")  # written by the rounds' clock below, not the wall's
    written = tag_last_writes = 0
    # As `engine.streaming.sinks.SessionSink` does (a write of `tag_last` on another thread waits
    # for it, or goes on between the commits)
    lock = getattr(sink, "commit_lock", None) or threading.RLock()
    for r in range(rounds):
        if r == 2:
            cpu0, wall0 = time.process_time(), time.monotonic()
        for m in range(8):
            if written % 4 == 0:  # a stream holds the historian's lock around each commit's writes
                lock.acquire()
            sink.write(batches[r][m])
            written += 1
            if written % 4 == 0:
                sink.commit()
                lock.release()
        if writes_last and r % 5 == 4:  # every 5 s of the stream's time: at the next commit
            sink.store.newest.last_write = -math.inf
            tag_last_writes += r >= 2
    if writes_last and hasattr(sink.store.newest, "last_lock"):
        # Code that writes the table on the timer thread, beside the batches: the write the last
        # commit handed over is timed too (its CPU is this process's, in any thread).
        while sink.store.newest.last_write == -math.inf:
            time.sleep(0.001)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    sink.close()
    historian.close()
    values = (rounds - 2) * 100_000
    return {
        "leg": "sink_path",
        "code": str(Path(__file__).resolve().parents[2]),
        "values": values,
        "cpu_us_per_value": round(1e6 * cpu / values, 3),
        "wall_s": round(wall, 2),
        "tag_last_writes_timed": tag_last_writes,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--sink-path":
        print(json.dumps(sink_path(max(3, int(sys.argv[2])))))
        return
    p = argparse.ArgumentParser()
    p.add_argument("--tags", type=int, default=1000)
    p.add_argument("--points", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=5, help="runs per figure (the median is reported)")
    p.add_argument(
        "--build-batch", type=int, default=10_000, help="rows per batch building the big historian"
    )
    p.add_argument("--dir", type=Path)
    args = p.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_historian_"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "tags": args.tags,
        "points": args.points,
        "rows": args.tags * args.points,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            "python": platform.python_version(),
            "duckdb": duckdb.__version__,
            "polars": pl.__version__,
        },
    }

    # Leg 1: streaming ingest, 10k-row batches (10 points of 1,000 tags, time order, tags interleaved),
    # each its own transaction; the historian's append and DuckDB's plain INSERT alternate run by run.
    batches = [frame(1000, i * 10, 10, seed=1) for i in range(100)]
    ingest: dict[str, list[float]] = {"historian": [], "plain": [], "previous": []}
    for _ in range(args.repeat):  # the three alternate, so that a slow spell hits them alike
        for how, runs in ingest.items():
            runs.append(ingest_run(work / f"ingest_{how}.duckdb", batches, how))
    for how, runs in ingest.items():
        name = {
            "historian": "ingest_10k_batches",
            "plain": "ingest_plain_duckdb",
            "previous": "ingest_previous",
        }[how]
        report[f"{name}_rows_per_s"] = round(statistics.median(runs))
        report[f"{name}_runs"] = [round(r) for r in runs]
    plain = report["ingest_plain_duckdb_rows_per_s"]
    report["ingest_vs_plain"] = round(report["ingest_10k_batches_rows_per_s"] / plain, 2)
    report["ingest_vs_previous"] = round(
        report["ingest_10k_batches_rows_per_s"] / report["ingest_previous_rows_per_s"], 2
    )

    # Leg 2: the big historian, streamed in as live data would be: `--build-batch` rows per batch
    # (default 10k), in time order, each batch its own transaction (rollup compactions included).
    for old in work.glob("historian.duckdb*"):
        old.unlink()
    th = TagHistorian(Historian(work / "historian.duckdb"))
    per_batch = max(1, args.build_batch // args.tags)
    build = 0.0
    for first in range(0, args.points, per_batch):
        batch = frame(args.tags, first, min(per_batch, args.points - first))
        t0 = time.perf_counter()
        th.append(batch)
        build += time.perf_counter() - t0
    t0 = time.perf_counter()
    cur = th.cursor()
    cur.execute("CHECKPOINT")  # as DuckDB does by itself once the WAL passes 16 MB
    report["rollup_rows"] = cur.execute("SELECT count(*) FROM tag_minutes").fetchall()[0][0]
    report["rollup_keys"] = cur.execute(
        "SELECT count(*) FROM (SELECT DISTINCT tag, minute, is_bad FROM tag_minutes)"
    ).fetchall()[0][0]
    cur.close()
    report["checkpoint_s"] = round(time.perf_counter() - t0, 2)
    report["build_s"] = round(build, 2)
    report["build_rows_per_s"] = round(report["rows"] / build)

    one_tag = "plant.unit000.tag00007"
    end = START + timedelta(seconds=args.points)
    cut_start, cut_end = START + timedelta(seconds=30.5), end - timedelta(seconds=29)  # cut through minutes
    legs = {
        "one_tag_1m": lambda: th.query([one_tag], START, end, "1m"),
        "all_tags_1m": lambda: th.query("*", START, end, "1m"),
        "one_tag_1h": lambda: th.query([one_tag], START, end, "1h"),
        "one_tag_1m_unaligned": lambda: th.query([one_tag], cut_start, cut_end, "1m"),
        "all_tags_5m_unaligned": lambda: th.query("*", cut_start, cut_end, "5m"),
        "one_tag_1m_raw": lambda: th.query([one_tag], START, end, "1m", use_rollup=False),
        "all_tags_1m_raw": lambda: th.query("*", START, end, "1m", use_rollup=False),
        "one_tag_10s_raw": lambda: th.query([one_tag], START, end, "10s"),
    }
    results = {}
    for name, run in legs.items():
        median, runs, result = timed(run, max(args.repeat, 7) if name.startswith("one_tag") else args.repeat)
        results[name] = result
        report[f"{name}_ms"] = ms(median)
        report[f"{name}_runs_ms"] = [ms(r) for r in runs]
        report[f"{name}_rows"] = result.height  # type: ignore[union-attr]
    # The rollup must give what the raw rows give (sum/avg up to rounding): checked on every run.
    stats = ["avg", "min", "max", "first", "last", "sum", "count"]
    checks = {
        "one_tag_1m": ([one_tag], START, end, "1m"),
        "all_tags_1m": ("*", START, end, "1m"),
        "all_tags_5m_unaligned": ("*", cut_start, cut_end, "5m"),
    }
    for tags, a, b, width in checks.values():
        for include_bad in (False, True):
            assert_frame_equal(
                th.query(tags, a, b, width, stats, include_bad),
                th.query(tags, a, b, width, stats, include_bad, use_rollup=False),
                check_exact=False,
                rel_tol=1e-9,
            )
    report["rollup_equals_raw"] = True
    median, _, result = timed(lambda: th.last_values("*"), args.repeat)
    report["last_values_all_ms"] = ms(median)
    report["last_values_rows"] = result.height  # type: ignore[union-attr]
    median, _, _ = timed(th.tags, 1)
    report["tag_list_ms"] = ms(median)
    report["db_mb"] = round((work / "historian.duckdb").stat().st_size / 1e6, 1)
    th.historian.close()
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
