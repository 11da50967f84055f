"""Service benchmark (issue 10): start-up, idle memory and scheduler lag.

    python tests/benchmarks/bench_service.py [--starts 3] [--seconds 10] [--pipelines 100]

Three legs; prints one JSON document:
- start: `aggregator serve` as a subprocess on a fresh data directory (no pipelines) until
  `GET /health` answers 200, best and worst of `--starts` (target < 2 s);
- idle RSS: that process's VmRSS after 3 s idle (target < 120 MB);
- scheduler: `--pipelines` interval schedules of 1 s in the service's scheduler (engine/service/
  scheduler.py, its real thread and clock) for `--seconds`; each fire hands a job to a worker pool, as
  the service does; lag = fire time - slot, p50/p99/max (target p99 < 200 ms). What it measures is the
  scheduler's own dispatch, not the runs' duration.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_once(work: Path) -> dict:
    import httpx

    from engine.service.lock import owner

    data_dir = work / f"data-{time.monotonic_ns()}"
    env = {**os.environ, "AGGREGATOR_CONFIG": str(work / "config")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"serve exited {proc.returncode}")
            found = owner(data_dir)
            if found and found[1]:
                try:
                    if httpx.get(found[1] + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.005)
        started = time.perf_counter() - t0
        time.sleep(3)
        rss = _rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        return {"start_to_health_s": round(started, 3), "idle_rss_mb": round(rss, 1), "exit_code": code}
    finally:
        if proc.poll() is None:
            proc.kill()


def scheduler_lag(pipelines: int, seconds: float) -> dict:
    from engine.service.scheduler import Scheduler
    from engine.spec.models import IntervalSchedule

    pool = concurrent.futures.ThreadPoolExecutor(4)
    lags: list[float] = []
    lock = threading.Lock()

    def on_fire(fire) -> None:
        with lock:
            lags.append(fire.lag_s * 1000)
        pool.submit(lambda: None)

    s = Scheduler(on_fire, on_log=lambda *_: None)
    for i in range(pipelines):
        s.add(f"p{i}", IntervalSchedule(type="interval", seconds=1))
    s.start()
    time.sleep(seconds)
    s.stop()
    pool.shutdown()
    lags.sort()
    n = len(lags)
    return {
        "pipelines": pipelines,
        "seconds": seconds,
        "fires": n,
        "lag_ms_p50": round(lags[n // 2], 2),
        "lag_ms_p99": round(lags[min(n - 1, int(n * 0.99))], 2),
        "lag_ms_max": round(lags[-1], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--pipelines", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "config").mkdir()
        starts = [start_once(work) for _ in range(args.starts)]
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "start_to_health_s": {
            "best": min(s["start_to_health_s"] for s in starts),
            "worst": max(s["start_to_health_s"] for s in starts),
        },
        "idle_rss_mb": {
            "best": min(s["idle_rss_mb"] for s in starts),
            "worst": max(s["idle_rss_mb"] for s in starts),
        },
        "exit_codes": sorted({s["exit_code"] for s in starts}),
        "scheduler": scheduler_lag(args.pipelines, args.seconds),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
