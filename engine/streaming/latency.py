"""Latency percentiles over a sliding window of recent rows (received -> committed)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from engine.tags import TagBatch

SAMPLES_PER_BATCH = 256  # rows sampled per micro-batch: enough for p99, cheap for big batches


def received_us(frame: Any, arrived_us: int) -> list[int]:
    """When each (sampled) row reached this process, in epoch microseconds: the `received_at`
    column of tag records (a frame's or a `TagBatch`'s), else the time the batch was handed to the
    engine."""
    step = max(1, frame.height // SAMPLES_PER_BATCH)
    if isinstance(frame, TagBatch):
        if "received_at" in frame.columns:
            return [arrived_us if t is None else t for t in frame.column("received_at")[::step]]
        return [arrived_us] * len(range(0, frame.height, step))
    import polars as pl  # a frame: Polars is loaded

    column = frame.schema.get("received_at")
    if isinstance(column, pl.Datetime):
        series = frame.get_column("received_at").gather_every(step).dt.epoch("us")
        return series.fill_null(arrived_us).to_list()
    return [arrived_us] * len(range(0, frame.height, step))


class LatencyWindow:
    def __init__(self, size: int = 20_000):
        self._values: deque[float] = deque(maxlen=size)  # milliseconds
        self._lock = threading.Lock()
        self.max_ms = 0.0

    def add(self, received: list[int], committed_us: int) -> None:
        if not received:
            return
        values = [(committed_us - r) / 1000.0 for r in received]
        with self._lock:
            self._values.extend(values)
            self.max_ms = max(self.max_ms, max(values))

    def snapshot(self) -> dict[str, float | int | None]:
        with self._lock:
            values = sorted(self._values)
        if not values:
            return {"p50": None, "p99": None, "max": None, "window": 0}

        def pct(q: float) -> float:
            return round(values[min(len(values) - 1, int(q * len(values)))], 3)

        return {"p50": pct(0.50), "p99": pct(0.99), "max": round(self.max_ms, 3), "window": len(values)}
