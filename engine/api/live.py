"""EngineAPI: the live calls (see engine/api/core.py).

Live values come from the data directory's ring buffers (`engine.store.ring_buffer`), which the
`historian` destination feeds as it writes: reading them is a copy of numpy arrays under a lock, so
charts never wait on DuckDB. The historian answers for what the buffers do not hold: tags that are
not streaming now (their newest row in `tag_last`), the source of each tag (the buffers keep none),
and the older part of a long chart window (`history`, bucketed). Those reads run on the worker pool.

Throughput (rows/s per running pipeline) is worked out from the `stream_stats` events that streaming
runs emit about once a second, keyed by the pipeline name their `run_started` event gave.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.api.core import EngineCore
from engine.api.events import EngineEvent, RunFinished, RunStarted, StreamStats

if TYPE_CHECKING:
    import polars as pl

QUALITY_NAMES = ("good", "uncertain", "bad")  # ring buffer quality codes 0, 1, 2
SOURCES_FRESH_S = 5.0  # the historian's tag list is re-read at most this often...
SOURCES_MISSING_S = 1.0  # ...or this often while a live tag has no known source yet
UNKNOWN_SOURCE = "(live)"
HISTORIAN_FILE = "historian.duckdb"  # the historian's file in a data directory (engine/workspace.py)


class LocalLive:
    """The live part of the in-process engine (`engine.live`)."""

    def __init__(self, core: EngineCore):
        self._core = core
        self._live_lock = threading.Lock()
        self._run_pipelines: dict[str, str] = {}  # run id -> pipeline name (from run_started)
        self._streams: dict[str, dict[str, Any]] = {}  # run id -> rows, uptime, rows_per_s
        self._stored_last: dict[str, dict[str, Any]] = {}  # tag -> newest historian row
        self._stored_at = float("-inf")  # monotonic time of the last historian read
        self._stored_reading: concurrent.futures.Future | None = None
        # one reader of the historian's tag tables, made once they exist (a new one per query ran
        # its CREATE TABLE IF NOT EXISTS and catalog look-ups again: ~5 ms of each time series)
        self._reader: tuple[Any, Any] | None = None  # (Historian, TagHistorian)
        core.subscribe(self._note_live_event)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait for a historian read of ours (it must end before DuckDB closes)."""
        with self._live_lock:
            reading = self._stored_reading
        if reading is not None:
            concurrent.futures.wait([reading], timeout=timeout)

    # ---- the ring buffers --------------------------------------------------------------------
    def buffer(self):
        """The data directory's ring buffers (the `historian` destination feeds the same ones)."""
        from engine.store.ring_buffer import ring_buffers  # numpy only when live views are used

        return ring_buffers(self._core.data_dir)

    def window(self, tag: str, since_us: int | None = None):
        """(timestamps in epoch µs, values, quality codes 0/1/2) of `tag` from the ring buffer,
        oldest first, from `since_us` on: numpy copies, no I/O (safe on any thread)."""
        return self.buffer().window(tag, since_us)

    def windows(self, tags: Sequence[str], since_us: int | None = None) -> dict[str, tuple[Any, Any, Any]]:
        """`window` of each tag with one look-up of the buffer (it resolves the data directory's
        path: file system calls, each a chance for another thread to take the GIL)."""
        buffer = self.buffer()
        return {tag: buffer.window(tag, since_us) for tag in tags}

    def tags(self, wait: bool = False) -> list[dict[str, Any]]:
        """Every tag with its newest value: `tag`, `source`, `value`, `quality` (good, uncertain,
        bad), `timestamp_us` (epoch µs or None) and `live` (True when the ring buffer holds it).

        Values of live tags come from the ring buffer; tags the buffer lacks come from the
        historian's `tag_last`, read on the worker pool at most every few seconds: without `wait`
        this call never touches DuckDB itself (a stale list is refreshed for the next call)."""
        reading = self._refresh_stored()
        if wait and reading is not None:
            reading.result()
        buffer = self.buffer()
        with self._live_lock:
            stored = dict(self._stored_last)
        rows = []
        for tag in buffer.tags():
            last = buffer.last(tag)
            if last is None:
                continue
            ts, value, quality = last
            known = stored.get(tag)
            rows.append(
                {
                    "tag": tag,
                    "source": (known or {}).get("source") or UNKNOWN_SOURCE,
                    "value": None if value != value else value,  # NaN: a text or missing value
                    "quality": QUALITY_NAMES[quality] if quality < len(QUALITY_NAMES) else "bad",
                    "timestamp_us": ts or None,
                    "live": True,
                }
            )
        live = {r["tag"] for r in rows}
        rows += [{**row, "live": False} for tag, row in stored.items() if tag not in live]
        rows.sort(key=lambda r: (r["source"], r["tag"]))
        return rows

    def _refresh_stored(self) -> concurrent.futures.Future | None:
        """Start a read of the historian's newest rows if the cached one is old; the running read."""
        with self._live_lock:
            if self._stored_reading is not None and not self._stored_reading.done():
                return self._stored_reading
            age = time.monotonic() - self._stored_at
            missing = any(t not in self._stored_last for t in self.buffer().tags())
            if age < SOURCES_FRESH_S and not (missing and age >= SOURCES_MISSING_S):
                return None
            self._stored_at = time.monotonic()
            self._stored_reading = self._core.call(self._read_stored_last)
            return self._stored_reading

    def _read_stored_last(self) -> None:
        rows = self._core.workspace.historian.newest_tag_rows()
        if not rows and not self._stored_last:
            return  # nothing stored yet
        stored = {
            tag: {
                "tag": tag,
                "source": source or UNKNOWN_SOURCE,
                "value": value if value is not None else text,
                "quality": quality or "bad",
                "timestamp_us": ts,
            }
            for tag, source, value, text, quality, ts in rows
        }
        with self._live_lock:
            self._stored_last = stored

    # ---- the historian ----------------------------------------------------------------------------
    def history(
        self,
        tags: str | Sequence[str],
        start: datetime | None,
        end: datetime | None,
        bucket: str | timedelta = "1s",
        statistics: Sequence[str] = ("avg", "min", "max", "count"),
        include_bad: bool = False,
    ) -> pl.DataFrame:
        """`TagHistorian.query`: one row per tag and bucket in [start, end): `tag`, `bucket`, the
        statistics, `bad_count`. No tags stored yet gives an empty frame. Blocking (DuckDB)."""
        return self._query_history(tags, start, end, bucket, statistics, include_bad)

    def last_values(self, tags: str | Sequence[str]) -> pl.DataFrame:
        """The newest stored value of each tag (`TagHistorian.last`). Blocking (DuckDB)."""
        from engine.store.tag_historian import TagHistorian

        return TagHistorian(self._core.workspace.historian).last_values(tags)

    def _tag_reader(self):
        """The TagHistorian that reads for this engine; None while the historian has no tag table
        (reading creates none)."""
        from engine.store.tag_historian import TAGS_TABLE, TagHistorian

        historian = self._core.workspace.historian
        reader = self._reader
        if reader is not None and reader[0] is historian:
            return reader[1]
        if not historian.has_tables(TAGS_TABLE):
            return None
        tag_historian = TagHistorian(historian)
        self._reader = (historian, tag_historian)
        return tag_historian

    def _query_history(self, tags, start, end, bucket, statistics, include_bad=False):
        import polars as pl

        reader = self._tag_reader() if tags else None
        if reader is None:
            schema = {"tag": pl.String, "bucket": pl.Datetime("us", "UTC")}
            schema.update({s: pl.Float64 for s in statistics})
            return pl.DataFrame(schema={**schema, "count": pl.Int64, "bad_count": pl.Int64})
        return reader.query(tags, start, end, bucket, statistics, include_bad=include_bad)

    def chart_series(
        self, tags: Sequence[str], seconds: float, now_us: int | None = None
    ) -> dict[str, tuple[Any, Any, Any]]:
        """{tag: (timestamps µs, values, quality codes)} over the last `seconds`: the ring buffer's
        points, preceded by historian buckets (avg; quality bad when a bucket held bad values) for
        the part of the window older than the buffer's oldest point. Blocking (may read DuckDB)."""
        now_us = now_us if now_us is not None else time.time_ns() // 1000
        since_us = now_us - int(seconds * 1e6)
        return self._chart_series(list(tags), since_us)

    def _chart_series(self, tags: list[str], since_us: int):
        import numpy as np

        recent = self.windows(tags, since_us)
        older: dict[str, int] = {}  # tag -> where its buffer begins, when that is inside the window
        for tag, (ts, _, _) in recent.items():
            begins = int(ts[0]) if len(ts) else None
            if begins is None or begins > since_us:
                older[tag] = begins if begins is not None else time.time_ns() // 1000
        if not older:
            return recent
        until_us = max(older.values())
        span_s = max(1.0, (until_us - since_us) / 1e6)
        frame = self._query_history(
            list(older), _datetime(since_us), _datetime(until_us), history_bucket(span_s), ("avg", "count")
        )
        result = {}
        for tag, (ts, values, quality) in recent.items():
            if tag not in older:
                result[tag] = (ts, values, quality)
                continue
            part = frame.filter(frame["tag"] == tag)
            h_ts = part["bucket"].dt.epoch("us").to_numpy().astype(np.int64)
            keep = h_ts < older[tag]
            h_values = part["avg"].cast(float).fill_null(float("nan")).to_numpy()[keep]
            h_quality = np.where(part["bad_count"].to_numpy()[keep] > 0, 2, 0).astype(np.uint8)
            result[tag] = (
                np.concatenate((h_ts[keep], ts)),
                np.concatenate((h_values, values)),
                np.concatenate((h_quality, quality)),
            )
        return result

    # ---- throughput ---------------------------------------------------------------------------
    def throughput(self) -> dict[str, float]:
        """Rows/s committed by each running streaming pipeline (name -> rate), from the latest
        `stream_stats` events; a pipeline running twice is named with its run id too."""
        with self._live_lock:
            streams = [(rid, dict(s)) for rid, s in self._streams.items()]
        names: dict[str, float] = {}
        for run_id, stream in streams:
            name = stream["pipeline"]
            if name in names:
                name = f"{name} ({run_id})"
            names[name] = stream["rows_per_s"]
        return names

    def _note_live_event(self, event: EngineEvent) -> None:
        with self._live_lock:
            if isinstance(event, RunStarted):
                self._run_pipelines[event.run_id] = event.pipeline or event.run_id
            elif isinstance(event, StreamStats) and event.run_id:
                run_id, rows, uptime = (
                    event.run_id,
                    int(event.rows_committed or 0),
                    float(event.uptime_s or 0.0),
                )
                before = self._streams.get(run_id)
                if before is None:
                    rate = rows / uptime if uptime > 0 else 0.0
                else:
                    elapsed = uptime - before["uptime_s"]
                    rate = (rows - before["rows"]) / elapsed if elapsed > 0 else before["rows_per_s"]
                self._streams[run_id] = {
                    "pipeline": self._run_pipelines.get(run_id, run_id),
                    "rows": rows,
                    "uptime_s": uptime,
                    "rows_per_s": round(rate, 3),
                }
            elif isinstance(event, RunFinished):
                self._streams.pop(event.run_id, None)
                self._run_pipelines.pop(event.run_id, None)


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """A duration text (10s, 5m, 1h, 1d...) as a timedelta; UsageError naming `what` otherwise."""
    from engine.store.tag_historian import parse_duration as parse

    return parse(text, what)


def __getattr__(name: str) -> Any:
    if name == "STATISTICS":  # the historian's statistics, loaded only when asked for
        from engine.store.tag_historian import STATISTICS

        return STATISTICS
    raise AttributeError(name)


def history_bucket(span_s: float, points: int = 1000) -> str:
    """A bucket width giving about `points` buckets over `span_s` seconds, rounded to a width
    people read (1s, 5s, 10s, 30s, 1m, 5m...); whole minutes read the historian's 1-minute rollup."""
    for width, text in (
        (1, "1s"),
        (5, "5s"),
        (10, "10s"),
        (30, "30s"),
        (60, "1m"),
        (300, "5m"),
        (600, "10m"),
    ):
        if span_s / width <= points:
            return text
    return "1h"


def _datetime(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
