"""Ours against the tools a user would pick instead, in ONE interleaved pass (issue 12, item 5).

    python tests/benchmarks/bench_peers.py --quick                       # small defaults, ~2-3 min
    python tests/benchmarks/bench_peers.py [--legs batch,modbus,opcua,nodered] [--rows 1000000]
        [--rounds 5] [--seconds 10] [--modbus-tags 12500] [--opcua-nodes 2500] [--work DIR]
        [--nodered-protocols opcua,modbus] [--nodered-opcua-nodes N] [--nodered-warmup 15]

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
- nodered: Node-RED as a peer, in the same interleaved rounds, whole processes. Optional: it runs
  only if `node`, `npm` and the pinned install of tests/benchmarks/nodered/ are found (NODE_RED_HOME,
  else .venv/peers/node-red; benchmark only, never a product dependency); otherwise it says
  `skipped` with the install line, from the repository root (nothing is downloaded at run time):
      mkdir -p .venv/peers/node-red && cp tests/benchmarks/nodered/package*.json .venv/peers/node-red/ \
          && npm ci --prefix .venv/peers/node-red --no-audit --no-fund
  Node-RED runs headless (`node red.js --userDir TMP --settings nodered/settings.js FLOWS`: editor
  and admin API off, the flow's GET /count on 127.0.0.1); its CPU is /proc/<pid>/stat utime +
  stime (children included) over the same kind of window as ours. `--nodered-protocols`:
  - opcua: nodered/opcua_flow.json, node-red-contrib-opcua's OpcUa-Client subscribing to every node
    in one go (topic "multiple": one subscription, one monitored-item group, publishing and
    sampling 100 ms) and a function node counting each value: the cheapest honest sink (a user
    storing them would add a database node's cost). Beside it: our pipeline into the historian
    (`opcua-historian`, run_streaming on a fresh data directory), our source alone (`opcua-ours`,
    the opcua leg's) and the plain asyncua script; the simulator's update rounds in each window
    give what it offered (`received_of_offered`).
  - modbus: nodered/modbus_flow.json, node-red-contrib-modbus 5.23.3 (a modbus-client a device, an
    inject every interval into a function splitting the register range into 125-register FC 3
    requests, a modbus-flex-getter, a function counting registers, converted to tags), beside our
    source and the plain pymodbus script, at the modbus leg's scale.
  Every contender waits for its first values, then `--nodered-warmup` seconds (15; 5 with
  --quick: Node-RED works off a backlog for 10 - 25 s after subscribing to 2,500 nodes), then its
  window.
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
    "nodered_warmup": 5.0,
}
# The scales: 8 Modbus units x 12,500 registers at 1 s (100k values/s), 2,500 OPC UA nodes.
FULL = {
    "rows": 1_000_000,
    "rounds": 5,
    "seconds": 10.0,
    "modbus_tags": 12_500,
    "modbus_servers": 2,
    "opcua_nodes": 2_500,
    "nodered_warmup": 15.0,
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
    """Wait for the first values (up to 60 s), then `warmup`, then count `counter()` and this
    process's CPU over `seconds`."""
    deadline = time.monotonic() + 60
    while not counter() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(warmup)
    v0, c0, t0, e0 = counter(), _cpu(), time.monotonic(), time.time()
    time.sleep(seconds)
    v1, c1, t1, e1 = counter(), _cpu(), time.monotonic(), time.time()
    return {"values": v1 - v0, "cpu_s": round(c1 - c0, 4), "seconds": round(t1 - t0, 3), "epoch": [e0, e1]}


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
        # watchdog_s: asyncua's health probe (a server-state read every 1 s by default, 1 s timeout)
        async with Client(
            cfg["endpoint"], timeout=30, watchdog_intervall=cfg.get("watchdog_s", 1.0)
        ) as client:
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


