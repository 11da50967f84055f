"""Batch benchmark: the user guide's e-commerce chain on N generated order rows.

    python tests/benchmarks/bench_batch.py [--rows 10000000] [--reference-rows 1000000] [--work DIR]

Chain: title case -> multiply -> filter -> add timestamp -> validate email, twice:
CSV -> DuckDB historian and CSV -> Parquet, each measured in process (in a child process of its
own, so that its peak RSS is its own). Then, on --reference-rows rows, whole `aggregator run`
processes against the naive per-record reference (tests/benchmarks/reference_chain.py) as a process.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EMAIL_OK = 0.98  # share of valid e-mail addresses in the generated data

CHAIN = [
    {"type": "field_mapping", "field_name": "customer_name", "operation": "title_case"},
    {
        "type": "field_calculation",
        "field_name": "total",
        "operation": "multiply",
        "parameters": {"source_fields": ["price", "quantity"], "output_field": "total"},
    },
    {
        "type": "record_filter",
        "condition": {"field": "status", "operator": "not_equals", "value": "cancelled"},
    },
    {"type": "field_addition", "field_name": "processed_at", "value": "current_timestamp"},
    {"type": "field_validation", "field_name": "customer_email", "validation_type": "email_format"},
]


def generate(path: Path, rows: int) -> float:
    """Order rows as CSV, generated column-wise by Polars (deterministic)."""
    import polars as pl

    t0 = time.perf_counter()
    names = pl.Series(
        ["john smith", "MARY JONES", "ali  khan", "li wei", "sofia ROSSI", "peter novak", "emma jones"]
    )
    products = pl.Series(["wireless mouse", "usb-c cable", "laptop stand", "monitor arm", "keyboard"])
    statuses = pl.Series(["completed", "pending", "cancelled", "refunded"])
    i = pl.int_range(rows, dtype=pl.Int64)
    h = i.hash(42)
    lf = pl.LazyFrame().select(
        i.alias("order_id"),
        names.implode().list.get((h % names.len()).cast(pl.Int64)).alias("customer_name"),
        pl.concat_str(
            [
                pl.lit("user"),
                (h % 100_000).cast(pl.String),
                pl.when((h % 1000) < int(EMAIL_OK * 1000))
                .then(pl.lit("@example.com"))
                .otherwise(pl.lit("@")),
            ]
        ).alias("customer_email"),
        products.implode().list.get(((h // 7) % products.len()).cast(pl.Int64)).alias("product_name"),
        (((h // 11) % 10_000).cast(pl.Float64) / 100).alias("price"),
        ((h // 13) % 9 + 1).cast(pl.Int64).alias("quantity"),
        statuses.implode().list.get(((h // 17) % statuses.len()).cast(pl.Int64)).alias("status"),
        pl.lit("2026-03-01").alias("order_date"),
    )
    lf.sink_csv(path)
    elapsed = time.perf_counter() - t0
    if hasattr(os, "sync"):  # the legs must not compete with the write-back of their own input
        os.sync()
    return elapsed


def spec_for(csv: Path, destination: dict) -> dict:
    return {
        "name": f"bench {destination['connector_type']}",
        "sources": [{"name": "orders", "connector_type": "file", "config": {"path": str(csv)}}],
        "transformations": CHAIN,
        "destinations": [{"name": "out", **destination}],
    }


def peak_rss_mb() -> float:
    """This process's own peak RSS. Not `ru_maxrss`: Linux carries that over from the parent
    across fork and exec, so a leg started by a parent that had just generated 10 M rows reported
    the parent's peak (VmHWM belongs to the memory map that exec made new)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def leg(spec_path: Path, data_dir: Path) -> None:
    """Child process: run one pipeline in process; print its figures."""
    from engine.runner import run_pipeline
    from engine.spec.io import load_pipeline
    from engine.workspace import Workspace

    compiled = load_pipeline(spec_path)
    with Workspace(data_dir) as ws:
        t0 = time.perf_counter()
        record = run_pipeline(compiled, ws, base_dir=spec_path.parent)
        elapsed = time.perf_counter() - t0
    rss_mb = peak_rss_mb()
    print(
        json.dumps(
            {
                "status": record["status"],
                "error": record["error"],
                "seconds": round(elapsed, 3),
                "rows_in": record["rows_in"],
                "rows_out": record["rows_out"],
                "rows_rejected": record["rows_rejected"],
                "rows_per_s": round(record["rows_in"] / elapsed),
                "peak_rss_mb": round(rss_mb),
                "nodes": record["nodes"],
            }
        )
    )


