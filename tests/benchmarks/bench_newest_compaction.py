"""The kept newest rows' compaction alone (`engine.store.tag_newest`): a Modbus stream's committed
frames (100,000 tags a second in ~15,000-row frames, 6.5 a second, as `bench_modbus.py --historian`
commits them) handed to `NewestRows.add`, with the views compacted at 1x, 2x, 3x... the rows of the
last compaction (`COMPACT_RATIO`). Prints one JSON document: CPU seconds, compactions, the most
rows held as views, per ratio, in rounds that alternate.

    python tests/benchmarks/bench_newest_compaction.py [--tags 100000] [--seconds 30] [--ratios 1,2,3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from engine.store import tag_newest
from engine.store.tag_last import LAST_COLUMNS
from engine.tags import tag_schema


def frames(tags: int, seconds: int) -> list[pl.DataFrame]:
    """`seconds` of a stream of `tags` values a second, committed 6.5 times a second."""
    names = pl.Series("tag", [f"meter{i // 12_500}.hr{i % 12_500}" for i in range(tags)])
    per = tags * 2 // 13
    time_type = tag_schema()["timestamp"]
    start = int(datetime(2026, 12, 5, tzinfo=UTC).timestamp() * 1e6)
    out, rng = [], np.random.default_rng(0)
    for first in range(0, tags * seconds, per):
        rows = np.arange(first, min(first + per, tags * seconds))
        at = pl.Series(start + (rows // tags) * 1_000_000).cast(time_type)
        out.append(
            pl.DataFrame(
                {
                    "tag": names.gather(rows % tags),
                    "timestamp": at,
                    "value": rng.random(len(rows)),
                    "value_text": pl.Series([None] * len(rows), dtype=pl.String),
                    "quality": pl.repeat("good", len(rows), eager=True),
                    "reason": pl.Series([None] * len(rows), dtype=pl.String),
                    "source": pl.repeat("modbus", len(rows), eager=True),
                    "received_at": at,
                }
            ).select(LAST_COLUMNS)
        )
    return out


def run(batches: list[pl.DataFrame], ratio: float) -> dict:
    tag_newest.COMPACT_RATIO = ratio
    kept = tag_newest.NewestRows()
    compactions, peak = 0, 0
    original = kept._compact_parts

    def counted() -> None:
        nonlocal compactions
        compactions += bool(kept._parts)
        original()

    kept._compact_parts = counted  # type: ignore[method-assign]
    t0 = time.process_time()
    for batch in batches:
        generation = kept.begin()
        kept.add([batch], generation, None)
        peak = max(peak, kept._part_rows)
    cpu = time.process_time() - t0
    return {"cpu_s": round(cpu, 3), "compactions": compactions, "most_rows_held_as_views": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tags", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--ratios", default="1,2,3")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    batches = frames(args.tags, args.seconds)
    ratios = [float(r) for r in args.ratios.split(",")]
    runs: dict[str, list[dict]] = {f"{r:g}x": [] for r in ratios}
    for _ in range(args.rounds):
        for ratio in ratios:
            result = run(batches, ratio)
            result["percent_of_a_core"] = round(100 * result["cpu_s"] / args.seconds, 2)
            runs[f"{ratio:g}x"].append(result)
    print(
        json.dumps(
            {
                "benchmark": "bench_newest_compaction",
                "machine": {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]},
                "tags": args.tags,
                "seconds_of_rows": args.seconds,
                "frames": len(batches),
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
