"""OPC UA benchmark: value changes per second one client process receives, and the time to create
10,000 monitored items. Prints one JSON document.

The simulator runs in a subprocess (its own core, as a real server would), so the figures are the
client's. Drops are counted on the ramp tags (Aux..), which change at every update round: each
round the server stamps every value with one source timestamp, so a ramp tag must arrive once per
round; a missing (tag, round) is a drop.

    .venv/bin/python tests/benchmarks/bench_opcua.py [--nodes 2500] [--rate-hz 10] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TAGS_PER_TURBINE = 20  # 4 wind-farm tags + 16 ramps


def serve(turbines: int, interval_s: float) -> None:
    """The subprocess: a simulator until stdin closes."""
    from protocols.opcua.simulator import OpcUaSimulator

    sim = OpcUaSimulator(turbines=turbines, tags_per_turbine=TAGS_PER_TURBINE, interval_s=interval_s)
    sim.start()
    print(sim.endpoint, flush=True)
    sys.stdin.read()
    print(json.dumps({"updates": sim.updates}), flush=True)
    sim.stop()


def start_server(turbines: int, interval_s: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(turbines), str(interval_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    if not endpoint.startswith("opc.tcp://"):
        proc.kill()
        raise SystemExit(f"the simulator did not start: {endpoint!r}")
    return proc, endpoint


def stop_server(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate("", timeout=60)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def node_ids(turbines: int) -> list[str]:
    from protocols.opcua.simulator import tag_names, turbine_name

    names = tag_names(TAGS_PER_TURBINE)
    return [f"ns=2;s={turbine_name(t)}.{n}" for t in range(turbines) for n in names]


def bench_create_items(count: int) -> dict:
    """Seconds to create `count` monitored items in one subscription (the server is idle)."""
    from collections import Counter

    from protocols.opcua.client import OpcUaSession, TagNode
    from protocols.opcua.config import OpcUaConfig

    turbines = -(-count // TAGS_PER_TURBINE)
    proc, endpoint = start_server(turbines, 3600.0)
    try:
        nodes = [TagNode(n, n) for n in node_ids(turbines)[:count]]
        config = OpcUaConfig(endpoint=endpoint, nodes=[n.node_id for n in nodes[:1]], tag_name="node_id")

        async def run() -> dict:
            async with OpcUaSession(config, Counter()) as session:
                start = time.perf_counter()
                _, refused = await session.subscribe(nodes, lambda *a: None)
                seconds = time.perf_counter() - start
            return {"monitored_items": count, "seconds": round(seconds, 3), "refused": len(refused)}

        return asyncio.run(run())
    finally:
        stop_server(proc)


def bench_throughput(turbines: int, rate_hz: float, seconds: float) -> dict:
    """Values per second through the real `opc_ua` source (micro-batches into a callback)."""
    import polars as pl

    from engine.context import RunContext
    from protocols.opcua.connector import OpcUaSource

    proc, endpoint = start_server(turbines, 1.0 / rate_hz)
    frames: list[pl.DataFrame] = []
    nodes = node_ids(turbines)
    source = OpcUaSource(
        {
            "endpoint": endpoint,
            "nodes": nodes,
            "tag_name": "node_id",
            "publishing_interval_ms": 100,
            "sampling_interval_ms": 0,
            "queue_size": 10,
        },
        RunContext(),
    )
    try:
        source.start(frames.append)
        deadline = time.monotonic() + 60
        while source.state != "subscribed" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # settle: the first notification carries every item's current value
        first = len(frames)
        cpu0, start, counted0 = time.process_time(), time.monotonic(), source.counters["notifications"]
        time.sleep(seconds)
        counted1, elapsed, cpu = (
            source.counters["notifications"],
            time.monotonic() - start,
            time.process_time() - cpu0,
        )
        window = frames[first:]
    finally:
        source.stop()
        server = stop_server(proc)
    frame = pl.concat(window) if window else pl.DataFrame()
    ramps = frame.filter(pl.col("tag").str.contains(r"\.Aux"))
    rounds = ramps["timestamp"].unique().sort()
    inner = rounds[1:-1]  # the first and last round may straddle the window
    got = ramps.filter(pl.col("timestamp").is_in(inner.implode())).height
    ramp_tags = sum(1 for n in nodes if ".Aux" in n)
    expected = len(inner) * ramp_tags
    return {
        "nodes": len(nodes),
        "server_rate_hz": rate_hz,
        "offered_changes_per_s": round(len(nodes) * rate_hz),
        "received_per_s": round((counted1 - counted0) / elapsed),
        "client_cpu_percent": round(100 * cpu / elapsed),
        "batches_per_s": round(len(window) / elapsed, 1),
        "rounds_seen": len(rounds),
        "server_update_rounds_per_s": None if not server else round(server["updates"] / (elapsed + 2), 1),
        "ramp_values_expected": expected,
        "ramp_values_received": got,
        "dropped": max(0, expected - got),
        "client_counters": dict(source.counters),
    }


def bench_client_ceiling(nodes: int, rounds: int) -> dict:
    """What one client process can take when the server is not the limit: publish responses of
    `nodes` values, encoded once as the server sends them, are decoded and dispatched through the
    source's own subscription class into micro-batches, round after round, on one core."""
    from datetime import UTC, datetime

    from asyncua import ua
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

    from engine.context import RunContext
    from protocols.opcua.client import _batch_subscription_class
    from protocols.opcua.connector import OpcUaSource

    source = OpcUaSource({"endpoint": "opc.tcp://127.0.0.1:1", "nodes": ["i=85"]}, RunContext(), "bench")
    subscription = _batch_subscription_class()(None, ua.CreateSubscriptionParameters(), source._on_value)
    subscription.tags = {handle: f"Turbine{handle // 20:02d}.Aux{handle % 20:02d}" for handle in range(nodes)}
    now = datetime.now(UTC)
    items = [
        ua.MonitoredItemNotification(
            ClientHandle=handle,
            Value=ua.DataValue(
                ua.Variant(float(handle), ua.VariantType.Double), SourceTimestamp=now, ServerTimestamp=now
            ),
        )
        for handle in range(nodes)
    ]
    response = ua.PublishResponse()
    response.Parameters.NotificationMessage.NotificationData = [
        ua.DataChangeNotification(MonitoredItems=items)
    ]
    payload = struct_to_binary(response)

    async def run() -> tuple[float, float, int]:
        rows = 0
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            decoded = struct_from_binary(ua.PublishResponse, Buffer(payload))
            await subscription.publish_callback(decoded.Parameters)
            rows += source._builder.take().height
        return time.perf_counter() - start, time.process_time() - cpu, rows

    elapsed, cpu, rows = asyncio.run(run())
    return {
        "values_per_publish": nodes,
        "values": rows,
        "values_per_s": round(rows / elapsed),
        "cpu_us_per_value": round(1e6 * cpu / rows, 1),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), float(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--nodes", type=int, default=2500, help="subscribed nodes (rounded to 20 per turbine)"
    )
    parser.add_argument("--rate-hz", type=float, default=10.0, help="server update rounds per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--items", type=int, default=10_000, help="monitored items for the creation timing")
    args = parser.parse_args()
    result = {
        "client_ceiling": bench_client_ceiling(args.nodes, 20),
        "create_items": bench_create_items(args.items),
        "throughput": bench_throughput(-(-args.nodes // TAGS_PER_TURBINE), args.rate_hz, args.seconds),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
