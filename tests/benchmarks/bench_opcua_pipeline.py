"""End-to-end benchmark: real-time OPC UA into the historian. Prints one JSON document.

A real-time pipeline `opc_ua -> historian` runs through `run_streaming` on a fresh data directory,
against the wind-farm simulator in a process of its own (its CPU is not ours, as with a real
server). Legs:

- latency: ~1,000 nodes changing every 100 ms (10,000 changes/s), publishing and sampling
  100 ms, `max_latency_ms` 100: p50/p99/max from the value's source timestamp to the historian
  commit (the target's "value change to historian commit"), and from `received_at` (when the
  client decoded it) to the commit, which is what the runner's own `latency_ms` reports.
- one_process: 2,500 nodes at 10 Hz (25,000 changes/s) the same way, in one process.
- two_workers: two `opc_ua` sources, each in a worker process (`engine.streaming.worker.
  ProcessSource`, Arrow IPC batches back to the runner), each subscribed to half of 4,000 nodes
  (40,000 changes/s), union -> historian: the spec marks each source `"worker_process": true`.

How it measures, per leg: the run starts; once every source is subscribed and 2 s have settled,
a window of `--seconds` opens. Commit latencies are taken by wrapping `HistorianSink.commit` in
this process (the real sink; the wrapper notes the clock after COMMIT returns and subtracts each
committed row's `timestamp` and `received_at`), for commits inside the window. Drops are the
engine's own counts (queue drop-oldest, the source's hold-back limit) and a completeness check
in the historian: every ramp tag (Aux..) changes at every server update round and each round
carries one source timestamp, so every (source, round) inside the window must hold all ramp tags.
CPU is per process from /proc over the window (100% = one core); load averages are the machine's.

    .venv/bin/python tests/benchmarks/bench_opcua_pipeline.py [--legs latency,one_process,two_workers]
        [--runs 3] [--seconds 8] [--servers 1|2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TAGS_PER_TURBINE = 20  # 4 wind-farm tags + 16 ramps (Aux05..Aux20), as bench_opcua.py
SETTLE_S = 2.0  # after subscribing: the first notification carries every item's current value
SUBSCRIBE_ALLOWANCE_S = (
    20.0  # the run lasts this + settle + window; subscribing must fit in it (workers spawn)
)
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

LEGS = {
    "latency": {"nodes": 1000, "workers": 0},
    "one_process": {"nodes": 2500, "workers": 0},
    "two_workers": {"nodes": 4000, "workers": 2},
}


# ---- the simulator, in a process of its own ------------------------------------------------------
def serve(turbines: int, interval_s: float) -> None:
    """The subprocess: a simulator; "count" on stdin prints its update rounds; EOF stops it."""
    import logging

    from protocols.opcua.simulator import OpcUaSimulator

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    sim = OpcUaSimulator(turbines=turbines, tags_per_turbine=TAGS_PER_TURBINE, interval_s=interval_s)
    sim.start()
    print(sim.endpoint, flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(json.dumps({"updates": sim.updates}), flush=True)
    sim.stop()


class Server:
    def __init__(self, turbines: int, rate_hz: float):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(turbines), str(1.0 / rate_hz)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.endpoint = self.proc.stdout.readline().strip()
        if not self.endpoint.startswith("opc.tcp://"):
            self.proc.kill()
            raise SystemExit(f"the simulator did not start: {self.endpoint!r}")
        self.node_ids = [
            f"ns=2;s=Turbine{t + 1:02d}.{name}" for t in range(turbines) for name in _tag_names()
        ]

    def updates(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["updates"]

    def stop(self) -> None:
        self.proc.communicate("", timeout=60)


def _tag_names() -> list[str]:
    from protocols.opcua.simulator import tag_names

    return tag_names(TAGS_PER_TURBINE)


# ---- CPU per process -------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime + stime


def machine_ticks() -> list[int] | None:
    """The machine's CPU time by state (/proc/stat's first line: user, nice, system, idle, iowait,
    irq, softirq, steal, ...), or None where there is no /proc/stat. Two readings give
    `steal_percent` over the time between them."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None


