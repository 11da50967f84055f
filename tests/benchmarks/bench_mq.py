"""Message queue sources benchmark (issue 13): messages per second from a broker into the tag
historian through a real real_time pipeline (our source: fetch, NDJSON decode of the micro-batch,
historian commit, ack after commit), side by side in the same run with a bare client loop that
only receives and acks the same messages (pika / redis-py / nats-py; no decoding, no storage):
the ceiling of the broker and client on this machine.

    python tests/benchmarks/bench_mq.py [--messages 100000] [--brokers rabbitmq,redis_streams,nats_js]

Each leg gets a fresh queue / stream pre-filled with the same JSON tag messages (~90 bytes each);
the clock runs from the consumer's start until every message is committed (ours) or acked (bare).
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.connectors.mq_brokers import Broker, tag_bodies  # noqa: E402


def fill(broker: Broker, n: int) -> None:
    bodies = tag_bodies(n)
    if broker.kind == "rabbitmq":  # without confirms: fast to fill; then wait until all are queued
        import pika

        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
        ch = conn.channel()
        ch.queue_declare(broker.id, durable=True)
        for body in bodies:
            ch.basic_publish("", broker.id, body)
        while ch.queue_declare(broker.id, durable=True, passive=True).method.message_count < n:
            conn.process_data_events(time_limit=0.05)
        conn.close()
    else:
        for start in range(0, n, 10_000):
            broker.publish(bodies[start : start + 10_000])


def ours(broker: Broker, n: int) -> float:
    from engine.runner import _context
    from engine.spec.validate import validate
    from engine.streaming import StreamRunner
    from engine.workspace import Workspace

    doc = {
        "name": "bench",
        "nodes": [
            {
                "id": "src",
                "kind": "source",
                "connector_type": broker.connector_type,
                "config": broker.source_config(batch_max_messages=5000, batch_interval_ms=50)
                | ({"prefetch": 10_000} if broker.kind == "rabbitmq" else {}),
            },
            {
                "id": "hist",
                "kind": "destination",
                "inputs": ["src"],
                "connector_type": "historian",
                "config": {},
            },
        ],
        "schedule": {"type": "real_time", "batch_size": 20_000, "max_latency_ms": 100},
    }
    with tempfile.TemporaryDirectory() as tmp, Workspace(Path(tmp) / "data") as ws:
        compiled = validate(doc)
        ctx = _context(compiled, ws, "bench", datetime.now(UTC), Path(tmp), threading.Event(), dry_run=False)
        runner = StreamRunner(compiled, ctx)
        t0 = time.perf_counter()
        runner.start()
        source = runner.sources["src"]
        while runner.stats()["rows_committed"] < n or source.counters["acked"] < n:
            if time.perf_counter() - t0 > 600:
                raise SystemExit(f"{broker.kind}: timed out at {runner.stats()['rows_committed']} rows")
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        runner.stop()
        return elapsed


def bare(broker: Broker, n: int) -> float:
    t0 = time.perf_counter()
    if broker.kind == "rabbitmq":
        import pika

        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10_000)
        consumed = ch.consume(broker.id, auto_ack=False, inactivity_timeout=5)
        for got, (method, _props, _body) in enumerate(consumed, start=1):
            if method is None:
                break
            if got % 1000 == 0 or got == n:
                ch.basic_ack(method.delivery_tag, multiple=True)
            if got == n:
                break
        ch.cancel()
        conn.close()
    elif broker.kind == "redis_streams":
        import redis

        r = redis.Redis()
        r.xgroup_create(broker.id, "bare", id="0")
        got = 0
        while got < n:
            reply = r.xreadgroup("bare", "c", {broker.id: ">"}, count=5000, block=1000)
            ids = [i for i, _ in reply[0][1]] if reply else []
            if ids:
                r.xack(broker.id, "bare", *ids)
                got += len(ids)
        r.close()
    else:

        async def consume() -> None:
            import nats

            nc = await nats.connect("nats://127.0.0.1:4222")
            import nats.js.api

            # the same consumer limits as our source's (max_ack_pending 20000; nats' default is 1000)
            config = nats.js.api.ConsumerConfig(max_ack_pending=20_000)
            psub = await nc.jetstream().pull_subscribe(f"{broker.id}.>", durable="bare", config=config)
            got = 0
            while got < n:
                msgs = await psub.fetch(5000, timeout=1)
                for m in msgs:
                    await m.ack()
                got += len(msgs)
            await nc.flush()
            await nc.close()

        asyncio.run(consume())
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--brokers", default="rabbitmq,redis_streams,nats_js")
    args = parser.parse_args()
    n = args.messages
    out: dict = {
        "benchmark": "mq_sources",
        "messages": n,
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
        "results": {},
    }
    for kind in args.brokers.split(","):
        row = {}
        for leg, run in (("ours_into_historian", ours), ("bare_client_receive_ack", bare)):
            broker = Broker(kind)
            try:
                fill(broker, n)
                seconds = run(broker, n)
            finally:
                broker.cleanup()
            row[leg] = {"seconds": round(seconds, 3), "msg_per_s": round(n / seconds)}
        row["ratio_ours_to_bare"] = round(
            row["ours_into_historian"]["msg_per_s"] / row["bare_client_receive_ack"]["msg_per_s"], 2
        )
        out["results"][kind] = row
    out["load_average_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
