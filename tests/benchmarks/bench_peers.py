"""Ours against the tools a user would pick instead, in ONE interleaved pass (issue 12, item 5).

    python tests/benchmarks/bench_peers.py --quick                       # small defaults, ~2-3 min
    python tests/benchmarks/bench_peers.py [--legs batch,modbus,opcua,nodered] [--rows 1000000]
        [--rounds 5] [--seconds 10] [--modbus-tags 12500] [--opcua-nodes 2500] [--work DIR]

Every contender is a whole process of its own, started by this one, and the contenders of a leg
take turns: round 1 runs A, B, C; round 2 runs B, C, A; ... so that a change of load on a shared
machine falls on all of them alike. Each figure is the median over the rounds, and each ratio is
ours / peer of those medians (< 1 means ours is faster or cheaper). CPU seconds (user + system of
the process and all its threads) depend far less on the machine's load than wall time: prefer them.

Legs (prints one JSON document):
- batch: bench_batch.py's chain (title case, multiply, filter, timestamp, e-mail validation with
  rejects) on `--rows` generated order rows, CSV -> Parquet and CSV -> DuckDB file: `aggregator
  run SPEC` against the hand-written peers of tests/benchmarks/peers/ (a Polars lazy script, a
  DuckDB SQL script, a pandas script), and for Parquet the naive per-record reference too
  (tests/benchmarks/reference_chain.py, one dict a row; `--no-reference` leaves it out). One
  warm-up run of each first, not counted. Wall seconds, CPU seconds and peak RSS of each process,
  and the rows each wrote (they must agree).
- modbus: values/s and CPU per value of our `modbus` source (protocols/modbus, micro-batches of
  decoded, time-stamped values) against a plain pymodbus script (AsyncModbusTcpClient, one task
  per device reading the same registers in 125-register requests every interval, raw registers
  into a list: what a user's polling script does), both polling the same simulators
  (protocols/modbus/simulator.py, 4 units each, in processes of their own: their CPU not counted).
- opcua: the same for our `opc_ua` source against a plain asyncua script (one subscription,
  `subscribe_data_change` on every node, a handler that appends each value), against the wind-farm
  simulator (protocols/opcua/simulator.py) in a process of its own, every node changing at
  `--opcua-rate-hz`.
- nodered: Node-RED is an optional peer. It runs only if `node`, `npm` and a `node-red` install
  with node-red-contrib-modbus are found (NODE_RED_HOME, else .venv/peers/node-red); otherwise the
  leg says `skipped` and why. Nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PEERS = HERE / "peers"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

QUICK = {
    "rows": 200_000,
    "rounds": 3,
    "seconds": 5.0,
    "modbus_tags": 2_500,
    "modbus_servers": 1,
    "opcua_nodes": 500,
}
# The scales: 8 Modbus units x 12,500 registers at 1 s (100k values/s), 2,500 OPC UA nodes.
FULL = {
    "rows": 1_000_000,
    "rounds": 5,
    "seconds": 10.0,
    "modbus_tags": 12_500,
    "modbus_servers": 2,
    "opcua_nodes": 2_500,
}


# ---- running one contender -----------------------------------------------------------------------
def run_process(cmd: list[str], timeout: float = 900, env: dict | None = None) -> dict[str, Any]:
    """Run `cmd` to its end: wall seconds, CPU seconds (user + system, its own rusage from wait4),
    its peak RSS (MB), exit code and the last JSON line it printed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {
        "exit": proc.returncode,
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "answer": parse_answer(out),
    }
    if proc.returncode:
        result["stderr"] = err.strip()[-600:]
    return result


def parse_answer(out: str) -> dict[str, Any]:
    """What a contender printed: a JSON document (`aggregator run --json`), else its last JSON line
    (the peer scripts), else "KEPT REJECTED" (reference_chain.py)."""
    with contextlib.suppress(ValueError):
        return json.loads(out)
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                return json.loads(line)
    words = out.split()
    if len(words) == 2 and all(w.isdigit() for w in words):
        return {"rows_out": int(words[0]), "rows_rejected": int(words[1])}
    return {}