def child_opcua_historian(cfg: dict) -> dict:
    """Our whole real-time pipeline, `opc_ua -> historian` through `run_streaming` on a fresh data
    directory (bench_opcua_pipeline.py's spec: publishing and sampling 100 ms, queue 10,
    max_latency_ms 100): the values are rows committed to the historian (HistorianSink.commit
    wrapped in this process), the CPU is this whole process's (runner, client, DuckDB threads). The
    window opens once values are committed, `warmup` has passed and the headless run's live ring
    buffer lease has lapsed (as in bench_opcua_pipeline.py)."""
    import logging
    import threading
    from types import SimpleNamespace

    from bench_opcua_pipeline import pipeline_spec

    from engine.connectors.historian_connector import HistorianSink
    from engine.spec.validate import validate
    from engine.store import ring_buffer
    from engine.streaming import run_streaming
    from engine.workspace import Workspace
    from protocols import register_all

    register_all()
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    settings = SimpleNamespace(
        publishing_ms=100, sampling_ms=100, queue_size=10, max_latency_ms=100, batch_size=50_000
    )
    plan = validate(pipeline_spec([(cfg["endpoint"], cfg["nodes"])], settings, workers=False))
    committed = [0]
    pending: dict[int, int] = {}
    write, commit = HistorianSink.write, HistorianSink.commit

    def counted_write(sink, batch):
        write(sink, batch)
        pending[id(sink)] = pending.get(id(sink), 0) + batch.height

    def counted_commit(sink):
        commit(sink)
        committed[0] += pending.pop(id(sink), 0)

    HistorianSink.write, HistorianSink.commit = counted_write, counted_commit
    cancel = threading.Event()
    record: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, Workspace(Path(tmp) / "data") as ws:
        thread = threading.Thread(
            target=lambda: record.update(run_streaming(plan, ws, seconds=None, cancel=cancel)), daemon=True
        )
        t0 = time.monotonic()
        thread.start()
        try:
            while committed[0] == 0 and time.monotonic() - t0 < 120 and thread.is_alive():
                time.sleep(0.05)
            if committed[0] == 0:
                return {"values": 0, "error": f"nothing committed: {record.get('error')}"}
            time.sleep(cfg["warmup"])
            ring = ring_buffer.ring_buffers(ws.data_dir)
            while ring.keeping and time.monotonic() - t0 < ring_buffer.DEFAULT_LEASE_S + 60:
                time.sleep(0.1)
            result = _window(lambda: committed[0], 0, cfg["seconds"])
        finally:
            cancel.set()
            thread.join(60)
    result["status"] = record.get("status")
    result["rows_dropped"] = record.get("stream", {}).get("rows_dropped")
    return result