def steal_percent(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of all CPUs' time the hypervisor gave to other guests between two `machine_ticks`
    readings: where it is high, another tenant had this machine's cores. One sign of a shared host,
    not the only one: a guest also runs slower with no steal at all (shared caches, memory, sibling
    hyperthreads), which only a fixed piece of work timed (bench_modbus.py `--speed-probe`) shows."""
    if before is None or after is None or len(before) < 8 or len(after) < 8:
        return None
    # guest time is counted in user time already: leave it out of the total
    total = sum(after[:8]) - sum(before[:8])
    return round(100 * (after[7] - before[7]) / total, 1) if total > 0 else None


# ---- the commit hook: latency of every committed row ----------------------------------------------
class CommitClock:
    """Wraps HistorianSink.write/commit in this process: after each COMMIT returns, notes now minus
    each written row's `timestamp` and `received_at` (epoch microseconds)."""

    def __init__(self) -> None:
        import numpy as np

        self.np = np
        # (monotonic, rows, source_ms, received_ms, write + commit seconds)
        self.commits: list[tuple[float, int, Any, Any, float]] = []
        self._pending: dict[int, list[tuple[Any, Any]]] = {}
        self._write_started: dict[int, float] = {}

    def install(self) -> None:
        from engine.connectors.historian_connector import HistorianSink

        clock, write, commit = self, HistorianSink.write, HistorianSink.commit

        def timed_write(sink, batch):
            clock._write_started.setdefault(id(sink), time.monotonic())
            write(sink, batch)
            if batch.height:
                # Datetime("us") columns: their physical Int64 is epoch microseconds (no query).
                clock._pending.setdefault(id(sink), []).append(
                    (
                        batch["timestamp"].to_physical().to_numpy(),
                        batch["received_at"].to_physical().to_numpy(),
                    )
                )

        def timed_commit(sink):
            commit(sink)
            now_us, mono = time.time_ns() // 1000, time.monotonic()
            parts = clock._pending.pop(id(sink), [])
            began = clock._write_started.pop(id(sink), mono)
            if parts:
                t = clock.np.concatenate([p[0] for p in parts])
                r = clock.np.concatenate([p[1] for p in parts])
                clock.commits.append(
                    (mono, len(t), (now_us - t) / 1000.0, (now_us - r) / 1000.0, mono - began)
                )

        HistorianSink.write, HistorianSink.commit = timed_write, timed_commit
        self._restore = (HistorianSink, write, commit)

    def uninstall(self) -> None:
        if not hasattr(self, "_restore"):
            return
        cls, write, commit = self._restore
        cls.write, cls.commit = write, commit

    def window(self, start: float, end: float) -> dict[str, Any]:
        np = self.np
        inside = [c for c in self.commits if start <= c[0] <= end]
        if not inside:
            return {"commits": 0}
        source = np.concatenate([c[2] for c in inside])
        received = np.concatenate([c[3] for c in inside])

        def pct(values) -> dict[str, float]:
            return {
                "p50": round(float(np.percentile(values, 50)), 1),
                "p99": round(float(np.percentile(values, 99)), 1),
                "max": round(float(values.max()), 1),
            }

        return {
            "commits": len(inside),
            "rows_committed": int(sum(c[1] for c in inside)),
            "commits_per_s": round(len(inside) / (end - start), 1),
            "source_timestamp_to_commit_ms": pct(source),
            "received_at_to_commit_ms": pct(received),
            "write_and_commit_ms": pct(np.array([1000 * c[4] for c in inside])),
        }


# ---- the pipeline ------------------------------------------------------------------------------------
def pipeline_spec(groups: list[tuple[str, list[str]]], args, *, workers: bool) -> dict[str, Any]:
    """`groups`: (endpoint, node ids) per source; `workers`: each source in a worker process."""
    nodes: list[dict[str, Any]] = []
    for i, (endpoint, ids) in enumerate(groups):
        nodes.append(
            {
                "id": f"opcua{i + 1}",
                "kind": "source",
                "connector_type": "opc_ua",
                **({"worker_process": True} if workers else {}),
                "config": {
                    "endpoint": endpoint,
                    "nodes": ids,
                    "tag_name": "node_id",
                    "publishing_interval_ms": args.publishing_ms,
                    "sampling_interval_ms": args.sampling_ms,
                    "queue_size": args.queue_size,
                },
            }
        )
    upstream = nodes[0]["id"]
    if len(nodes) > 1:
        nodes.append(
            {
                "id": "all",
                "kind": "transform",
                "inputs": [n["id"] for n in nodes],
                "transform": {"type": "union"},
            }
        )
        upstream = "all"
    nodes.append(
        {
            "id": "historian",
            "kind": "destination",
            "inputs": [upstream],
            "connector_type": "historian",
            "config": {},
        }
    )
    return {
        "name": "bench opc ua into the historian",
        "spec_version": 1,
        "nodes": nodes,
        "schedule": {
            "type": "real_time",
            "trigger": "data_arrival",
            "max_latency_ms": args.max_latency_ms,
            "batch_size": args.batch_size,
        },
    }


def completeness(ws, start_us: int, end_us: int, ramp_tags: dict[str, int]) -> dict[str, int]:
    """Ramp values in the historian for every (source, update round) strictly inside the window."""
    from engine.store.tag_historian import TAGS_TABLE

    cur = ws.historian.cursor()
    try:
        rows = cur.execute(
            f"SELECT source, epoch_us(timestamp) AS ts, count(*) FROM {TAGS_TABLE}"
            " WHERE tag LIKE '%.Aux%' AND quality = 'good' GROUP BY source, ts ORDER BY source, ts"
        ).fetchall()
        stored = cur.execute(
            f"SELECT count(*) FROM {TAGS_TABLE} WHERE epoch_us(timestamp) > ? AND epoch_us(timestamp) < ?",
            [start_us, end_us],
        ).fetchall()[0][0]
    finally:
        cur.close()
    expected = got = rounds = 0
    for source, ts, count in rows:
        if start_us < ts < end_us:
            rounds += 1
            expected += ramp_tags[source]
            got += count
    return {
        "rounds": rounds,
        "ramp_values_expected": expected,
        "ramp_values_stored": got,
        "missing": expected - got,
        "values_stored": stored,
    }


def run_leg(name: str, nodes: int, workers: int, args) -> dict[str, Any]:
    from engine.spec.validate import validate
    from engine.store import ring_buffer
    from engine.streaming import run_streaming
    from engine.workspace import Workspace

    turbines_total = -(-nodes // TAGS_PER_TURBINE)
    groups_n = max(1, workers)
    servers_n = args.servers if workers else 1
    servers = [Server(turbines_total // servers_n, args.rate_hz) for _ in range(servers_n)]
    clock = CommitClock()
    try:
        if servers_n == 1:  # every source subscribes to its share of the one server's nodes
            ids = servers[0].node_ids
            groups = [(servers[0].endpoint, ids[g::groups_n]) for g in range(groups_n)]
        else:  # a server per source
            groups = [(s.endpoint, s.node_ids) for s in servers]
        ramp_tags = {f"opcua{i + 1}": sum(".Aux" in n for n in ids) for i, (_, ids) in enumerate(groups)}
        spec = pipeline_spec(groups, args, workers=bool(workers))
        compiled = validate(spec)
        subscribed: dict[str, float] = {}
        events: list[dict] = []

        def on_event(event: dict) -> None:
            if event.get("event") == "source_state" and event.get("state") == "subscribed":
                subscribed.setdefault(event["node"], time.monotonic())
            elif event.get("event") == "alarm":
                events.append(event)

        clock.install()
        with tempfile.TemporaryDirectory() as tmp, Workspace(Path(tmp) / "data") as ws:
            result: dict[str, Any] = {}
            # headless: the window opens once the live ring buffer's first lease has lapsed (issue 12)
            total_s = SUBSCRIBE_ALLOWANCE_S + SETTLE_S + args.seconds + ring_buffer.DEFAULT_LEASE_S
            thread = threading.Thread(
                target=lambda: result.update(run_streaming(compiled, ws, seconds=total_s, on_event=on_event)),
                daemon=True,
            )
            t_run = time.monotonic()
            thread.start()
            while len(subscribed) < len(groups) and time.monotonic() - t_run < SUBSCRIBE_ALLOWANCE_S:
                time.sleep(0.05)
            if len(subscribed) < len(groups):
                thread.join()
                return {
                    "leg": name,
                    "error": f"not subscribed within {SUBSCRIBE_ALLOWANCE_S:g} s",
                    "run": result,
                }
            time.sleep(SETTLE_S)
            ring = ring_buffer.ring_buffers(ws.data_dir)
            while (
                ring.keeping
                and time.monotonic() - t_run < SUBSCRIBE_ALLOWANCE_S + ring_buffer.DEFAULT_LEASE_S
            ):
                time.sleep(0.1)
            pids = {"runner (main)": os.getpid()}
            pids.update({f"worker {p.pid}": p.pid for p in multiprocessing.active_children()})
            pids.update({f"simulator {i + 1}": s.proc.pid for i, s in enumerate(servers)})
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            upd0 = [s.updates() for s in servers]
            start, start_us = time.monotonic(), time.time_ns() // 1000
            time.sleep(args.seconds)
            end, end_us = time.monotonic(), time.time_ns() // 1000
            cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
            upd1 = [s.updates() for s in servers]
            load = os.getloadavg()
            ring_bytes = ring.memory_bytes()
            thread.join()
            complete = completeness(ws, start_us, end_us, ramp_tags)
        elapsed = end - start
        stream = result.get("stream", {})
        rounds_per_s = [round((b - a) / elapsed, 2) for a, b in zip(upd0, upd1, strict=True)]
        offered = sum(r * len(s.node_ids) for r, s in zip(rounds_per_s, servers, strict=True))
        source_counters = {nid: s.get("counters", {}) for nid, s in stream.get("sources", {}).items()}
        latency = clock.window(start, end)
        dropped = (
            stream.get("rows_dropped", 0)
            + sum(c.get("dropped", 0) for c in source_counters.values())
            + complete["missing"]
        )
        return {
            "leg": name,
            "status": result.get("status"),
            "error": result.get("error"),
            "nodes": sum(len(ids) for _, ids in groups),
            "sources": len(groups),
            "worker_processes": workers,
            "simulator_processes": servers_n,
            "window_s": round(elapsed, 2),
            "server_update_rounds_per_s": rounds_per_s,
            "offered_changes_per_s": round(offered),
            # values whose source timestamp lies in the window, all in the historian at the end
            "stored_per_s": round(complete["values_stored"] / elapsed),
            "committed_per_s": round(latency.get("rows_committed", 0) / elapsed),
            "dropped_total": dropped,
            "engine_rows_dropped": stream.get("rows_dropped"),
            "completeness": complete,
            "latency": latency,
            "runner_latency_ms_received_at_to_commit": stream.get("latency_ms"),
            "cpu_percent": {k: round(100 * (cpu1[k] - cpu0[k]) / elapsed) for k in pids},
            "load_average_1_5_15": [round(x, 2) for x in load],
            "source_counters": source_counters,
            "peak_queued_rows": {
                nid: s.get("peak_queued_rows") for nid, s in stream.get("sources", {}).items()
            },
            "drop_alarms": len(events),
            "live_ring_buffer_bytes": ring_bytes,
        }
    finally:
        clock.uninstall()
        for s in servers:
            s.stop()


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "latency" in r and r["latency"].get("commits")]
    if not ok:
        return {}

    def med(get) -> float:
        return round(statistics.median(get(r) for r in ok), 1)

    lat = "latency"
    return {
        "runs": len(ok),
        "offered_changes_per_s": med(lambda r: r["offered_changes_per_s"]),
        "stored_per_s": med(lambda r: r["stored_per_s"]),
        "committed_per_s": med(lambda r: r["committed_per_s"]),
        "dropped_total_max": max(r["dropped_total"] for r in ok),
        "source_to_commit_ms": {
            q: med(lambda r, q=q: r[lat]["source_timestamp_to_commit_ms"][q]) for q in ("p50", "p99", "max")
        },
        "received_to_commit_ms": {
            q: med(lambda r, q=q: r[lat]["received_at_to_commit_ms"][q]) for q in ("p50", "p99", "max")
        },
        "cpu_percent": {k: med(lambda r, k=k: r["cpu_percent"][k]) for k in ok[0]["cpu_percent"]},
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), float(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legs", default=",".join(LEGS), help="comma-separated: " + ", ".join(LEGS))
    parser.add_argument("--runs", type=int, default=3, help="runs per leg (medians reported)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measurement window per run")
    parser.add_argument("--nodes", type=int, default=None, help="override every leg's node count")
    parser.add_argument("--rate-hz", type=float, default=10.0, help="server update rounds per second")
    parser.add_argument("--servers", type=int, default=1, choices=(1, 2), help="simulators for two_workers")
    parser.add_argument("--publishing-ms", type=int, default=100)
    parser.add_argument("--sampling-ms", type=int, default=100)
    parser.add_argument("--queue-size", type=int, default=10, help="monitored item queue size")
    parser.add_argument("--max-latency-ms", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=50_000, help="schedule batch_size (rows)")
    args = parser.parse_args()
    import logging

    from protocols import register_all

    register_all()
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    out: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {k: v for k, v in vars(args).items() if k != "legs"},
    }
    for leg in args.legs.split(","):
        conf = LEGS[leg]
        runs = [run_leg(leg, args.nodes or conf["nodes"], conf["workers"], args) for _ in range(args.runs)]
        out[leg] = {"median": median_of(runs), "runs": runs}
        print(json.dumps({leg: out[leg]["median"]}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