def median(values: list[float], digits: int = 3) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), digits) if values else None


def ratio(ours: float | None, peer: float | None) -> float | None:
    return round(ours / peer, 2) if ours and peer else None


def interleaved(
    contenders: dict[str, list[str]],
    rounds: int,
    timeout: float = 900,
    env: dict | None = None,
    warmup: bool = False,
) -> dict[str, list]:
    """Each contender's results, the order rotated each round (A B C, B C A, C A B, ...)."""
    names = list(contenders)
    results: dict[str, list] = {name: [] for name in names}
    for name in names[: warmup and len(names)]:  # not counted: page cache, a new data directory
        run_process(contenders[name], timeout, env)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            results[name].append(run_process(contenders[name], timeout, env))
    return results


# ---- batch ---------------------------------------------------------------------------------------
def batch_leg(args, work: Path) -> dict[str, Any]:
    from bench_batch import CHAIN

    csv = work / "orders.csv"
    gen = run_process(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(HERE)!r}); from pathlib import Path; "
            f"from bench_batch import generate; generate(Path({str(csv)!r}), {args.rows})",
        ]
    )
    if gen["exit"]:
        return {"error": f"generating the input failed: {gen.get('stderr')}"}
    aggregator = Path(sys.executable).parent / "aggregator"
    out: dict[str, Any] = {"rows": args.rows, "input_mb": round(csv.stat().st_size / 1e6, 1)}
    for suffix in args.batch_outputs.split(","):
        if suffix == "parquet":
            destination = {"connector_type": "file", "config": {"path": str(work / "ours.parquet")}}
        else:
            destination = {
                "connector_type": "duckdb",
                "config": {"table": "orders", "mode": "replace", "database": str(work / "ours.duckdb")},
            }
        spec = {
            "name": f"peers {suffix}",
            "sources": [{"name": "orders", "connector_type": "file", "config": {"path": str(csv)}}],
            "transformations": CHAIN,
            "destinations": [{"name": "out", **destination}],
        }
        spec_path = work / f"ours_{suffix}.json"
        spec_path.write_text(json.dumps(spec))
        contenders = {
            "ours": [str(aggregator), "run", str(spec_path), "--data-dir", str(work / "data"), "--json"],
        }
        for peer in args.batch_peers.split(","):
            script = PEERS / f"{peer}_chain.py"
            if script.exists():
                contenders[peer] = [
                    sys.executable,
                    str(script),
                    "--input",
                    str(csv),
                    "--output",
                    str(work / f"{peer}.{suffix}"),
                ]
        # The engine reads and writes only inside its allowed folders (engine/spec/paths_policy.py).
        if suffix == "parquet" and args.reference:  # the per-record reference: one dict a row
            contenders["per_record"] = [
                sys.executable,
                str(HERE / "reference_chain.py"),
                str(spec_path),
                str(csv),
                str(work / "per_record.parquet"),
            ]
        roots = {"AGGREGATOR_ALLOWED_ROOTS": str(work.resolve())}
        runs = interleaved(contenders, args.rounds, env=roots, warmup=True)
        leg: dict[str, Any] = {}
        for name, results in runs.items():
            ok = [r for r in results if r["exit"] == 0]
            rows_out = sorted({r["answer"].get("rows_out") for r in ok})
            leg[name] = {
                "runs": len(results),
                "failed": len(results) - len(ok),
                "wall_s": median([r["wall_s"] for r in ok]),
                "cpu_s": median([r["cpu_s"] for r in ok]),
                "peak_rss_mb": median([r["peak_rss_mb"] for r in ok], 1),
                "rows_out": rows_out,
                "rows_rejected": sorted({r["answer"].get("rows_rejected") for r in ok}),
                "walls": [r["wall_s"] for r in results],
            }
            if len(ok) < len(results):
                leg[name]["error"] = next(r.get("stderr") for r in results if r["exit"])
        agree = {tuple(v["rows_out"]) for v in leg.values() if v["rows_out"]}
        leg["rows_out_agree"] = len(agree) == 1
        leg["ratios_ours_to_peer"] = {
            peer: {
                "wall": ratio(leg["ours"]["wall_s"], leg[peer]["wall_s"]),
                "cpu": ratio(leg["ours"]["cpu_s"], leg[peer]["cpu_s"]),
                "peak_rss": ratio(leg["ours"]["peak_rss_mb"], leg[peer]["peak_rss_mb"]),
            }
            for peer in contenders
            if peer != "ours"
        }
        out[f"csv_to_{suffix}"] = leg
    return out


