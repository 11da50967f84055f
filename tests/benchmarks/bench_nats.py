"""NATS JetStream publish benchmark (issue 11): messages per second acknowledged by JetStream (NATS on
127.0.0.1:4222), through our `nats` destination (`NatsTarget.deliver`: Arrow table -> JSON per
record -> subject from the template -> publish with Nats-Msg-Id -> every ack awaited), side by side
in the same run with a bare nats-py loop (asyncio, `js.publish_async` with the same Nats-Msg-Id
headers, then every ack awaited) of the same messages pre-encoded (no Arrow, no JSON, no subject
rendering: what a hand-written publisher does at best). Also our `message: batch` mode (1000
records per message), in records per second.

    python tests/benchmarks/bench_nats.py [--messages 200000] [--tags 100] [--batch 20000] [--repeats 3]

Each run publishes into a fresh file-storage stream (so no message is a duplicate). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SERVER = "nats://127.0.0.1:4222"


def tables(messages: int, tags: int, batch: int) -> list:
    import polars as pl

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for start in range(0, messages, batch):
        n = min(batch, messages - start)
        i = pl.col("i")
        frame = pl.DataFrame({"i": pl.int_range(start, start + n, eager=True)}).select(
            timestamp=pl.lit(t0, pl.Datetime("us", "UTC")) + pl.duration(milliseconds=i // tags),
            tag=pl.format("line1/tag{}", i % tags),
            value=i.cast(pl.Float64) * 0.5,
            quality=pl.lit("good"),
            _key=pl.format("edge-bench/bench/up/line1\\/tag{}|{}", i % tags, i),
        )
        out.append(frame.to_arrow())
    return out


async def _stream(name: str, subjects: list[str], delete_only: bool = False) -> None:
    import nats

    nc = await nats.connect(SERVER)
    js = nc.jetstream()
    try:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)
        if not delete_only:
            await js.add_stream(name=name, subjects=subjects, duplicate_window=600)
    finally:
        await nc.close()


def ours(tables_: list, message: str) -> dict:
    from engine.connectors.nats_upstream import NatsConnector
    from engine.context import RunContext

    name = f"BENCH{uuid.uuid4().hex[:8].upper()}"
    prefix = name.lower()
    asyncio.run(_stream(name, [prefix + ".>"]))
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(pipeline="bench", data_dir=Path(tmp))
        target = NatsConnector.make_target(
            {"subject": prefix + ".{edge}.{pipeline}.{tag}", "stream": name, "message": message}, ctx, "up"
        )
        target.open()
        try:
            started = time.perf_counter()
            for table in tables_:
                target.deliver(table)
            elapsed = time.perf_counter() - started
        finally:
            target.close()
    asyncio.run(_stream(name, [], delete_only=True))
    records = sum(t.num_rows for t in tables_)
    assert target.duplicates == 0
    return {
        "records": records,
        "messages_acked": target.acked,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(target.acked / elapsed),
        "records_per_s": round(records / elapsed),
    }


def encoded(tables_: list, prefix_token: str) -> list[tuple[str, bytes, str]]:
    """The same messages as our record mode sends: (subject, JSON, Nats-Msg-Id), made beforehand."""
    import polars as pl

    from engine.connectors.webhook import json_frame, json_lines

    out = []
    for table in tables_:
        frame = pl.from_arrow(table)
        subjects = frame.select(
            pl.lit(prefix_token + ".edge-bench.bench.") + pl.col("tag").str.replace_all(r"[\s.*>]", "_")
        ).to_series()
        out += list(
            zip(subjects.to_list(), json_lines(json_frame(frame)), frame["_key"].to_list(), strict=True)
        )
    return out


def bare(messages: list[tuple[str, bytes, str]]) -> dict:
    import nats

    name = f"BENCH{uuid.uuid4().hex[:8].upper()}"
    prefix = name.lower()
    asyncio.run(_stream(name, [prefix + ".>"]))
    ours_prefix = "bench-prefix"
    renamed = [(prefix + s[len(ours_prefix) :], d, k) for s, d, k in messages]

    async def run() -> float:
        nc = await nats.connect(SERVER)
        js = nc.jetstream()  # publish_async_max_pending: nats-py's default (4000)
        try:
            started = time.perf_counter()
            futures = [
                await js.publish_async(subject, data, headers={"Nats-Msg-Id": key})
                for subject, data, key in renamed
            ]
            acks = await asyncio.gather(*futures)
            elapsed = time.perf_counter() - started
            assert not any(a.duplicate for a in acks)
            return elapsed
        finally:
            await nc.close()

    elapsed = asyncio.run(run())
    asyncio.run(_stream(name, [], delete_only=True))
    return {
        "messages_acked": len(renamed),
        "seconds": round(elapsed, 3),
        "messages_per_s": round(len(renamed) / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--batch", type=int, default=20_000, help="rows per deliver (an outbox batch)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tables_ = tables(args.messages, args.tags, args.batch)
    pre = encoded(tables_, "bench-prefix")
    runs: dict[str, list[dict]] = {
        "target_record": [],
        "bare_nats_py_publish_async": [],
        "target_batch_1000": [],
    }
    for _ in range(args.repeats):  # interleaved: the machine's load hits them alike
        runs["target_record"].append(ours(tables_, "record"))
        runs["bare_nats_py_publish_async"].append(bare(pre))
        runs["target_batch_1000"].append(ours(tables_, "batch"))
    result = {
        "benchmark": "nats_jetstream_publish",
        "messages": args.messages,
        "tags": args.tags,
        "rows_per_deliver": args.batch,
        "payload_bytes": round(statistics.mean(len(d) for _, d, _ in pre)),
        "median_messages_per_s": {
            k: statistics.median(r["messages_per_s"] for r in v) for k, v in runs.items()
        },
        "median_records_per_s_batch_mode": statistics.median(
            r["records_per_s"] for r in runs["target_batch_1000"]
        ),
        "runs": runs,
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
        "target_messages_per_s": 30_000,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
