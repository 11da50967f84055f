"""Modbus polling benchmark: points per second polled from simulated meters into TAG_SCHEMA
batches, and the CPU of the polling process (as % of one core).

    python tests/benchmarks/bench_modbus.py [--servers 2] [--tags-per-meter 12500] [--seconds 10]

Each simulator runs in a process of its own (`run_cli`: 4 meters, one unit id each), so its CPU
is not counted; the polling process opens one connection per meter and polls every meter once a
second with 125-register requests. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def start_simulator(tags: int) -> tuple[subprocess.Popen, int]:
    code = f"from protocols.modbus.simulator import run_cli; run_cli(port=0, tags={tags})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    line = proc.stdout.readline()  # "modbus simulator: tcp://127.0.0.1:PORT units [...], N tags"
    port = int(line.split("tcp://127.0.0.1:")[1].split()[0])
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=2, help="simulator processes, 4 meters each")
    parser.add_argument("--tags-per-meter", type=int, default=12500)
    parser.add_argument("--interval-ms", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    from engine.context import RunContext
    from protocols.modbus.config import ModbusSourceConfig
    from protocols.modbus.connector import ModbusSource
    from protocols.modbus.simulator import simulator_config

    sims = [start_simulator(args.tags_per_meter) for _ in range(args.servers)]
    try:
        endpoints = [("127.0.0.1", port, unit) for _, port in sims for unit in (1, 2, 3, 4)]
        config = ModbusSourceConfig.model_validate(
            simulator_config(endpoints, args.tags_per_meter, args.interval_ms, timeout_ms=2000)
        )
        source = ModbusSource(config, RunContext(), "bench")
        rows = [0]

        def emit(batch) -> None:
            rows[0] += batch.height

        source.start(emit)
        time.sleep(args.warmup)
        c0, t0, p0, r0 = time.process_time(), time.monotonic(), source.counters["points"], rows[0]
        e0 = sum(v for k, v in source.counters.items() if k.startswith("errors_"))
        time.sleep(args.seconds)
        c1, t1, p1, r1 = time.process_time(), time.monotonic(), source.counters["points"], rows[0]
        e1 = sum(v for k, v in source.counters.items() if k.startswith("errors_"))
        counters = dict(source.counters)
        source.stop()
    finally:
        for proc, _ in sims:
            proc.terminate()
            proc.wait(10)
    wall = t1 - t0
    print(
        json.dumps(
            {
                "devices": len(config.devices),
                "tags": len(config.devices) * args.tags_per_meter,
                "interval_ms": args.interval_ms,
                "seconds": round(wall, 2),
                "points_per_s": round((p1 - p0) / wall),
                "rows_emitted_per_s": round((r1 - r0) / wall),
                "cpu_percent_of_one_core": round(100 * (c1 - c0) / wall, 1),
                "errors_in_window": e1 - e0,
                "late_polls": counters.get("late_polls", 0),
                "counters": counters,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