CHILDREN = {
    "modbus-ours": child_modbus_ours,
    "modbus-plain": child_modbus_plain,
    "opcua-ours": child_opcua_ours,
    "opcua-plain": child_opcua_plain,
    "opcua-historian": child_opcua_historian,
    "opcua-nodered": lambda cfg: child_opcua_nodered(cfg),
    "modbus-nodered": lambda cfg: child_modbus_nodered(cfg),
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
                (r.get("stderr") or str(r["answer"]))
                for r in results
                if r["exit"] or not r["answer"].get("values")
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


# ---- Node-RED ------------------------------------------------------------------------------------
NODERED = HERE / "nodered"  # package.json + package-lock.json (pinned), settings.js, flow templates
NODERED_INSTALL = (
    "mkdir -p .venv/peers/node-red && cp tests/benchmarks/nodered/package*.json .venv/peers/node-red/"
    " && npm ci --prefix .venv/peers/node-red --no-audit --no-fund"
)
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def nodered_home() -> Path:
    return Path(os.environ.get("NODE_RED_HOME", ROOT / ".venv" / "peers" / "node-red"))


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (every thread) and of its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLOCK_TICK  # utime stime cutime cstime


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NodeRed:
    """Node-RED headless (`node red.js --userDir TMP --settings nodered/settings.js FLOWS`): the
    editor and admin API off, the flow's own GET /count on 127.0.0.1 (a counting function node's
    global `values`), read at the start and the end of a window."""

    def __init__(self, flow: list[dict], work: Path):
        self.user_dir = Path(tempfile.mkdtemp(prefix="nodered-", dir=work))
        flows = self.user_dir / "flows.json"
        flows.write_text(json.dumps(flow))
        self.port = free_port()
        red = nodered_home() / "node_modules" / "node-red" / "red.js"
        self.log = (self.user_dir / "node-red.log").open("w")
        self.proc = subprocess.Popen(
            [
                shutil.which("node") or "node",
                str(red),
                "--userDir",
                str(self.user_dir),
                "--settings",
                str(NODERED / "settings.js"),
                str(flows),
            ],
            cwd=self.user_dir,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NODE_RED_BENCH_PORT": str(self.port), "HOME": str(self.user_dir)},
        )

    def count(self) -> int | None:
        """The flow's count of values, or None while its HTTP endpoint is not up yet."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/count", timeout=10) as answer:
                return int(json.loads(answer.read())["values"])
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            return None

    def cpu(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def log_tail(self) -> str:
        self.log.flush()
        return (self.user_dir / "node-red.log").read_text(errors="replace").strip()[-600:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)
        self.log.close()
        shutil.rmtree(self.user_dir, ignore_errors=True)


def nodered_window(flow: list[dict], cfg: dict, work: Path) -> dict[str, Any]:
    """Start Node-RED with `flow`, wait until values arrive (the subscription or the polls are
    established: the count rises above zero), then `warmup`, then count values and Node-RED's CPU
    over `seconds`. Our /count requests cost Node-RED a few hundred µs, twice a window."""
    t0 = time.monotonic()
    red = NodeRed(flow, work)
    try:
        deadline = t0 + cfg.get("start_timeout", 120)
        first = None
        while time.monotonic() < deadline and red.proc.poll() is None:
            n = red.count()
            if n:
                first = time.monotonic()
                break
            time.sleep(0.1)
        if first is None:
            why = "exited" if red.proc.poll() is not None else "sent no values"
            return {
                "values": 0,
                "error": f"Node-RED {why} within {cfg.get('start_timeout', 120)} s: {red.log_tail()}",
            }
        time.sleep(cfg["warmup"])
        v0, c0, m0, e0 = red.count(), red.cpu(), time.monotonic(), time.time()
        time.sleep(cfg["seconds"])
        v1, c1, m1, e1 = red.count(), red.cpu(), time.monotonic(), time.time()
        result: dict[str, Any] = {
            "values": (v1 or 0) - (v0 or 0),
            "cpu_s": round(c1 - c0, 4),
            "seconds": round(m1 - m0, 3),
            "epoch": [e0, e1],
            "first_values_after_s": round(first - t0, 2),
            "rss_mb": round(_rss_kb(red.proc.pid) / 1024, 1),
        }
        log = red.log_tail()
        if "rror" in log:
            result["log"] = log
        return result
    finally:
        red.stop()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def opcua_flow(endpoint: str, nodes: list[str], interval_ms: int) -> list[dict]:
    """nodered/opcua_flow.json filled in: an inject (once, at start) sends every node id to an
    OpcUa-Client node in `subscribe` mode with topic "multiple" (node-red-contrib-opcua's one
    subscription with one monitored-item group), publishing and sampling at `interval_ms`; each
    value becomes a message into a function node that counts it."""
    flow = json.loads((NODERED / "opcua_flow.json").read_text())
    for node in flow:
        if node["type"] == "OpcUa-Endpoint":
            node["endpoint"] = endpoint
        elif node["type"] == "inject":
            node["payload"] = json.dumps([{"nodeId": n} for n in nodes])
            for prop in node["props"]:
                if prop["p"] == "interval":
                    prop["v"] = str(interval_ms)
        elif node["type"] == "OpcUa-Client":
            node["time"] = str(interval_ms)
    return flow


def child_opcua_nodered(cfg: dict) -> dict:
    flow = opcua_flow(cfg["endpoint"], cfg["nodes"], cfg.get("interval_ms", 100))
    return nodered_window(flow, cfg, Path(cfg["work"]))


def modbus_flow(config: dict) -> tuple[list[dict], float]:
    """nodered/modbus_flow.json filled in, its `device_*` nodes once a device: a modbus-client (one
    TCP connection a device, as the plain script), an inject every poll interval, a function that
    splits the device's register range into 125-register requests (FC 3), a modbus-flex-getter
    reading them, and one function counting the registers of every response. Returns the flow and
    tags a register (the counter counts registers; the simulator's tags span a few more registers
    than there are tags: float32 and wider take two or four)."""
    width = {"float32": 2, "int32": 2, "uint32": 2, "float64": 4, "int64": 4, "uint64": 4}
    template = json.loads((NODERED / "modbus_flow.json").read_text())
    shared = [n for n in template if not n["id"].startswith("device_")]
    per_device = [n for n in template if n["id"].startswith("device_")]
    flow, tags, registers = list(shared), 0, 0
    for i, device in enumerate(config["devices"]):
        first = min(t["address"] for t in device["tags"])
        last = max(t["address"] + width.get(t.get("type", "uint16"), 1) for t in device["tags"])
        tags, registers = tags + len(device["tags"]), registers + last - first
        text = json.dumps(per_device).replace('"device_', f'"d{i}_')
        text = text.replace('"__HOST__"', json.dumps(device["host"]))
        text = text.replace('"__PORT__"', json.dumps(str(device["port"])))
        text = text.replace('"__UNIT__"', json.dumps(str(device["unit_id"])))
        text = text.replace('"__INTERVAL_S__"', json.dumps(str(device["poll_interval_ms"] / 1000)))
        payload = {"unitid": device["unit_id"], "first": first, "last": last}
        text = text.replace('"__RANGE__"', json.dumps(json.dumps(payload)))
        flow.extend(json.loads(text))
    return flow, tags / registers


def child_modbus_nodered(cfg: dict) -> dict:
    flow, tags_a_register = modbus_flow(cfg["config"])
    result = nodered_window(flow, cfg, Path(cfg["work"]))
    result["registers"] = result["values"]
    result["values"] = round(result["values"] * tags_a_register)  # values = tags, as the others count
    return result


def nodered_missing(packages: list[str]) -> str | None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found"
    home = nodered_home()
    absent = [p for p in ["node-red", *packages] if not (home / "node_modules" / p / "package.json").exists()]
    if absent:
        return f"no {', '.join(absent)} under {home} (install, from the repository root: {NODERED_INSTALL})"
    return None


def nodered_versions(packages: list[str]) -> dict[str, str]:
    versions = {"node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()}
    for p in ["node-red", *packages]:
        meta = json.loads((nodered_home() / "node_modules" / p / "package.json").read_text())
        versions[p] = meta["version"]
    return versions


class UpdateLog:
    """The simulator's update rounds, sampled every 0.25 s in a thread while the contenders run
    (bench_opcua_pipeline.Server answers "count" on its stdin): how many rounds it made inside each
    contender's window, so what the simulator offered then (rounds x nodes) is known."""

    def __init__(self, server) -> None:
        import threading

        self.server = server
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.server.updates()))
            self._stop.wait(0.25)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def rounds(self, start: float, end: float) -> float | None:
        def at(t: float) -> float | None:
            for (t0, u0), (t1, u1) in zip(self.samples, self.samples[1:], strict=False):
                if t0 <= t <= t1:
                    return u0 + (u1 - u0) * (t - t0) / (t1 - t0) if t1 > t0 else u0
            return None

        a, b = at(start), at(end)
        return None if a is None or b is None else b - a


