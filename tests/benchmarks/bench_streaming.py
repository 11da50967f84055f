"""Streaming benchmark: a tag source -> filter -> DuckDB historian, as a real_time pipeline.

    python tests/benchmarks/bench_streaming.py [--seconds 5] [--rate 20000] [--batch-rows 1000]

Two legs, each through `run_streaming` on a fresh data directory:
- throughput: the source emits as fast as the runner takes its batches (emit blocks, nothing is
  dropped), micro-batches of 50 000 rows; records/s committed.
- latency: the source emits `--rate` rows/s in batches of 100 rows, micro-batches cut by
  max_latency_ms=100; p50/p99 of received_at -> commit (target p99 < 300 ms).
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from engine.connectors import registry  # noqa: E402
from engine.connectors.base import Connector, ConnectorConfig, StreamingSource  # noqa: E402
from engine.spec.validate import validate  # noqa: E402
from engine.streaming import StreamSettings, run_streaming  # noqa: E402
from engine.tags import TAG_SCHEMA  # noqa: E402


class LoadConfig(ConnectorConfig):
    batch_rows: int = 1000
    rate: float | None = None  # rows/s; None: as fast as the runner takes them
    tags: int = 1000


class LoadSource(StreamingSource):
    """Tag records built column-wise (the engine is measured, not a per-value builder); 5% bad."""

    config: LoadConfig

    def start(self, emit) -> None:
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(emit,), daemon=True)
        self._thread.start()

    def _frame(self, start: int) -> pl.DataFrame:
        n = self.config.batch_rows
        now = pl.lit(time.time_ns() // 1000).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
        i = pl.int_range(start, start + n, dtype=pl.Int64)
        return pl.select(
            now.alias("timestamp"),
            pl.lit(None, pl.Datetime("us", "UTC")).alias("server_timestamp"),
            pl.format("wtg{}.power", i % self.config.tags).alias("tag"),
            i.cast(pl.Float64).alias("value"),
            pl.lit(None, pl.String).alias("value_text"),
            pl.when(i % 20 == 0).then(pl.lit("bad")).otherwise(pl.lit("good")).alias("quality"),
            pl.lit(None, pl.String).alias("reason"),
            pl.lit(self.name).alias("source"),
            now.alias("received_at"),
        ).cast(dict(TAG_SCHEMA))

    def _run(self, emit) -> None:
        sent = 0
        t0 = time.monotonic()
        while not self._halt.is_set():
            emit(self._frame(sent))
            sent += self.config.batch_rows
            self.counters["emitted"] += self.config.batch_rows
            if self.config.rate:
                ahead = t0 + sent / self.config.rate - time.monotonic()
                if ahead > 0:
                    self._halt.wait(ahead)

    def stop(self) -> None:
        self._halt.set()
        self._thread.join()


class LoadConnector(Connector):
    connector_type = "bench_load"
    SourceConfig = LoadConfig

    @classmethod
    def make_source(cls, config, ctx, name: str) -> StreamingSource:
        return LoadSource(config, ctx, name)


def pipeline(source: dict, max_latency_ms: int, batch_size: int) -> dict:
    return {
        "name": "bench streaming",
        "nodes": [
            {"id": "wtg", "kind": "source", "connector_type": "bench_load", "config": source},
            {
                "id": "good",
                "kind": "transform",
                "inputs": ["wtg"],
                "transform": {
                    "type": "record_filter",
                    "condition": {"field": "quality", "operator": "equals", "value": "good"},
                },
            },
            {
                "id": "historian",
                "kind": "destination",
                "inputs": ["good"],
                "connector_type": "duckdb",
                "config": {"table": "tags"},
            },
        ],
        "schedule": {"type": "real_time", "max_latency_ms": max_latency_ms, "batch_size": batch_size},
    }


def leg(source: dict, *, seconds: float, max_latency_ms: int, batch_size: int, block_s: float) -> dict:
    from engine.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp, Workspace(Path(tmp) / "data") as ws:
        compiled = validate(pipeline(source, max_latency_ms, batch_size))
        settings = StreamSettings.from_schedule(compiled.graph.schedule, block_timeout_s=block_s)
        record = run_streaming(compiled, ws, seconds=seconds, settings=settings)
        stored = ws.historian.cursor().execute("SELECT count(*) FROM tags").fetchall()[0][0]
    s = record["stream"]
    return {
        "status": record["status"],
        "seconds": record["duration_s"],
        "rows_received": s["rows_received"],
        "rows_committed": s["rows_committed"],
        "rows_in_table": stored,
        "rows_dropped": s["rows_dropped"],
        "micro_batches": s["micro_batches"],
        "received_per_s": round(s["rows_received"] / record["duration_s"]),
        "committed_per_s": round(s["rows_committed"] / record["duration_s"]),
        "latency_ms": s["latency_ms"],
        "peak_queued_rows": s["sources"]["wtg"]["peak_queued_rows"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=20_000, help="latency leg: rows/s")
    parser.add_argument("--batch-rows", type=int, default=1000, help="throughput leg: rows per emit")
    args = parser.parse_args()
    registry.register(LoadConnector)
    throughput = leg(
        {"batch_rows": args.batch_rows},
        seconds=args.seconds,
        max_latency_ms=100,
        batch_size=50_000,
        block_s=3600.0,  # emit waits for room: the source is paced by the engine, nothing dropped
    )
    latency = leg(
        {"batch_rows": 100, "rate": args.rate},
        seconds=args.seconds,
        max_latency_ms=100,
        batch_size=1_000_000,
        block_s=0.5,
    )
    print(
        json.dumps(
            {
                "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
                "throughput": throughput,
                "latency_at_max_latency_100ms": {**latency, "rate_rows_per_s": args.rate},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
