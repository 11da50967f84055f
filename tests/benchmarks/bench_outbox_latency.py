"""What the outbox adds to value-change -> upstream-commit latency (plain script, prints JSON).

    .venv/bin/python tests/benchmarks/bench_outbox_latency.py [--seconds 30] [--warmup 5] [--max-latency-ms 200]

One `aggregator serve` (a fresh data directory) runs two real_time pipelines side by side, each an
MQTT JSON source (a publisher in this script, through the Mosquitto on 127.0.0.1:1883: 4 tags, a
value per tag every 20 ms) into its own pre-created PostgreSQL table (127.0.0.1:5432, db test):

- `direct`: the destination with `delivery: direct`: each micro-batch is written to PostgreSQL
  inside the pipeline's commit (the baseline: what a pipeline without an outbox does);
- `store_and_forward`: the default under the service: each micro-batch is committed (fsync) to the
  outbox, and the forwarder delivers it.

The change time is the value's own timestamp (the publisher's wall clock when it published, in the
JSON's `t`, ms); the commit time is the server's `clock_timestamp()` default column of the row
(pg.create_tag_table; one machine, one clock). Latency = commit - change, over every row after the
warm-up. The difference of the p99s is what the outbox adds (target < 50 ms). The load average is
reported at the start and the end (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.service.conftest import cli, spawn  # noqa: E402
from tests.upstream.pg import (  # noqa: E402
    Publisher,
    count,
    create_tag_table,
    drop,
    mqtt_to_pg_spec,
    sql,
    table_name,
)
from tests.waiting import wait_for  # noqa: E402

LEGS = ("direct", "store_and_forward")


def now_ms(n: int, k: int) -> dict:
    return {"v": n, "t": time.time() * 1000.0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time after the warm-up")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds not measured after the first commit"
    )
    parser.add_argument(
        "--max-latency-ms",
        type=int,
        default=200,
        help="the pipelines' schedule.max_latency_ms (micro-batch age)",
    )
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    tables = {leg: table_name() for leg in LEGS}
    publishers = {}
    service = None
    with tempfile.TemporaryDirectory(prefix="bench-outbox-latency-") as tmp:
        tmp_path = Path(tmp)
        pipelines = tmp_path / "pipelines"
        pipelines.mkdir()
        try:
            for leg, table in tables.items():
                create_tag_table(table)
                prefix = f"lat-{leg}-{uuid.uuid4().hex[:6]}"
                spec = mqtt_to_pg_spec(
                    prefix, table, name=f"lat_{leg}", delivery=leg, max_latency_ms=args.max_latency_ms
                )
                (pipelines / f"lat_{leg}.json").write_text(json.dumps(spec), encoding="utf-8")
                publishers[leg] = Publisher(prefix, tags=4, period_s=0.02, payload=now_ms)
            service = spawn(tmp_path / "data", tmp_path / "serve.out", "--pipelines", str(pipelines))
            service.wait_ready(timeout=60)
            for publisher in publishers.values():
                publisher.start()
            wait_for(lambda: all(count(t) > 0 for t in tables.values()), 60, what="both legs delivering")
            started = time.time()
            time.sleep(args.warmup + args.seconds)  # the measurement window
            for publisher in publishers.values():
                publisher.stop()
            stopped = time.time()
            wait_for(
                lambda: all(
                    sql(f'SELECT max(timestamp) >= to_timestamp(%s) FROM "{t}"', (stopped - 0.2,))[0][0]
                    for t in tables.values()
                ),
                60,
                what="the last values committed",
            )
            # the baseline really went direct: only the store_and_forward leg has an outbox
            done = cli("outbox", "status", "--data-dir", tmp_path / "data", "--json")
            outboxes = sorted(e["pipeline"] for e in json.loads(done.stdout))
            assert outboxes == ["lat_store_and_forward"], (outboxes, done.stderr)
            assert service.stop() == 0, service.output()
            service = None
            legs = {}
            for leg, table in tables.items():
                lat = [
                    row[0]
                    for row in sql(
                        "SELECT extract(epoch FROM committed_at - timestamp) * 1000 FROM"
                        f' "{table}" WHERE timestamp >= to_timestamp(%s)',
                        (started + args.warmup,),
                    )
                ]
                lat = [float(x) for x in lat]
                legs[leg] = {
                    "rows": len(lat),
                    "p50_ms": round(percentile(lat, 0.50), 1),
                    "p99_ms": round(percentile(lat, 0.99), 1),
                    "max_ms": round(max(lat), 1),
                }
        finally:
            for publisher in publishers.values():
                publisher.stop()
            if service is not None and service.proc.poll() is None:
                service.proc.kill()
                service.proc.wait(10)
            for table in tables.values():
                drop(table)
    added = legs["store_and_forward"]["p99_ms"] - legs["direct"]["p99_ms"]
    print(
        json.dumps(
            {
                "benchmark": "outbox_latency",
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average_start": round(load_start, 2),
                    "load_average_end": round(os.getloadavg()[0], 2),
                },
                "source": "MQTT JSON via Mosquitto, 4 tags x 50 values/s per leg, batch_interval_ms 50",
                "max_latency_ms": args.max_latency_ms,
                "legs": legs,
                "outbox_adds_p99_ms": round(added, 1),
                "outbox_adds_p50_ms": round(
                    legs["store_and_forward"]["p50_ms"] - legs["direct"]["p50_ms"], 1
                ),
                "target_p99_added_ms": 50,
                "met": added < 50,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