# ---- ingest: the children ------------------------------------------------------------------------
def _window(counter, warmup: float, seconds: float) -> dict[str, Any]:
    """Wait `warmup`, then count `counter()` and this process's CPU over `seconds`."""
    time.sleep(warmup)
    v0, c0, t0 = counter(), _cpu(), time.monotonic()
    time.sleep(seconds)
    v1, c1, t1 = counter(), _cpu(), time.monotonic()
    return {"values": v1 - v0, "cpu_s": round(c1 - c0, 4), "seconds": round(t1 - t0, 3)}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def child_modbus_ours(cfg: dict) -> dict:
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    from engine.context import RunContext
    from protocols.modbus.config import ModbusSourceConfig
    from protocols.modbus.connector import ModbusSource

    source = ModbusSource(ModbusSourceConfig.model_validate(cfg["config"]), RunContext(), "bench")
    source.start(lambda batch: None)
    try:
        result = _window(lambda: source.counters["points"], cfg["warmup"], cfg["seconds"])
    finally:
        source.stop()
    result["errors"] = sum(v for k, v in source.counters.items() if k.startswith("errors_"))
    return result


def child_modbus_plain(cfg: dict) -> dict:
    """A plain pymodbus polling script: no engine code, one task per device."""
    import asyncio
    import logging
    import threading

    from pymodbus.client import AsyncModbusTcpClient

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    width = {"float32": 2, "int32": 2, "uint32": 2, "float64": 4, "int64": 4, "uint64": 4}
    counted = [0]
    errors = [0]

    async def poll(device: dict, stop: asyncio.Event) -> None:
        tags = device["tags"]
        first = min(t["address"] for t in tags)
        last = max(t["address"] + width.get(t.get("type", "uint16"), 1) for t in tags)
        client = AsyncModbusTcpClient(device["host"], port=device["port"], timeout=2)
        await client.connect()
        interval = device["poll_interval_ms"] / 1000
        due = time.monotonic()
        while not stop.is_set():
            registers: list[int] = []
            for start in range(first, last, 125):
                rr = await client.read_holding_registers(
                    start, count=min(125, last - start), device_id=device["unit_id"]
                )
                if rr.isError():
                    errors[0] += 1
                    break
                registers.extend(rr.registers)
            else:
                values = {t["name"]: registers[t["address"] - first] for t in tags}
                counted[0] += len(values)
            due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        client.close()

    async def main(stop: asyncio.Event) -> None:
        await asyncio.gather(*(poll(d, stop) for d in cfg["config"]["devices"]))

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(stop),), daemon=True)
    thread.start()
    try:
        result = _window(lambda: counted[0], cfg["warmup"], cfg["seconds"])
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    result["errors"] = errors[0]
    return result


def child_opcua_ours(cfg: dict) -> dict:
    from engine.context import RunContext
    from protocols.opcua.connector import OpcUaSource

    source = OpcUaSource(
        {
            "endpoint": cfg["endpoint"],
            "nodes": cfg["nodes"],
            "tag_name": "node_id",
            "publishing_interval_ms": 100,
            "sampling_interval_ms": 0,
            "queue_size": 10,
        },
        RunContext(),
    )
    source.start(lambda batch: None)
    try:
        deadline = time.monotonic() + 60
        while source.state != "subscribed" and time.monotonic() < deadline:
            time.sleep(0.05)
        result = _window(lambda: source.counters["notifications"], cfg["warmup"], cfg["seconds"])
    finally:
        source.stop()
    result["subscribed"] = source.state == "subscribed" or result["values"] > 0
    return result