def run_leg(spec: dict, work: Path, name: str) -> dict:
    spec_path = work / f"{name}.json"
    spec_path.write_text(json.dumps(spec))
    data = work / f"data-{name}"
    shutil.rmtree(data, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--leg", str(spec_path), "--work", str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode:
        raise SystemExit(f"leg {name} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def duckdb_ceiling(csv: Path, work: Path) -> dict:
    """DuckDB importing the same CSV by itself, no transformation at all: the most any CSV -> DuckDB
    pipeline can reach on this machine (in a child process, like the legs)."""
    code = (
        "import duckdb, sys, time;"
        " con = duckdb.connect(sys.argv[2]); con.execute('SET enable_progress_bar=false');"
        " con.execute('SET preserve_insertion_order=false'); t = time.perf_counter();"
        ' con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM read_csv(?)", [sys.argv[1]]);'
        " print(time.perf_counter() - t)"
    )
    db = work / "ceiling.duckdb"
    db.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-c", code, str(csv), str(db)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"duckdb ceiling failed: {proc.stderr.strip()[-1000:]}")
    seconds = float(proc.stdout.strip())
    db.unlink(missing_ok=True)
    rows = int(
        subprocess.run(
            [sys.executable, "-c", "import sys; print(sum(1 for _ in open(sys.argv[1])) - 1)", str(csv)],
            capture_output=True,
            text=True,
        ).stdout
    )
    return {"seconds": round(seconds, 3), "rows_per_s": round(rows / seconds)}


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--reference-rows", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--legs-only", action="store_true", help="skip the whole-process comparison")
    ap.add_argument("--leg", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.leg:
        leg(args.leg, args.work)
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-batch-"))
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "orders.csv"
    gen_s = generate(csv, args.rows)
    result: dict = {
        "benchmark": "bench_batch",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rows": args.rows,
        "csv_mb": round(csv.stat().st_size / 2**20),
        "generate_s": round(gen_s, 2),
    }
    result["csv_to_duckdb"] = run_leg(
        spec_for(csv, {"connector_type": "duckdb", "config": {"table": "orders", "mode": "replace"}}),
        work,
        "duckdb",
    )
    result["csv_to_parquet"] = run_leg(
        spec_for(csv, {"connector_type": "file", "config": {"path": str(work / "out.parquet")}}),
        work,
        "parquet",
    )

    result["duckdb_own_csv_import"] = duckdb_ceiling(csv, work)
    if args.legs_only:
        print(json.dumps(result, indent=2))
        return
    # Whole processes on the reference size: `aggregator run` against the per-record reference.
    small = work / "orders_ref.csv"
    generate(small, args.reference_rows)
    spec_path = work / "ref_engine.json"
    spec_path.write_text(
        json.dumps(
            spec_for(small, {"connector_type": "file", "config": {"path": str(work / "engine_out.parquet")}})
        )
    )
    aggregator = Path(sys.executable).parent / "aggregator"
    # Medians of three runs each: single process timings on this machine vary by +-20%.
    engine_cmd = [str(aggregator), "run", str(spec_path), "--data-dir", str(work / "data-ref")]
    reference_cmd = [
        sys.executable,
        str(HERE / "reference_chain.py"),
        str(spec_path),
        str(small),
        str(work / "ref_out.parquet"),
    ]
    engine_runs, reference_runs = [], []
    for _ in range(3):  # interleaved, so that a slow spell of the machine hits both alike
        engine_runs.append(timed(engine_cmd))
        reference_runs.append(timed(reference_cmd))
    engine_s, reference_s = statistics.median(engine_runs), statistics.median(reference_runs)
    result["process_vs_reference"] = {
        "rows": args.reference_rows,
        "aggregator_run_s": round(engine_s, 3),
        "reference_s": round(reference_s, 3),
        "aggregator_runs_s": [round(t, 3) for t in engine_runs],
        "reference_runs_s": [round(t, 3) for t in reference_runs],
        "speedup": round(reference_s / engine_s, 1),
    }
    duck, parquet = result["csv_to_duckdb"], result["csv_to_parquet"]
    result["targets"] = {
        "rows_per_s_ge_2M": {
            "duckdb": duck["rows_per_s"] >= 2_000_000,
            "parquet": parquet["rows_per_s"] >= 2_000_000,
        },
        "peak_rss_lt_1.5GB": {"duckdb": duck["peak_rss_mb"] < 1536, "parquet": parquet["peak_rss_mb"] < 1536},
        "speedup_ge_10x": result["process_vs_reference"]["speedup"] >= 10,
    }
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
