"""Modbus polling benchmark: points per second polled from simulated meters into TAG_SCHEMA
batches, and the CPU of the polling process (as % of one core).

    python tests/benchmarks/bench_modbus.py [--servers 2] [--tags-per-meter 12500] [--seconds 10]
    python tests/benchmarks/bench_modbus.py --historian [--seconds 60] [--max-latency-ms 250] [--py-spy OUT]
        [--speed-probe]

Each simulator runs in a process of its own (`run_cli`: 4 meters, one unit id each), so its CPU
is not counted; the polling process opens one connection per meter and polls every meter once a
second with 125-register requests. Prints one JSON document.

`--historian` (issue 12): the same 8 meters x 12,500 registers at 1 s (100k values/s offered) as a
real-time pipeline `modbus -> historian` through `run_streaming` on a fresh data directory (the
schedule's default `batch_size` unless `--batch-size`). Over a window that opens once every meter
has delivered: values offered (registers x polls due), stored (historian rows whose poll timestamp
lies in the window), dropped (the engine's counts), p50/p99/max from each value's poll timestamp
to its historian COMMIT (`bench_opcua_pipeline.CommitClock`), and this process's CPU (the whole
pipeline: polling, dispatcher, DuckDB) as % of one core and CPU-seconds per stored value. Its
window is a minute by default: the historian rolls each minute up once (~2 CPU-s at 100,000 tags),
so a shorter window counts that work 0 or 1 times (`minute_boundaries_in_window` says which) and
swung the CPU figure by ~9 points (~1.85 CPU-s in a 20 s window) from run to run. The process
tunes its allocators as a streaming process does (app/memory.py `tune_malloc`: Polars' freed pages
kept 60 s, two glibc arenas; `polars_allocator` shows the setting) and opens the historian as the
service does (not with `RELEASE_AT_ONCE`, which only a foreground run gets); `page_faults_per_s`
counts the fresh pages the process touched in the window. `host_steal_percent`: the share of the
machine's CPU time the hypervisor gave to other guests in the window (/proc/stat). It is one sign
of a shared host, not the only one: in one session the same code took 29 – 44% of a core as
`probe_duckdb_insert.py` slowed from 6.8 to 11.1 CPU-s, in 5 s samples of steal up to ~30% and
in windows with steal under 1% (docs/performance.md). `--speed-probe` measures the machine's speed
itself: probe_duckdb_insert.py's CPU-seconds before the pipeline starts and after it stops
(`speed_probe_cpu_s`; ~30 s more).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_opcua_pipeline's commit clock


def start_simulator(tags: int) -> tuple[subprocess.Popen, int]:
    code = f"from protocols.modbus.simulator import run_cli; run_cli(port=0, tags={tags})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    line = proc.stdout.readline()  # "modbus simulator: tcp://127.0.0.1:PORT units [...], N tags"
    port = int(line.split("tcp://127.0.0.1:")[1].split()[0])
    return proc, port


def speed_probe(env: dict[str, str]) -> float | None:
    """CPU-seconds of probe_duckdb_insert.py's defaults (a minute of this stream's rows inserted,
    committed and checkpointed by DuckDB, in a process of its own, in `env`): the same work takes
    5.8 – 11.1 CPU-s on instances of this 2-core machine, and drifted from 6.8 to 11.1 within one
    session, so a CPU figure of the pipeline says little without it. None if the probe failed or
    took over 5 min."""
    probe = Path(__file__).resolve().parent / "probe_duckdb_insert.py"
    try:
        done = subprocess.run(
            [sys.executable, str(probe)], capture_output=True, text=True, timeout=300, env=env
        )
        return float(json.loads(done.stdout.strip().splitlines()[-1])["cpu_s"])
    except (subprocess.TimeoutExpired, IndexError, KeyError, ValueError):
        return None


def historian_leg(args) -> dict:
    """The pipeline `modbus -> historian` at the polling leg's scale (see the module doc)."""
    import os
    import tempfile
    import threading

    from app.memory import tune_malloc

    # Allocators as a streaming process sets them (app/memory.py), before anything loads Polars
    tune_malloc()

    from bench_opcua_pipeline import CommitClock, cpu_seconds, machine_ticks, steal_percent

    from engine.spec.validate import validate
    from engine.store import ring_buffer
    from engine.store.tag_historian import TAGS_TABLE

    try:
        from engine.store import tag_newest
    except ImportError:  # code before the newest rows were kept in memory (a checkout of older code)
        tag_newest = None
    from engine.store import tag_historian

    try:
        from engine.store import tag_rollup_memory
    except ImportError:  # code before the open minutes were kept in memory
        tag_rollup_memory = None
    if args.no_kept_minutes:
        tag_historian.KEEP_MINUTES = False  # every advance reads raw rows (the code before, A/B)
    from engine.streaming import run_streaming
    from engine.workspace import Workspace
    from protocols import register_all
    from protocols.modbus.simulator import simulator_config

    register_all()
    sims = [start_simulator(args.tags_per_meter) for _ in range(args.servers)]
    clock = CommitClock()
    try:
        endpoints = [("127.0.0.1", port, unit) for _, port in sims for unit in (1, 2, 3, 4)]
        config = simulator_config(endpoints, args.tags_per_meter, args.interval_ms, timeout_ms=2000)
        schedule = {"type": "real_time", "trigger": "data_arrival", "max_latency_ms": args.max_latency_ms}
        if args.batch_size:
            schedule["batch_size"] = args.batch_size
        spec = {
            "name": "bench modbus into the historian",
            "spec_version": 1,
            "nodes": [
                {"id": "modbus", "kind": "source", "connector_type": "modbus", "config": config},
                {
                    "id": "historian",
                    "kind": "destination",
                    "inputs": ["modbus"],
                    "connector_type": "historian",
                    "config": {},
                },
            ],
            "schedule": schedule,
        }
        compiled = validate(spec)
        devices = len(config["devices"])
        tags = devices * args.tags_per_meter
        clock.install()
        with tempfile.TemporaryDirectory() as tmp, Workspace(Path(tmp) / "data") as ws:
            result: dict = {}
            # the first polls connect and settle; the live ring buffer's first lease (30 s) lapses
            total_s = args.warmup + args.seconds + 15.0 + ring_buffer.DEFAULT_LEASE_S
            cancel = threading.Event()
            thread = threading.Thread(
                target=lambda: result.update(run_streaming(compiled, ws, seconds=total_s, cancel=cancel)),
                daemon=True,
            )
            thread.start()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 30 and sum(c[1] for c in clock.commits) < 2 * tags:
                time.sleep(0.1)  # every meter has delivered at least about twice
            # Headless, nobody reads the live view: measure once the ring buffer keeps nothing.
            ring = ring_buffer.ring_buffers(ws.data_dir)
            while ring.keeping and time.monotonic() - t0 < 15 + ring_buffer.DEFAULT_LEASE_S:
                time.sleep(0.1)
            time.sleep(args.warmup)
            profiler = None
            if args.py_spy:  # the window only: start-up and the ring's first lease stay out
                command = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(os.getpid())]
                command += ["--duration", str(int(args.seconds)), "--rate", "50", "--nonblocking"]
                command += ["--format", "raw", "-o", args.py_spy]
                profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            ticks0 = machine_ticks()
            cpu0, start, start_us = cpu_seconds(os.getpid()), time.monotonic(), time.time_ns() // 1000
            # `tag_last` as another process reads the table: every row committed before the last
            # write of the table is in it (engine/store/tag_newest.py); the longest gap between
            # writes in the window is how old the table got
            newest = None if tag_newest is None else tag_newest.of(ws.historian)
            checkpoints0 = None if newest is None else newest.checkpoints
            kept = None if tag_rollup_memory is None else tag_rollup_memory.of(ws.historian)
            kept0 = None if kept is None else kept.advances
            longest_gap = 0.0
            while time.monotonic() - start < args.seconds:
                time.sleep(0.05)
                if newest is not None:
                    longest_gap = max(longest_gap, time.monotonic() - newest.last_write)
            cpu1, end, end_us = cpu_seconds(os.getpid()), time.monotonic(), time.time_ns() // 1000
            faults1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            ticks1 = machine_ticks()
            checkpoints = None if newest is None else newest.checkpoints - checkpoints0  # type: ignore[operator]
            kept_advances = None if kept is None else kept.advances - kept0  # type: ignore[operator]
            load = os.getloadavg()
            ring_bytes, ring_kept = ring.memory_bytes(), ring.keeping
            kept_bytes = None if newest is None else newest.rows().estimated_size()
            max_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            if profiler is not None:
                profiler.wait(60)
            thread.join()
            cur = ws.historian.cursor()
            stored = cur.execute(
                f"SELECT count(*) FROM {TAGS_TABLE} WHERE epoch_us(timestamp) >= ? AND epoch_us(timestamp) < ?",
                [start_us, end_us],
            ).fetchall()[0][0]
            cur.close()
    finally:
        clock.uninstall()
        for proc, _ in sims:
            proc.terminate()
            proc.wait(10)
    wall = end - start
    stream = result.get("stream", {})
    source = stream.get("sources", {}).get("modbus", {})
    offered = tags * wall / (args.interval_ms / 1000)
    latency = clock.window(start, end)
    cpu = cpu1 - cpu0
    return {
        "leg": "modbus_into_historian",
        "status": result.get("status"),
        "error": result.get("error"),
        "devices": devices,
        "tags": tags,
        "interval_ms": args.interval_ms,
        "schedule": schedule,
        "window_s": round(wall, 2),
        "values_offered_per_s": round(offered / wall),
        "values_stored_per_s": round(stored / wall),
        "stored_percent_of_offered": round(100 * stored / offered, 1),
        "rows_dropped": stream.get("rows_dropped"),
        "source_dropped": source.get("counters", {}).get("dropped", 0),
        "late_polls": source.get("counters", {}).get("late_polls", 0),
        "commits_per_s": latency.get("commits_per_s"),
        "poll_timestamp_to_commit_ms": latency.get("source_timestamp_to_commit_ms"),
        "received_at_to_commit_ms": latency.get("received_at_to_commit_ms"),
        "write_and_commit_ms": latency.get("write_and_commit_ms"),
        "pipeline_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "cpu_us_per_stored_value": round(1e6 * cpu / stored, 3) if stored else None,
        "minute_boundaries_in_window": end_us // 60_000_000 - start_us // 60_000_000,
        "checkpoints_in_window": checkpoints,
        "kept_minutes": tag_historian.KEEP_MINUTES if tag_rollup_memory is not None else None,
        "rollup_advances_from_kept_minutes_in_window": kept_advances,
        "load_average_1_5_15": [round(x, 2) for x in load],
        "peak_queued_rows": source.get("peak_queued_rows"),
        "live_ring_buffer": {"keeping": ring_kept, "memory_bytes": ring_bytes},
        "tag_last_longest_gap_between_writes_s": None if newest is None else round(longest_gap, 2),
        "tag_last_kept_in_memory_bytes": kept_bytes,
        "max_rss_mb": max_rss_mb,
        # fresh pages the process touched (minor faults): what an allocator handing pages back costs
        "page_faults_per_s": round((faults1 - faults0) / wall),
        # the hypervisor's share of the window given to other guests (/proc/stat's steal)
        "host_steal_percent": steal_percent(ticks0, ticks1),
        "polars_allocator": os.environ.get("_RJEM_MALLOC_CONF"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--historian", action="store_true", help="modbus -> historian pipeline leg")
    parser.add_argument("--max-latency-ms", type=int, default=250, help="--historian: the schedule's")
    parser.add_argument("--batch-size", type=int, default=None, help="--historian: the schedule's")
    parser.add_argument(
        "--no-kept-minutes",
        action="store_true",
        help="--historian: the rollup's advance reads raw rows, as before the open minutes were kept",
    )
    parser.add_argument(
        "--py-spy", default=None, help="--historian: py-spy raw profile of the window to this file"
    )
    parser.add_argument("--servers", type=int, default=2, help="simulator processes, 4 meters each")
    parser.add_argument("--tags-per-meter", type=int, default=12500)
    parser.add_argument("--interval-ms", type=int, default=1000)
    parser.add_argument(
        "--seconds", type=float, default=None, help="the window: 10 s, or with --historian a minute (60 s)"
    )
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--speed-probe",
        action="store_true",
        help="--historian: run probe_duckdb_insert.py (a minute of the stream's rows into DuckDB) in a"
        " process of its own before the pipeline starts and after it stops: the machine's speed then",
    )
    args = parser.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    if args.seconds is None:
        args.seconds = 60.0 if args.historian else 10.0
    if args.historian:
        import os
        import platform

        out = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        }
        # both probes in the environment this process started with: the leg sets the allocators'
        # variables for itself (tune_malloc), which the probe after it would otherwise inherit
        probe_env = dict(os.environ)
        before = speed_probe(probe_env) if args.speed_probe else None
        out.update(historian_leg(args))
        if args.speed_probe:
            out["speed_probe_cpu_s"] = {"before": before, "after": speed_probe(probe_env)}
        print(json.dumps(out, indent=2))
        return

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