def child_opcua_plain(cfg: dict) -> dict:
    """A plain asyncua script: one subscription, a handler that appends every value."""
    import asyncio
    import logging
    import threading

    from asyncua import Client

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    values: list = []
    ready = threading.Event()

    class Handler:
        def datachange_notification(self, node, val, data) -> None:
            values.append((node, val, data.monitored_item.Value.SourceTimestamp))

    async def main(stop: asyncio.Event) -> None:
        async with Client(cfg["endpoint"], timeout=30) as client:
            sub = await client.create_subscription(100, Handler())
            nodes = [client.get_node(n) for n in cfg["nodes"]]
            await sub.subscribe_data_change(nodes, sampling_interval=0, queuesize=10)
            ready.set()
            await stop.wait()

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(stop),), daemon=True)
    thread.start()
    ready.wait(60)
    try:
        result = _window(lambda: len(values), cfg["warmup"], cfg["seconds"])
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
    result["subscribed"] = ready.is_set()
    return result


CHILDREN = {
    "modbus-ours": child_modbus_ours,
    "modbus-plain": child_modbus_plain,
    "opcua-ours": child_opcua_ours,
    "opcua-plain": child_opcua_plain,
}


# ---- ingest: the parent --------------------------------------------------------------------------
def ingest_summary(runs: dict[str, list], ours: str, peer: str) -> dict[str, Any]:
    leg: dict[str, Any] = {}
    for name, results in runs.items():
        answers = [r["answer"] for r in results if r["exit"] == 0 and r["answer"].get("values")]
        per_s = [a["values"] / a["seconds"] for a in answers]
        us = [1e6 * a["cpu_s"] / a["values"] for a in answers]
        leg[name] = {
            "runs": len(results),
            "failed": len(results) - len(answers),
            "values_per_s": median(per_s, 0),
            "cpu_percent_of_one_core": median([100 * a["cpu_s"] / a["seconds"] for a in answers], 1),
            "cpu_us_per_value": median(us, 2),
            "values_per_s_each": [round(v) for v in per_s],
            "cpu_us_per_value_each": [round(v, 2) for v in us],
            "errors": [a.get("errors", 0) for a in answers],
        }
        if len(answers) < len(results):
            leg[name]["error"] = next(
                (r.get("stderr") or str(r["answer"])) for r in results if r not in answers
            )
    leg["ratios_ours_to_peer"] = {
        "values_per_s": ratio(leg[ours]["values_per_s"], leg[peer]["values_per_s"]),
        "cpu_per_value": ratio(leg[ours]["cpu_us_per_value"], leg[peer]["cpu_us_per_value"]),
    }
    return leg


def child_cmd(kind: str, cfg: dict, work: Path) -> list[str]:
    path = work / f"{kind}.json"
    path.write_text(json.dumps(cfg))
    return [sys.executable, __file__, "--child", kind, "--child-config", str(path)]


def modbus_leg(args, work: Path) -> dict[str, Any]:
    from bench_modbus import start_simulator

    from protocols.modbus.simulator import simulator_config

    sims = [start_simulator(args.modbus_tags) for _ in range(args.modbus_servers)]
    try:
        endpoints = [("127.0.0.1", port, unit) for _, port in sims for unit in (1, 2, 3, 4)]
        config = simulator_config(endpoints, args.modbus_tags, 1000, timeout_ms=2000)
        cfg = {"config": config, "warmup": 2.0, "seconds": args.seconds}
        contenders = {k: child_cmd(k, cfg, work) for k in ("modbus-ours", "modbus-plain")}
        runs = interleaved(contenders, args.rounds, timeout=args.seconds + 120)
    finally:
        for proc, _ in sims:
            proc.terminate()
            proc.wait(10)
    leg = ingest_summary(runs, "modbus-ours", "modbus-plain")
    leg["offered_values_per_s"] = len(endpoints) * args.modbus_tags
    leg["devices"] = len(endpoints)
    return leg


