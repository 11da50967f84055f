"""DNP3 benchmark, opendnp3 on both sides: points per second through our master (Dnp3Source) from
our outstation (the substation RTU simulator), into TAG_SCHEMA batches, and the CPU of the
master's process (as % of one core).

    python tests/benchmarks/bench_dnp3.py [--feeders 4 100] [--seconds 5]

The outstation runs in a process of its own (`run_cli`), so its CPU is not counted. The master
polls integrity (classes 1, 2, 3, 0) back to back (`integrity_poll_interval_s` 1 ms: opendnp3
runs one task at a time, so the next poll starts as soon as the last one finished). Prints one
JSON document with one entry per RTU size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def start_outstation(feeders: int) -> tuple[subprocess.Popen, int, int]:
    tags = feeders * 14  # run_cli serves 14 points a feeder
    code = f"from protocols.dnp3.simulator import run_cli; run_cli(port=0, tags={tags}, seconds=None)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    line = proc.stdout.readline()  # "DNP3 outstation on dnp3://127.0.0.1:PORT (...): N points (F feeders)"
    port = int(line.split("dnp3://127.0.0.1:")[1].split()[0])
    points = int(line.rsplit(": ", 1)[1].split()[0])
    return proc, port, points


def measure(feeders: int, seconds: float, warmup: float) -> dict:
    from engine.context import RunContext
    from protocols.dnp3.config import Dnp3SourceConfig
    from protocols.dnp3.connector import Dnp3Source

    proc, port, points = start_outstation(feeders)
    try:
        config = Dnp3SourceConfig(
            port=port, accept_unsolicited=False, integrity_poll_interval_s=0.001, event_poll_interval_s=3600
        )
        source = Dnp3Source(config, RunContext(), "bench")
        rows = [0]

        def emit(batch) -> None:
            rows[0] += batch.height

        source.start(emit)
        time.sleep(warmup)
        c0, t0, r0, p0 = time.process_time(), time.monotonic(), rows[0], source.counters["integrity_polls"]
        time.sleep(seconds)
        c1, t1, r1, p1 = time.process_time(), time.monotonic(), rows[0], source.counters["integrity_polls"]
        counters = dict(source.counters)
        source.stop()
    finally:
        proc.terminate()
        proc.wait(10)
    wall = t1 - t0
    return {
        "points": points,
        "seconds": round(wall, 2),
        "integrity_polls_per_s": round((p1 - p0) / wall, 1),
        "points_per_s": round((r1 - r0) / wall),
        "cpu_percent_of_one_core": round(100 * (c1 - c0) / wall, 1),
        "errors": counters.get("errors", 0) + counters.get("item_errors", 0),
        "counters": counters,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--feeders", type=int, nargs="+", default=[4, 100], help="RTU sizes (14 points a feeder)"
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    results = [measure(feeders, args.seconds, args.warmup) for feeders in args.feeders]
    print(json.dumps({"stack": "opendnp3 (yadnp3) master and outstation", "runs": results}, indent=2))


if __name__ == "__main__":
    main()
