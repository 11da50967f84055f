"""`aggregator runs` next to a running service (issue 10, target < 300 ms end to end), side by side
with the same command on the same data directory without a service.

    python tests/benchmarks/bench_cli_service.py [--runs 20] [--repeat 10]

A data directory gets `--runs` run records (a 10-row CSV to DuckDB, run in this process), and a copy
of it is served by a real `aggregator serve`. Then `aggregator runs --data-dir D` is started as a
subprocess `--repeat` times against each (alternating), timed from `Popen` to exit: median, min and
max. One more run of each with `-X importtime` says which heavy modules the command imported (next to
a service: no Polars, no DuckDB). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
HEAVY = ("polars", "duckdb", "pyarrow", "numpy", "sqlite_utils", "fastapi")


def seed(data_dir: Path, folder: Path, runs: int) -> None:
    from engine.api.local import LocalEngine
    from tests.pipelines import csv_into_duckdb

    doc = csv_into_duckdb(folder, 10, name="bench numbers", table="numbers")
    with LocalEngine(data_dir) as engine:
        for _ in range(runs):
            record = engine.runs.start(doc, base_dir=folder).result(60)
            assert record["status"] == "success", record


def start_service(data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    from tests.service.conftest import spawn

    served = spawn(data_dir, log)
    try:
        return served.proc, served.wait_ready(60).url
    except AssertionError as e:
        served.proc.kill()
        raise SystemExit(str(e)[-2000:]) from None


def timed_runs(data_dir: Path) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "runs", "--data-dir", str(data_dir)],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=60,
    )  # fmt: skip
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"aggregator runs exited {done.returncode}: {done.stderr}")
    return elapsed, done.stdout


def imported(data_dir: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "app.cli", "runs", "--data-dir", str(data_dir)],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=60,
    )  # fmt: skip
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    return {"modules": len(names), "heavy": sorted(m for m in HEAVY if m in names)}


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "median_ms": round(statistics.median(ms), 1),
        "min_ms": round(min(ms), 1),
        "max_ms": round(max(ms), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="run records in the data directory")
    parser.add_argument("--repeat", type=int, default=10, help="timed commands against each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-service-") as tmp:
        tmp_path = Path(tmp)
        os.environ.setdefault("AGGREGATOR_CONFIG", str(tmp_path / "config"))
        local, served, folder = tmp_path / "local", tmp_path / "served", tmp_path / "in"
        folder.mkdir()
        seed(local, folder, args.runs)
        shutil.copytree(local, served)
        proc, url = start_service(served, tmp_path / "serve.out")
        try:
            timed_runs(served), timed_runs(local)  # first runs: compiled bytecode, warm page cache
            with_service, without = [], []
            for _ in range(args.repeat):
                elapsed, out_served = timed_runs(served)
                with_service.append(elapsed)
                elapsed, out_local = timed_runs(local)
                without.append(elapsed)
            same = len(out_served.splitlines()) == len(out_local.splitlines()) == args.runs + 1
            result = {
                "benchmark": "aggregator runs next to a service",
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load": os.getloadavg(),
                },
                "run_records": args.runs,
                "repeat": args.repeat,
                "with_service": {**summary(with_service), **imported(served)},
                "without_service": {**summary(without), **imported(local)},
                "same_rows_listed": same,
                "target_ms": 300,
                "met": statistics.median(with_service) < 0.3,
                "service_url": url,
            }
        finally:
            proc.terminate()
            proc.wait(30)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