def opcua_leg(args, work: Path) -> dict[str, Any]:
    from bench_opcua import TAGS_PER_TURBINE, node_ids, start_server, stop_server

    turbines = max(1, args.opcua_nodes // TAGS_PER_TURBINE)
    proc, endpoint = start_server(turbines, 1.0 / args.opcua_rate_hz)
    try:
        cfg = {"endpoint": endpoint, "nodes": node_ids(turbines), "warmup": 2.0, "seconds": args.seconds}
        contenders = {k: child_cmd(k, cfg, work) for k in ("opcua-ours", "opcua-plain")}
        runs = interleaved(contenders, args.rounds, timeout=args.seconds + 180)
    finally:
        stop_server(proc)
    leg = ingest_summary(runs, "opcua-ours", "opcua-plain")
    leg["nodes"] = len(cfg["nodes"])
    leg["offered_changes_per_s"] = round(len(cfg["nodes"]) * args.opcua_rate_hz)
    return leg


def nodered_leg(args, work: Path) -> dict[str, Any]:
    """Optional: only with node, npm and an installed Node-RED (nothing is downloaded here)."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return {"skipped": f"{' and '.join(missing)} not found"}
    home = Path(os.environ.get("NODE_RED_HOME", ROOT / ".venv" / "peers" / "node-red"))
    red = home / "node_modules" / ".bin" / "node-red"
    modbus = home / "node_modules" / "node-red-contrib-modbus"
    if not red.exists() or not modbus.exists():
        return {
            "skipped": f"node and npm are here, but no Node-RED with node-red-contrib-modbus under {home} "
            f"(install it with: npm install --prefix {home} node-red node-red-contrib-modbus)"
        }
    return {"skipped": "a Node-RED install was found, but its flow runner is not written yet"}


def machine() -> dict[str, Any]:
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small defaults: " + json.dumps(QUICK))
    ap.add_argument("--legs", default="batch,modbus,opcua,nodered")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=float, help="ingest: the measured window of each contender")
    ap.add_argument("--modbus-tags", type=int, help="registers per meter (4 meters a simulator)")
    ap.add_argument("--modbus-servers", type=int, help="simulator processes, 4 meters each")
    ap.add_argument("--opcua-nodes", type=int)
    ap.add_argument("--opcua-rate-hz", type=float, default=10.0)
    ap.add_argument("--batch-outputs", default="parquet,duckdb")
    ap.add_argument(
        "--batch-peers", default="polars,duckdb,pandas", help="scripts of tests/benchmarks/peers/"
    )
    ap.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="batch: leave out the per-record reference (tests/benchmarks/reference_chain.py)",
    )
    ap.add_argument("--work", type=Path, help="keep the inputs and outputs here (default: a temp dir)")
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--child-config", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](json.loads(args.child_config.read_text()))), flush=True)
        return
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    legs = {"batch": batch_leg, "modbus": modbus_leg, "opcua": opcua_leg, "nodered": nodered_leg}
    unknown = set(args.legs.split(",")) - set(legs)
    if unknown:
        ap.error(f"unknown legs {sorted(unknown)}; choose from {sorted(legs)}")
    report: dict[str, Any] = {"start": machine(), "quick": args.quick, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.legs.split(","):
            leg_work = work / name
            leg_work.mkdir(exist_ok=True)
            t0 = time.perf_counter()
            report[name] = legs[name](args, leg_work)
            report[name]["leg_seconds"] = round(time.perf_counter() - t0, 1)
    report["end"] = machine()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
