"""Tag-threshold alert evaluation (issue 11 item 3): rows per second through `AlertEngine.observe`
(one Polars pass per rule over a batch; per tag only the batch's end state) beside the same rule
evaluated per value in a Python loop (what a Node-RED function node or a hand-written script does)
writing the same durable record (one transaction per batch), and that loop without any record, on
the same batches, in the same run.

    python tests/benchmarks/bench_alerts.py [--rows 1000000] [--tags 1000] [--batch 10000]

Rule: `tag T* outside [-2.5, 2.5] for 5s` on random-walk values, one point per tag per second.
Both ways must raise the same alerts (checked). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))


def batches(rows: int, tags: int, size: int):
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(7)
    per_tag = rows // tags
    values = np.cumsum(rng.normal(0, 0.3, (per_tag, tags)), axis=0).ravel()  # row-major: time, then tag
    names = np.tile(np.array([f"T{i}" for i in range(tags)]), per_tag)
    seconds = np.repeat(np.arange(per_tag, dtype=np.int64), tags) * 1_000_000
    frame = pl.DataFrame(
        {"tag": names, "timestamp": pl.Series(seconds).cast(pl.Datetime("us", "UTC")), "value": values}
    )
    return [frame.slice(i, size) for i in range(0, frame.height, size)]


def loop(parts, low: float, high: float, for_us: int, store=None) -> set[str]:
    """The per-value way: a dict of since per tag, a Python comparison per value; with `store`,
    the same durable record as the engine (raises and clears, one transaction per batch)."""
    since: dict[str, int] = {}
    raised: set[str] = set()
    for part in parts:
        up: list[str] = []
        down: list[str] = []
        for tag, ts, value in zip(
            part["tag"].to_list(),
            part["timestamp"].dt.epoch("us").to_list(),
            part["value"].to_list(),
            strict=True,
        ):
            if value is not None and (value < low or value > high):
                start = since.setdefault(tag, ts)
                if ts - start >= for_us and tag not in raised:
                    raised.add(tag)
                    up.append(tag)
            else:
                since.pop(tag, None)
                if tag in raised:
                    raised.discard(tag)
                    down.append(tag)
        if store is not None:
            store.apply(
                [
                    {"rule": "r", "pipeline": "bench", "subject": t, "kind": "tag", "condition": "c",
                     "severity": "warning", "message": "m", "value": None}
                    for t in up
                ],
                [("r", t, None) for t in down],
            )  # fmt: skip
    return raised


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=10_000)
    args = ap.parse_args()
    from engine.alerts.evaluator import AlertEngine

    parts = batches(args.rows, args.tags, args.batch)
    rows = sum(p.height for p in parts)
    with tempfile.TemporaryDirectory() as tmp:
        doc = {"error_handling": {"alerts": [{"condition": "tag T* outside [-2.5, 2.5] for 5s"}]}}
        engine = AlertEngine(Path(tmp), spec_of=lambda name: doc, ticker=False)
        engine.load("bench", doc)
        t0 = time.perf_counter()
        for part in parts:
            engine.observe(part)
        vectorised_s = time.perf_counter() - t0
        open_tags = {a["subject"] for a in engine.store.list(limit=1_000_000)}
        engine.close()
    from engine.alerts.store import AlertStore

    with tempfile.TemporaryDirectory() as tmp:
        store = AlertStore(Path(tmp) / "metadata.db")
        t0 = time.perf_counter()
        looped = loop(parts, -2.5, 2.5, 5_000_000, store)
        loop_s = time.perf_counter() - t0
        store.close()
    t0 = time.perf_counter()
    loop(parts, -2.5, 2.5, 5_000_000)
    bare_loop_s = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "benchmark": "alerts_tag_threshold",
                "rows": rows,
                "tags": args.tags,
                "batch_rows": args.batch,
                "batches": len(parts),
                "observe_rows_per_s": round(rows / vectorised_s),
                "observe_s": round(vectorised_s, 3),
                "python_loop_rows_per_s": round(rows / loop_s),
                "python_loop_s": round(loop_s, 3),
                "python_loop_without_store_rows_per_s": round(rows / bare_loop_s),
                "speedup": round(loop_s / vectorised_s, 1),
                "open_alerts": len(open_tags),
                "same_alerts_as_loop": open_tags == looped,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
