"""API under load (issue 10): p99 of mixed reads at a fixed arrival rate, while a stream ingests.

    python tests/benchmarks/bench_api_load.py [--rate 200] [--seconds 15] [--tags 2000] [--rate-hz 10]
        [--in-process-source] [--legs idle,streaming]

A real `aggregator serve` on a fresh data directory, with a few finished runs (a 10-row CSV pipeline
stored and executed through the API). Legs, each a load of `--seconds`:
- idle: no stream running (the API alone);
- streaming: a real_time pipeline `opc_ua -> historian` dropped into the service's `--pipelines`
  folder (the wind-farm OPC UA simulator of protocols/opcua/simulator.py in a process of its own:
  `--tags` nodes changing `--rate-hz` times a second, 2,000 x 10 = 20,000 changes/s); the load
  starts once rows reach the historian and 3 s have settled. The source runs in a worker process
  (`"worker_process": true`, engine/streaming/worker.py) unless `--in-process-source`.

The load generator is a second process (this script with `--load`): an open-loop httpx client that
sends request i at start + i / rate whatever the earlier ones did, and measures each latency from
that intended moment to the last byte (no coordinated omission: a stall counts for every request
it delays). Requests go round-robin over GET /pipelines, /runs, /runs/{id},
/monitoring/system-health and /analytics/timeseries (5 tags, the last 5 min, 10 s buckets), with
the bearer token. Reported: p50/p90/p99/max overall and per route, errors, achieved rate; the
service's CPU and RSS; during the streaming leg the rows/s the service wrote and dropped
(its /metrics). Target: p99 < 50 ms at 200 requests/s while 20k changes/s ingest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))


# ---- the load generator (a process of its own) -------------------------------------------------------
async def _load(url: str, token: str, paths: list[str], rate: float, seconds: float) -> dict[str, Any]:
    import httpx
    from bench_service import quantiles

    n = int(rate * seconds)
    results: list[tuple[str, float, int]] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=30
    ) as client:
        for path in paths:  # connections and first-call imports warm, outside the window
            await client.get(path)

        async def one(i: int, at: float) -> None:
            path = paths[i % len(paths)]
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                r = await client.get(path)
                await r.aread()
                code = r.status_code
            except httpx.HTTPError:
                code = 0
            results.append((path, (time.perf_counter() - at) * 1000, code))

        cpu0 = time.process_time()
        start = time.perf_counter() + 0.2
        tasks = []
        for i in range(n):
            at = start + i / rate
            delay = at - 0.05 - time.perf_counter()  # tasks are made just ahead of their moment
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, at)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
    routes: dict[str, list[float]] = {}
    for path, ms, _ in results:
        routes.setdefault(path.split("?")[0] if not path.startswith("/runs/") else "/runs/{id}", []).append(
            ms
        )
    return {
        "requests": n,
        "rate_offered": rate,
        "rate_achieved": round(n / elapsed, 1),
        "errors": sum(1 for *_, code in results if code != 200),
        "status_codes": sorted({code for *_, code in results}),
        "latency_ms": quantiles([ms for _, ms, _ in results]),
        "per_route_ms": {k: quantiles(v) for k, v in sorted(routes.items())},
        "load_generator_cpu_percent": round(100 * cpu / elapsed, 1),
    }


def load_main(argv: list[str]) -> None:
    url, token, paths, rate, seconds = argv[0], argv[1], json.loads(argv[2]), float(argv[3]), float(argv[4])
    print(json.dumps(asyncio.run(_load(url, token, paths, rate, seconds))))


def run_load(url: str, token: str, paths: list[str], rate: float, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--load", url, token, json.dumps(paths), str(rate), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise SystemExit(f"the load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- the service and its data ----------------------------------------------------------------------
def seed_runs(s: Any, token: str, work: Path, count: int = 5) -> list[str]:
    """A stored 10-row CSV pipeline executed `count` times through the API; their run ids."""
    import httpx

    (work / "seed.csv").write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(10)), encoding="utf-8")
    doc = {
        "name": "seed",
        "sources": [{"name": "input", "connector_type": "file", "config": {"path": str(work / "seed.csv")}}],
        "destinations": [
            {
                "name": "output",
                "connector_type": "file",
                "config": {"path": str(work / "seed-out.csv"), "format": "csv", "mode": "overwrite"},
            }
        ],
        "schedule": {"type": "manual"},
    }
    h = {"Authorization": f"Bearer {token}"}
    r = httpx.post(s.url + "/pipelines", json=doc, headers=h, timeout=30)
    r.raise_for_status()
    pid = r.json()["id"]
    ids = []
    for _ in range(count):
        r = httpx.post(s.url + f"/pipelines/{pid}/execute", headers=h, timeout=30)
        r.raise_for_status()
        run_id = r.json()["run_id"]
        deadline = time.monotonic() + 60
        while httpx.get(s.url + f"/runs/{run_id}", headers=h, timeout=30).json().get("status") == "running":
            if time.monotonic() > deadline:
                raise SystemExit(f"run {run_id} did not end within 60 s")
            time.sleep(0.1)
        ids.append(run_id)
    return ids


def measure(
    s: Any, token: str, paths: list[str], rate: float, seconds: float, stream: bool
) -> dict[str, Any]:
    from bench_service import HISTORIAN, cpu_seconds, rss_mb

    rows0 = s.metric("aggregator_rows_out_total", HISTORIAN) if stream else 0
    drop0 = s.metric("aggregator_rows_dropped_total") if stream else 0
    cpu0, t0 = cpu_seconds(s.pid), time.monotonic()
    result = run_load(s.url, token, paths, rate, seconds)
    elapsed = time.monotonic() - t0
    result["service_cpu_percent"] = round(100 * (cpu_seconds(s.pid) - cpu0) / elapsed, 1)
    result["service_rss_mb"] = round(rss_mb(s.pid), 1)
    if stream:
        result["stream_rows_per_s_written"] = round(
            (s.metric("aggregator_rows_out_total", HISTORIAN) - rows0) / elapsed
        )
        result["stream_rows_dropped"] = s.metric("aggregator_rows_dropped_total") - drop0
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--legs", default="idle,streaming")
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second (fixed arrival rate)")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--tags", type=int, default=2000)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    ap.add_argument(
        "--in-process-source", action="store_true", help="the OPC UA source in the service process"
    )
    args = ap.parse_args()

    from bench_service import Serve, opcua_spec, start_simulator, wait_rows, work_dir

    legs = args.legs.split(",")
    out: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "settings": vars(args),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = work_dir(tmp)
        specs = work / "specs"
        specs.mkdir()
        s = Serve(work, work / "data", "--pipelines", str(specs))
        server = None
        try:
            token = s.token()
            run_ids = seed_runs(s, token, work)
            tags = ",".join(
                f"tags=ns%3D2%3Bs%3DTurbine01.{t}" for t in ("Aux05", "Aux06", "Aux07", "Aux08", "Aux09")
            )
            paths = [
                "/pipelines",
                "/runs?limit=50",
                f"/runs/{run_ids[-1]}",
                "/monitoring/system-health",
                f"/analytics/timeseries?{tags.replace(',', '&')}&window=5m&bucket=10s",
            ]
            if "idle" in legs:
                out["idle"] = measure(s, token, paths, args.rate, args.seconds, stream=False)
                print(json.dumps({"idle": out["idle"]["latency_ms"]}), file=sys.stderr, flush=True)
            if "streaming" in legs:
                server, node_ids = start_simulator(args.tags, args.rate_hz)
                spec = opcua_spec(server.endpoint, node_ids, worker=not args.in_process_source, name="stream")
                tmp_spec = specs / ".stream.tmp"
                tmp_spec.write_text(json.dumps(spec), encoding="utf-8")
                tmp_spec.replace(specs / "stream.json")
                wait_rows(s, timeout=90)
                time.sleep(3)
                out["streaming"] = measure(s, token, paths, args.rate, args.seconds, stream=True)
                out["streaming"]["changes_per_s_offered"] = round(args.tags * args.rate_hz)
                print(json.dumps({"streaming": out["streaming"]["latency_ms"]}), file=sys.stderr, flush=True)
            out["exit"] = s.stop()
        finally:
            if s.proc.poll() is None:
                s.proc.kill()
            if server is not None:
                server.stop()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
