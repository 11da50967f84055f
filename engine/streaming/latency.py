"""Latency percentiles over a sliding window of recent rows (received -> committed)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from engine.tags import TagBatch, epoch_us

# Receipt times sampled per commit (the micro-batches it groups, `commit_rows` rows at most):
# enough for p99 over the window. Sampled per micro-batch instead (256 of each), a stream of
# 1,000-row micro-batches had every third row's time go through Python: on the Modbus benchmark's
# 100k values/s, ~35k samples a second, ~4% of a core (the lists, the latencies, the window).
SAMPLES_PER_COMMIT = 256


# Up to this many samples of a frame are read value by value (~1.5 µs each); more, by converting the
# column (~0.2 ms a call whatever its length: for the ~6 samples of a 1,000-row micro-batch that
# conversion was most of what the latency sampling cost).
FEW_SAMPLES = 64


def sample_step(rows: int) -> int:
    """Every how many rows one is sampled, when `rows` rows are committed together."""
    return max(1, rows // SAMPLES_PER_COMMIT)


def received_us(frame: Any, arrived_us: int, step: int | None = None) -> list[int]:
    """When each sampled row reached this process, in epoch microseconds: the `received_at`
    column of tag records (a frame's or a `TagBatch`'s), else the time the batch was handed to the
    engine. One row of every `step` from the first (the commit's `sample_step`; default: the
    frame's own), so every frame gives at least its first row (the oldest, for the batch latency)."""
    if step is None:
        step = sample_step(frame.height)
    rows = range(0, frame.height, step)
    if "received_at" not in frame.columns:
        return [arrived_us] * len(rows)
    if isinstance(frame, TagBatch):
        return [arrived_us if t is None else t for t in frame.column("received_at")[::step]]
    import polars as pl  # a frame: Polars is loaded

    series = frame.get_column("received_at")
    if not isinstance(series.dtype, pl.Datetime):
        return [arrived_us] * len(rows)
    if len(rows) <= FEW_SAMPLES:
        return [arrived_us if (t := series[i]) is None else epoch_us(t) for i in rows]
    return series.gather_every(step).dt.epoch("us").fill_null(arrived_us).to_list()


class LatencyWindow:
    """The latest `size` sampled latencies; `snapshot` sorts them (once a commit). At ~256 samples a
    commit, 4,096 span a few seconds of a 100k values/s stream (20,000 samples spanned ~0.5 s of it
    when every third row was sampled) and sort in ~0.24 ms against ~2.3 ms."""

    def __init__(self, size: int = 4096):
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
