"""REST API source benchmark (issue 13): records per second read from a local HTTP server, 100
records per page (page pagination), through our `rest_api` source (httpx, pages fetched
`--concurrency` at a time, JSON -> Polars frames), side by side in the same run with what a user
would write by hand: a `requests.Session` loop and an `httpx.Client` loop, page after page, each
collecting the decoded records and building one `pl.DataFrame` at the end, and the requests loop
with `pandas.json_normalize` (when pandas is installed: a dev dependency).

    python tests/benchmarks/bench_rest.py [--records 100000] [--page-size 100] [--latency-ms 0 5] \
        [--concurrency 4] [--repeats 3]

The server runs in a process of its own (so its CPU is not our GIL's): a ThreadingHTTPServer with
keep-alive answering pre-encoded pages of 8-field records; `--latency-ms` adds a wait before each
answer, as a real API across a network would. Prints JSON; the target is >= 20k records/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TARGET_RECORDS_PER_S = 20_000


def _record(i: int) -> dict:
    return {
        "id": i,
        "asset": f"pump-{i % 97}",
        "site": "north" if i % 3 else "south",
        "opened_at": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
        "hours": round(i * 0.25, 2),
        "priority": i % 5,
        "status": ("open", "closed", "waiting")[i % 3],
        "cost": {"parts": i % 1000 / 10, "labour": i % 700 / 10},
    }


def _serve(records: int, page_size: int, ready: mp.Queue, latency: float) -> None:
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    pages = [
        json.dumps([_record(i) for i in range(start, min(start + page_size, records))]).encode()
        for start in range(0, records, page_size)
    ]
    empty = b"[]"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            page = int(query.get("page", ["1"])[0])
            body = pages[page - 1] if 1 <= page <= len(pages) else empty
            if latency:
                time.sleep(latency)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 128
    ready.put(server.server_address[1])
    server.serve_forever()


def ours(url: str, page_size: int, concurrency: int) -> int:
    from engine.connectors.rest_api import RestApiSource, RestApiSourceConfig
    from engine.context import RunContext

    config = RestApiSourceConfig.model_validate(
        {
            "url": url,
            "endpoint": "/work-orders",
            "pagination": {"type": "page", "page_param": "page", "size_param": "size", "size": page_size},
            "concurrency": concurrency,
        }
    )
    rows = 0
    for frame in RestApiSource(config, RunContext(), "bench").read():
        rows += frame.height
    return rows


def _requests_records(url: str, page_size: int) -> list[dict]:
    import requests

    records: list[dict] = []
    with requests.Session() as session:
        page = 1
        while True:
            got = session.get(f"{url}/work-orders", params={"page": page, "size": page_size}, timeout=30)
            got.raise_for_status()
            batch = got.json()
            if not batch:
                break
            records.extend(batch)
            if len(batch) < page_size:
                break
            page += 1
    return records


def requests_loop(url: str, page_size: int) -> int:
    import polars as pl

    return pl.DataFrame(_requests_records(url, page_size)).height


def requests_pandas(url: str, page_size: int) -> int:
    import pandas as pd  # a dev dependency (bench_sql.py brought it): the tool compared against

    return len(pd.json_normalize(_requests_records(url, page_size)))


def httpx_loop(url: str, page_size: int) -> int:
    import httpx
    import polars as pl

    records: list[dict] = []
    with httpx.Client(timeout=30, trust_env=False) as client:
        page = 1
        while True:
            got = client.get(f"{url}/work-orders", params={"page": page, "size": page_size})
            got.raise_for_status()
            batch = got.json()
            if not batch:
                break
            records.extend(batch)
            if len(batch) < page_size:
                break
            page += 1
    return pl.DataFrame(records).height


def timed(fn, *args) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = fn(*args)
    return time.perf_counter() - t0, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 5.0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    results = []
    for latency_ms in args.latency_ms:
        ready: mp.Queue = mp.Queue()
        proc = mp.Process(
            target=_serve, args=(args.records, args.page_size, ready, latency_ms / 1000), daemon=True
        )
        proc.start()
        url = f"http://127.0.0.1:{ready.get(timeout=60)}"
        try:
            legs = [(f"rest_api concurrency={c}", ours, (url, args.page_size, c)) for c in args.concurrency]
            legs += [
                ("requests loop + pl.DataFrame", requests_loop, (url, args.page_size)),
                ("httpx loop + pl.DataFrame", httpx_loop, (url, args.page_size)),
            ]
            if importlib.util.find_spec("pandas"):
                legs.append(("requests loop + pandas.json_normalize", requests_pandas, (url, args.page_size)))
            timed(ours, url, args.page_size, 1)  # warm up: imports, server pages in cache
            for name, fn, fargs in legs:
                runs = []
                for _ in range(args.repeats):
                    seconds, rows = timed(fn, *fargs)
                    if rows != args.records:
                        raise SystemExit(f"{name}: read {rows} records, expected {args.records}")
                    runs.append(seconds)
                best, median = min(runs), statistics.median(runs)
                results.append(
                    {
                        "latency_ms": latency_ms,
                        "leg": name,
                        "records": args.records,
                        "seconds_median": round(median, 3),
                        "records_per_s_median": round(args.records / median),
                        "records_per_s_best": round(args.records / best),
                    }
                )
        finally:
            proc.terminate()
            proc.join(5)

    out = {
        "benchmark": "rest_api source, page pagination",
        "page_size": args.page_size,
        "target_records_per_s": TARGET_RECORDS_PER_S,
        "machine": f"{os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "results": results,
    }
    for latency_ms in args.latency_ms:
        ours_best = max(
            r["records_per_s_median"]
            for r in results
            if r["latency_ms"] == latency_ms and r["leg"].startswith("rest")
        )
        loops = [
            r["records_per_s_median"] for r in results if r["latency_ms"] == latency_ms and "loop" in r["leg"]
        ]
        out[f"latency_{latency_ms:g}ms"] = {
            "ours_records_per_s": ours_best,
            "target_met": ours_best >= TARGET_RECORDS_PER_S,
            "vs_best_hand_loop": round(ours_best / max(loops), 2),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
