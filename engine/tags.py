"""Tag records: the one shape every field protocol delivers, one row per value (a long table).

OPC UA, Modbus, DNP3 and MQTT sources all emit Polars DataFrames with exactly `TAG_SCHEMA`, so the
time-series transformations, the streaming executor and the historian need to know one shape only.
A small batch may travel as a `TagBatch` instead: the same columns as plain lists, which the stream
hands to the tag historian as they are and turns into a Polars frame only where a node needs one
(issue 12 item 4: an idle one-tag pipeline does not import Polars at all).

- `timestamp`: when the value was true: the device's or OPC UA server's source timestamp, or the
  poll time for devices without a clock (Modbus).
- `server_timestamp`: the OPC UA server timestamp; null for other protocols.
- `value`: numbers and booleans (true = 1.0); `value_text` holds string values (then `value` is null).
- `quality`: `good`, `uncertain` or `bad`; `reason` says why it is not good (`comm_lost`,
  `timeout`, `exception_2`, `stale`, an OPC UA status name...), null when good.
- `source`: the connector node or device that produced the value.
- `received_at`: when this process received it (latency = received_at - timestamp).

Gap records (quality `bad`, reason `comm_lost`) are written while a link is down, one per tag, so
that a historian shows a gap instead of a flat line.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from engine.lazy import lazy_module

pl = lazy_module("polars")

Quality = Literal["good", "uncertain", "bad"]
QUALITIES: tuple[Quality, ...] = ("good", "uncertain", "bad")
COMM_LOST = "comm_lost"

TAG_COLUMNS = (
    "timestamp",
    "server_timestamp",
    "tag",
    "value",
    "value_text",
    "quality",
    "reason",
    "source",
    "received_at",
)
TIME_COLUMNS = frozenset({"timestamp", "server_timestamp", "received_at"})
# Batches up to this many rows may travel as a `TagBatch` (no Polars); larger ones are frames.
LEAN_ROWS = 256


@functools.cache
def tag_schema() -> pl.Schema:
    """`TAG_SCHEMA` (made on first use: it needs Polars)."""
    time = pl.Datetime("us", "UTC")
    types = {"value": pl.Float64}
    return pl.Schema({c: time if c in TIME_COLUMNS else types.get(c, pl.String) for c in TAG_COLUMNS})


def __getattr__(name: str) -> Any:  # TAG_SCHEMA and TIME import Polars: made when first asked for
    if name == "TAG_SCHEMA":
        return tag_schema()
    if name == "TIME":
        return tag_schema()["timestamp"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def utc_now() -> datetime:
    return datetime.now(UTC)


_EPOCH, _EPOCH_NAIVE, _MICROSECOND = (
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1970, 1, 1),
    timedelta(microseconds=1),
)


def epoch_us(moment: datetime | None) -> int | None:
    """Microseconds since 1970 (exact); a naive datetime is UTC, as protocol libraries give them.
    The builder keeps integers: Polars turns a list of them into timestamps about 100x faster than
    a list of timezone-aware datetimes (3 µs a value, measured at 50 k OPC UA notifications)."""
    if moment is None:
        return None
    return (moment - (_EPOCH_NAIVE if moment.tzinfo is None else _EPOCH)) // _MICROSECOND


def from_epoch_us(us: int | None) -> datetime | None:
    """`epoch_us` back: microseconds since 1970 as a UTC datetime (None stays None)."""
    return None if us is None else _EPOCH + us * _MICROSECOND


def empty_tags() -> pl.DataFrame:
    return pl.DataFrame(schema=tag_schema())


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns in `TAG_SCHEMA` order and types; missing optional columns become nulls."""
    return frame.select(
        [
            (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in tag_schema().items()
        ]
    )


def has_value(frame: pl.DataFrame | TagBatch) -> bool:
    """Does the batch carry a value (a record that is not `bad`)? Tag frames say so per row; a
    frame without `quality` has a value when it has a row."""
    if not frame.height:
        return False
    if "quality" not in frame.columns:
        return True
    if isinstance(frame, TagBatch):
        return any(q != "bad" for q in frame.column("quality"))
    return bool((frame.get_column("quality") != "bad").any())


def is_frame(batch: Any) -> bool:
    """Is `batch` a Polars DataFrame? (Without importing Polars: if it is not imported, it is not.)"""
    polars = sys.modules.get("polars")
    return polars is not None and isinstance(batch, polars.DataFrame)


def as_frame(batch: Any) -> Any:
    """A `TagBatch` as its Polars frame; anything else as it is."""
    return batch.frame() if isinstance(batch, TagBatch) else batch


def concat_batches(batches: Sequence[Any]) -> Any:
    """One batch of several: a `TagBatch` when all are and their rows fit `LEAN_ROWS`, else a frame
    (TagBatches of the same columns joined first and made one frame; else Polars' diagonal concat
    of the frames, the TagBatches made frames)."""
    batches = [b for b in batches if b.width]
    if batches and all(isinstance(b, TagBatch) for b in batches) and len({b.columns for b in batches}) == 1:
        if len(batches) == 1:
            return batches[0]
        joined = TagBatch.concat(batches)  # many small rounds: one frame made once, not one each
        return joined if joined.height <= LEAN_ROWS else joined.frame()
    frames = [as_frame(b) for b in batches]
    if not frames:
        return pl.DataFrame()
    if len(frames) == 1:
        return frames[0]
    return pl.concat(frames, how="diagonal_relaxed")


class TagBatch:
    """A few tag records as plain columns: `TAG_SCHEMA`'s (or some of them, in any order), times as
    epoch microseconds (`epoch_us`). What a source hands over when its batch is small (a Modbus
    round of a few tags): the stream moves it to the tag historian, which writes it with statement
    parameters, so that a pipeline that only stores a few values a second never imports Polars.
    `frame()` gives the same records as a TAG_SCHEMA frame (for transforms, other destinations,
    large batches). Read-only by convention: batches share their column lists."""

    __slots__ = ("_columns", "height")

    def __init__(self, columns: dict[str, list[Any]]):
        heights = {len(v) for v in columns.values()}
        if len(heights) > 1:
            raise ValueError(f"TagBatch: columns of unequal length ({sorted(heights)})")
        unknown = [c for c in columns if c not in TAG_COLUMNS]
        if unknown:
            raise ValueError(
                f"TagBatch: {unknown[0]!r} is not a tag column (allowed: {', '.join(TAG_COLUMNS)})"
            )
        self._columns = dict(columns)
        self.height = heights.pop() if heights else 0

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self._columns)

    @property
    def width(self) -> int:
        return len(self._columns)

    def __len__(self) -> int:
        return self.height

    def __repr__(self) -> str:
        return f"TagBatch({self.height} rows: {', '.join(self._columns)})"

    def column(self, name: str) -> list[Any]:
        return self._columns[name]

    def select(self, names: Iterable[str]) -> TagBatch:
        return TagBatch({n: self._columns[n] for n in names})

    def slice(self, offset: int, length: int | None = None) -> TagBatch:
        end = None if length is None else offset + length
        return TagBatch({n: v[offset:end] for n, v in self._columns.items()})

    def head(self, n: int) -> TagBatch:
        return self.slice(0, n)

    def tail(self, n: int) -> TagBatch:
        return self.slice(max(0, self.height - n))

    def estimated_size(self) -> int:
        """Bytes, about: what the same rows take in a frame (8 a number or time, 16 a short text)."""
        return sum((8 if c in TIME_COLUMNS or c == "value" else 16) * self.height for c in self._columns)

    def text_problem(self) -> str | None:
        """Where the first text is that cannot be UTF-8 (a protocol's bytes decoded with surrogate
        escapes), which neither Arrow nor DuckDB takes: `record N, field 'F': ...`; None if none."""
        for name, column in self._columns.items():
            if name in TIME_COLUMNS or name == "value":
                continue
            for row, text in enumerate(column):
                if text is not None:
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError as exc:
                        return f"record {row + 1}, field '{name}': text that is not UTF-8 ({exc.reason} at {exc.start})"
        return None

    def as_text(self) -> dict[str, list[str | None]]:
        """Every value as text (times ISO 8601 UTC, text that is not UTF-8 with backslash escapes):
        what the reject store keeps of a batch it could not take."""

        def text(name: str, value: Any) -> str | None:
            if value is None:
                return None
            if name in TIME_COLUMNS:
                return from_epoch_us(value).isoformat()  # type: ignore[union-attr]
            return str(value).encode("utf-8", "backslashreplace").decode("utf-8")

        return {name: [text(name, v) for v in column] for name, column in self._columns.items()}

    def rows(self) -> list[tuple[Any, ...]]:
        """Row tuples, times as UTC datetimes: statement parameters (`engine.store.tag_historian`)."""
        columns = [
            [from_epoch_us(t) for t in v] if c in TIME_COLUMNS else v for c, v in self._columns.items()
        ]
        return list(zip(*columns, strict=True))

    @staticmethod
    def concat(batches: Sequence[TagBatch]) -> TagBatch:
        names = batches[0].columns
        return TagBatch({n: [x for b in batches for x in b._columns[n]] for n in names})

    def frame(self) -> pl.DataFrame:
        schema = tag_schema()
        return pl.DataFrame(
            {
                c: (
                    pl.Series(v, dtype=pl.Int64).cast(schema[c])
                    if c in TIME_COLUMNS
                    else pl.Series(v, dtype=schema[c])
                )
                for c, v in self._columns.items()
            }
        )