def nodered_leg(args, work: Path) -> dict[str, Any]:
    """Node-RED beside ours and the plain scripts, in the same interleaved rounds: OPC UA
    (node-red-contrib-opcua) and Modbus (node-red-contrib-modbus), `--nodered-protocols`. Optional:
    only with node, npm and the pinned install of tests/benchmarks/nodered/ (nothing is downloaded
    here); a protocol whose Node-RED package is missing says `skipped` and how to install it."""
    out: dict[str, Any] = {}
    packages = {"opcua": "node-red-contrib-opcua", "modbus": "node-red-contrib-modbus"}
    legs = {"opcua": nodered_opcua, "modbus": nodered_modbus}
    for protocol in args.nodered_protocols.split(","):
        skipped = nodered_missing([packages[protocol]])
        if skipped:
            out[protocol] = {"skipped": skipped}
            continue
        out.setdefault("versions", nodered_versions([]))[packages[protocol]] = nodered_versions(
            [packages[protocol]]
        )[packages[protocol]]
        out[protocol] = legs[protocol](args, work / protocol)
    return out


def nodered_opcua(args, work: Path) -> dict[str, Any]:
    """OPC UA: our pipeline into the historian and our source alone, Node-RED and the plain asyncua
    script, against one simulator. Every contender waits for values, then `--nodered-warmup`
    seconds (Node-RED works off a backlog for 10 - 25 s after subscribing), then its window."""
    from bench_opcua_pipeline import TAGS_PER_TURBINE, Server

    work.mkdir(exist_ok=True)
    turbines = max(1, args.nodered_opcua_nodes // TAGS_PER_TURBINE)
    server = Server(turbines, args.opcua_rate_hz)
    log = UpdateLog(server)
    try:
        cfg = {
            "endpoint": server.endpoint,
            "nodes": server.node_ids,
            "warmup": args.nodered_warmup,
            "seconds": args.seconds,
            "interval_ms": 100,
            "work": str(work),
            "watchdog_s": 10.0,  # plain asyncua: its 1 s health probe drops the link at this rate
        }
        names = ("opcua-historian", "opcua-ours", "opcua-nodered", "opcua-plain")
        contenders = {k: child_cmd(k, cfg, work) for k in names}
        runs = interleaved(contenders, args.rounds, timeout=args.nodered_warmup + args.seconds + 240)
    finally:
        log.stop()
        server.stop()
    leg = ingest_summary(runs, "opcua-historian", "opcua-nodered")
    leg["ratios_ours_to_peer"] = {  # CPU a value, ours / peer (< 1: ours is cheaper)
        f"{ours} / {peer}": ratio(leg[ours]["cpu_us_per_value"], leg[peer]["cpu_us_per_value"])
        for ours in ("opcua-historian", "opcua-ours")
        for peer in ("opcua-nodered", "opcua-plain")
    }
    nodes = len(cfg["nodes"])
    for name in names:
        answers = [r["answer"] for r in runs[name] if r["answer"].get("epoch")]
        offered = [(a, log.rounds(*a["epoch"])) for a in answers]
        # values received / values the simulator made in the same window (rounds x nodes)
        leg[name]["simulator_values_per_s_each"] = [
            round(r * nodes / a["seconds"]) if r is not None else None for a, r in offered
        ]
        leg[name]["received_of_offered_each"] = [
            round(a["values"] / (r * nodes), 3) if r else None for a, r in offered
        ]
        leg[name]["received_of_offered"] = median([v for v in leg[name]["received_of_offered_each"] if v])
    _nodered_extras(leg, runs, "opcua-nodered")
    leg["nodes"] = nodes
    leg["nominal_changes_per_s"] = round(nodes * args.opcua_rate_hz)
    leg["warmup_s"] = args.nodered_warmup
    return leg


def _nodered_extras(leg: dict[str, Any], runs: dict[str, list], name: str) -> None:
    """What only the Node-RED child reports: when its first values came, its RSS, its first log."""
    answers = [r["answer"] for r in runs[name]]
    leg[name]["first_values_after_s"] = [a.get("first_values_after_s") for a in answers]
    leg[name]["rss_mb"] = [a.get("rss_mb") for a in answers]
    logs = [a["log"] for a in answers if a.get("log")]
    if logs:
        leg[name]["log"] = logs[0]


def nodered_modbus(args, work: Path) -> dict[str, Any]:
    """Modbus: our source and Node-RED (a flex-getter flow) and the plain pymodbus script, polling
    the same simulators (the modbus leg's scale: `--modbus-servers` x 4 units x `--modbus-tags`
    at 1 s). Each waits for values, then `--nodered-warmup` seconds, then its window."""
    from bench_modbus import start_simulator

    from protocols.modbus.simulator import simulator_config

    work.mkdir(exist_ok=True)
    sims = [start_simulator(args.modbus_tags) for _ in range(args.modbus_servers)]
    try:
        endpoints = [("127.0.0.1", port, unit) for _, port in sims for unit in (1, 2, 3, 4)]
        config = simulator_config(endpoints, args.modbus_tags, 1000, timeout_ms=2000)
        cfg = {"config": config, "warmup": args.nodered_warmup, "seconds": args.seconds, "work": str(work)}
        names = ("modbus-ours", "modbus-nodered", "modbus-plain")
        contenders = {k: child_cmd(k, cfg, work) for k in names}
        runs = interleaved(contenders, args.rounds, timeout=args.nodered_warmup + args.seconds + 240)
    finally:
        for proc, _ in sims:
            proc.terminate()
            proc.wait(10)
    leg = ingest_summary(runs, "modbus-ours", "modbus-nodered")
    leg["ratios_ours_to_peer"] = {
        f"modbus-ours / {peer}": ratio(leg["modbus-ours"]["cpu_us_per_value"], leg[peer]["cpu_us_per_value"])
        for peer in ("modbus-nodered", "modbus-plain")
    }
    _nodered_extras(leg, runs, "modbus-nodered")
    leg["offered_values_per_s"] = len(endpoints) * args.modbus_tags
    leg["devices"] = len(endpoints)
    leg["warmup_s"] = args.nodered_warmup
    return leg


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
    ap.add_argument("--nodered-protocols", default="opcua,modbus", help="nodered leg: opcua,modbus")
    ap.add_argument(
        "--nodered-warmup", type=float, help="nodered leg: seconds from first values to the window"
    )
    ap.add_argument(
        "--nodered-opcua-nodes", type=int, help="nodered leg: OPC UA nodes (default --opcua-nodes)"
    )
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
    if args.nodered_opcua_nodes is None:
        args.nodered_opcua_nodes = args.opcua_nodes
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
