"""Sparkplug B publish benchmark (issue 11): metrics per second from tag tables (Arrow) into DDATA
payloads taken by Mosquitto on 127.0.0.1:1883, through our edge node (`SparkplugEdgeNode.deliver`:
Arrow -> aliases -> protobuf -> paho -> the broker's acknowledgement), side by side in the same run
with a bare paho-mqtt publish loop of the same pre-encoded payloads (what a hand-written publisher
does at best: no Arrow, no encoding), acknowledged the same way, and with a bare loop at QoS 1
waiting for every PUBACK.

    python tests/benchmarks/bench_sparkplug_publish.py [--metrics 500000] [--tags 500] [--batch 50000]
        [--per-message 2000] [--repeats 3]

Acknowledged: data messages are QoS 0 (Sparkplug B 3.0 requires it); after the last one the edge
node sends an UNSUBSCRIBE and waits for the UNSUBACK on the same connection, which the broker
sends after it handled every message before it. The bare QoS 0 loop does the same. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def tables(metrics: int, tags: int, batch: int) -> list:
    import polars as pl

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for start in range(0, metrics, batch):
        n = min(batch, metrics - start)
        i = pl.col("i")
        frame = pl.DataFrame({"i": pl.int_range(start, start + n, eager=True)}).select(
            timestamp=pl.lit(t0, pl.Datetime("us", "UTC")) + pl.duration(milliseconds=i // tags),
            tag=pl.format("line1/tag{}", i % tags),
            value=i.cast(pl.Float64) * 0.5,
            value_text=pl.lit(None, pl.String),
            quality=pl.lit("good"),
            _key=i.cast(pl.String),
        )
        out.append(frame.to_arrow())
    return out


def ours(tables_: list, per_message: int) -> dict:
    from protocols.mqtt.edge_node import SparkplugEdgeNode
    from protocols.mqtt.publish import SparkplugPublishConfig

    group = f"bench-{uuid.uuid4().hex[:8]}"
    cfg = SparkplugPublishConfig(
        group_id=group, edge_node_id="Box1", device_id="Line1", max_metrics_per_message=per_message
    )
    with tempfile.TemporaryDirectory() as tmp:
        node = SparkplugEdgeNode(cfg, Path(tmp), "bench")
        node.open()
        node.deliver(tables_[0].slice(0, 1000))  # births out of the way
        started = time.perf_counter()
        for table in tables_:
            node.deliver(table)
        elapsed = time.perf_counter() - started
        messages = node.counters["messages"]
        node.close()
    metrics = sum(t.num_rows for t in tables_)
    return {
        "metrics": metrics,
        "seconds": round(elapsed, 3),
        "metrics_per_s": round(metrics / elapsed),
        "messages": messages,
    }


def payloads(metrics: int, per_message: int, tags: int) -> list[bytes]:
    from protocols.mqtt import sparkplug as sp

    t0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    out, seq = [], 0
    for start in range(0, metrics, per_message):
        rows = [
            (None, 1 + i % tags, None, i * 0.5, t0 + i // tags, None, None)
            for i in range(start, min(start + per_message, metrics))
        ]
        out.append(sp.encode_metric_rows(rows, timestamp=t0, seq=seq))
        seq = (seq + 1) % 256
    return out


def bare(payloads_: list[bytes], per_message: int, metrics: int, qos: int) -> dict:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bare-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    acked: set[int] = set()
    cond = threading.Condition()

    def on_unsubscribe(_c, _u, mid, _codes, _props) -> None:
        with cond:
            acked.add(mid)
            cond.notify_all()

    client.on_unsubscribe = on_unsubscribe
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    topic = f"spBv1.0/bench-{uuid.uuid4().hex[:8]}/DDATA/Bare/Line1"
    try:
        started = time.perf_counter()
        infos = [client.publish(topic, p, qos=qos) for p in payloads_]
        if qos:
            for info in infos:
                info.wait_for_publish(60)
        else:
            _, mid = client.unsubscribe("$bench/barrier")
            with cond:
                cond.wait_for(lambda: mid in acked, 60)
        elapsed = time.perf_counter() - started
    finally:
        client.disconnect()
        client.loop_stop()
    return {
        "metrics": metrics,
        "seconds": round(elapsed, 3),
        "metrics_per_s": round(metrics / elapsed),
        "messages": len(payloads_),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--metrics", type=int, default=500_000)
    parser.add_argument("--tags", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50_000, help="rows per deliver (an outbox batch)")
    parser.add_argument("--per-message", type=int, default=2000, help="metrics per DDATA payload")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tables_ = tables(args.metrics, args.tags, args.batch)
    encoded = payloads(args.metrics, args.per_message, args.tags)
    runs: dict[str, list[dict]] = {"edge_node": [], "bare_paho_qos0_barrier": [], "bare_paho_qos1_puback": []}
    for _ in range(args.repeats):  # interleaved: the machine's load hits all three alike
        runs["edge_node"].append(ours(tables_, args.per_message))
        runs["bare_paho_qos0_barrier"].append(bare(encoded, args.per_message, args.metrics, 0))
        runs["bare_paho_qos1_puback"].append(bare(encoded, args.per_message, args.metrics, 1))
    result = {
        "benchmark": "sparkplug_publish",
        "metrics": args.metrics,
        "tags": args.tags,
        "rows_per_deliver": args.batch,
        "metrics_per_message": args.per_message,
        "payload_bytes": round(statistics.mean(len(p) for p in encoded)),
        "median_metrics_per_s": {
            k: statistics.median(r["metrics_per_s"] for r in v) for k, v in runs.items()
        },
        "runs": runs,
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
        "target_metrics_per_s": 50_000,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