class TagBatchBuilder:
    """Collects values column by column and makes ONE DataFrame per micro-batch.

    Protocol callbacks arrive one value at a time (an OPC UA notification, a DNP3 point); they
    append to plain lists here, and `take()` turns the lists into a columnar batch. Bulk appends
    (`extend`) serve pollers that decode whole register blocks at once.
    """

    def __init__(self, source: str):
        self.source = source
        self._clear()

    def _clear(self) -> None:
        self.timestamp: list[int | None] = []  # epoch microseconds (see `epoch_us`)
        self.server_timestamp: list[int | None] = []
        self.tag: list[str] = []
        self.value: list[float | None] = []
        self.value_text: list[str | None] = []
        self.quality: list[str] = []
        self.reason: list[str | None] = []
        self.received_at: list[int | None] = []

    def __len__(self) -> int:
        return len(self.tag)

    def add(
        self,
        tag: str,
        value: Any,
        *,
        timestamp: datetime | None = None,
        quality: Quality = "good",
        reason: str | None = None,
        server_timestamp: datetime | None = None,
        received_at: datetime | None = None,
    ) -> None:
        now = epoch_us(received_at or utc_now())
        number, text = split_value(value)
        self.timestamp.append(epoch_us(timestamp) if timestamp is not None else now)
        self.server_timestamp.append(epoch_us(server_timestamp))
        self.tag.append(tag)
        self.value.append(number)
        self.value_text.append(text)
        self.quality.append(quality)
        self.reason.append(reason)
        self.received_at.append(now)

    def extend(
        self,
        tags: Sequence[str],
        values: Sequence[Any],
        *,
        timestamp: datetime,
        quality: Quality | Sequence[Quality] = "good",
        reason: str | Sequence[str | None] | None = None,
        received_at: datetime | None = None,
    ) -> None:
        """Many tags read at one instant (a Modbus block, a DNP3 integrity poll)."""
        n = len(tags)
        now = epoch_us(received_at or utc_now())
        for value in values:
            number, text = split_value(value)
            self.value.append(number)
            self.value_text.append(text)
        self.tag.extend(tags)
        self.timestamp.extend([epoch_us(timestamp)] * n)
        self.server_timestamp.extend([None] * n)
        self.quality.extend([quality] * n if isinstance(quality, str) else quality)
        self.reason.extend([reason] * n if reason is None or isinstance(reason, str) else reason)
        self.received_at.extend([now] * n)

    def extend_columns(
        self,
        tags: Sequence[str],
        numbers: Sequence[float | None],
        texts: Sequence[str | None] | None,
        timestamps_us: Sequence[int | None],
        server_timestamps_us: Sequence[int | None],
        quality: Quality | Sequence[Quality] = "good",
        reason: str | Sequence[str | None] | None = None,
        received_at: datetime | None = None,
    ) -> None:
        """Values already in columns (a decoded OPC UA publish response): numbers and texts as
        `split_value` gives them (`texts` None: no text at all), times in epoch microseconds (a
        timestamp None is the receive time). All sequences have the same length."""
        n = len(tags)
        columns = [numbers, timestamps_us, server_timestamps_us]
        columns += [c for c in (texts, quality, reason) if c is not None and not isinstance(c, str)]
        if any(len(c) != n for c in columns):
            raise ValueError(f"extend_columns: columns of unequal length (tags: {n})")
        now = epoch_us(received_at or utc_now())
        if None in timestamps_us:
            timestamps_us = [now if t is None else t for t in timestamps_us]
        self.tag.extend(tags)
        self.value.extend(numbers)
        self.value_text.extend([None] * n if texts is None else texts)
        self.timestamp.extend(timestamps_us)
        self.server_timestamp.extend(server_timestamps_us)
        self.quality.extend([quality] * n if isinstance(quality, str) else quality)
        self.reason.extend([reason] * n if reason is None or isinstance(reason, str) else reason)
        self.received_at.extend([now] * n)

    def gap(self, tags: Iterable[str], reason: str = COMM_LOST, at: datetime | None = None) -> None:
        """One bad record per tag: the link is down (or the device answered nothing usable)."""
        at = at or utc_now()
        for tag in tags:
            self.add(tag, None, timestamp=at, quality="bad", reason=reason, received_at=at)

    def _batch(self) -> TagBatch:
        return TagBatch(
            {
                "timestamp": self.timestamp,
                "server_timestamp": self.server_timestamp,
                "tag": self.tag,
                "value": self.value,
                "value_text": self.value_text,
                "quality": self.quality,
                "reason": self.reason,
                "source": [self.source] * len(self.tag),
                "received_at": self.received_at,
            }
        )

    def take_batch(self) -> TagBatch:
        """The collected values as one `TagBatch` (no Polars); the builder starts empty again."""
        batch = self._batch()
        self._clear()
        return batch

    def take_small(self) -> pl.DataFrame | TagBatch:
        """`take_batch()` when the batch fits `LEAN_ROWS`, else `take()`: what a source hands the
        stream (which accepts both)."""
        return self.take_batch() if len(self) <= LEAN_ROWS else self.take()

    def take(self) -> pl.DataFrame:
        """The collected values as one TAG_SCHEMA frame; the builder starts empty again. When the
        frame cannot be made (text that is not UTF-8), the values stay for the caller to repair."""
        frame = self._batch().frame()
        self._clear()
        return frame


def split_value(value: Any) -> tuple[float | None, str | None]:
    """(number, text) of a protocol value: booleans are 1.0/0.0, strings go to `value_text`."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return (1.0 if value else 0.0), None
    if isinstance(value, int | float):
        return float(value), None
    if isinstance(value, bytes | bytearray):
        return None, bytes(value).hex()
    return None, str(value)
