"""How a real-time pipeline micro-batches and how hard it pushes back (see docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

MIB = 1 << 20
COMMIT_MAX_ROWS = 50_000  # a grouped commit's default bound (see commit_max_rows)


@dataclass(frozen=True)
class StreamSettings:
    # A micro-batch is cut when a source has `batch_size` rows waiting or its oldest waiting row
    # is `max_latency_ms` old, whichever comes first (the schedule's two fields).
    batch_size: int = 1000
    max_latency_ms: int = 1000
    # Micro-batches waiting together are committed in one transaction, up to this many rows (and
    # half of `max_latency_ms` spent on them); None: 50,000 rows (or one micro-batch, if larger).
    # Bigger transactions cost more under the historian's 32 MB memory_limit, not less: 200,000-row
    # ones ran out of memory in the Modbus benchmark (issue 12, docs/performance.md).
    commit_max_rows: int | None = None  # None: COMMIT_MAX_ROWS
    # Each source's queue holds at most this much; None: ten micro-batches, at least 250,000 rows
    # (one poll round of a big Modbus or OPC UA source must fit; the bytes bound comes first).
    queue_max_rows: int | None = None
    queue_max_bytes: int = 64 * MIB
    # A full queue makes the source's emit() wait this long, then the oldest rows are dropped
    # (counted and alarmed): a live value is worth more than one that is already late.
    block_timeout_s: float = 0.5
    # Seconds a source's stop() may take at shutdown before the runner goes on without it.
    stop_timeout_s: float = 5.0

    @property
    def max_rows(self) -> int:
        rows = self.queue_max_rows if self.queue_max_rows is not None else max(10 * self.batch_size, 250_000)
        return max(rows, self.batch_size)  # a smaller queue could never fill a micro-batch

    @property
    def commit_rows(self) -> int:
        rows = self.commit_max_rows if self.commit_max_rows is not None else COMMIT_MAX_ROWS
        return max(rows, self.batch_size)

    @classmethod
    def from_schedule(cls, schedule: Any, **overrides: Any) -> StreamSettings:
        """From a RealTimeSchedule (any other schedule gives the defaults); `overrides` that are
        not None win over the schedule's values."""
        found: dict[str, Any] = {}
        if getattr(schedule, "type", None) == "real_time":
            for name in (
                "batch_size",
                "max_latency_ms",
                "queue_max_rows",
                "queue_max_bytes",
                "block_timeout_s",
            ):
                value = getattr(schedule, name, None)
                if value is not None:
                    found[name] = value
        found.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **found)
