"""Tag records: the one shape every field protocol delivers, one row per value (a long table).

OPC UA, Modbus, DNP3 and MQTT sources all emit Polars DataFrames with exactly `TAG_SCHEMA`, so the
time-series transformations, the streaming executor and the historian need to know one shape only.

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

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import polars as pl

Quality = Literal["good", "uncertain", "bad"]
QUALITIES: tuple[Quality, ...] = ("good", "uncertain", "bad")
COMM_LOST = "comm_lost"

TIME = pl.Datetime("us", "UTC")
TAG_SCHEMA = pl.Schema(
    {
        "timestamp": TIME,
        "server_timestamp": TIME,
        "tag": pl.String,
        "value": pl.Float64,
        "value_text": pl.String,
        "quality": pl.String,
        "reason": pl.String,
        "source": pl.String,
        "received_at": TIME,
    }
)
TAG_COLUMNS = tuple(TAG_SCHEMA.names())


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


def _times(values: list[int | None]) -> pl.Series:
    return pl.Series(values, dtype=pl.Int64).cast(TIME)


def empty_tags() -> pl.DataFrame:
    return pl.DataFrame(schema=TAG_SCHEMA)


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns in `TAG_SCHEMA` order and types; missing optional columns become nulls."""
    return frame.select(
        [
            (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in TAG_SCHEMA.items()
        ]
    )


def has_value(frame: pl.DataFrame) -> bool:
    """Does the batch carry a value (a record that is not `bad`)? Tag frames say so per row; a
    frame without `quality` has a value when it has a row."""
    if not frame.height:
        return False
    if "quality" not in frame.columns:
        return True
    return bool((frame.get_column("quality") != "bad").any())


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

    def take(self) -> pl.DataFrame:
        """The collected values as one batch; the builder starts empty again."""
        frame = pl.DataFrame(
            {
                "timestamp": _times(self.timestamp),
                "server_timestamp": _times(self.server_timestamp),
                "tag": pl.Series(self.tag, dtype=pl.String),
                "value": pl.Series(self.value, dtype=pl.Float64),
                "value_text": pl.Series(self.value_text, dtype=pl.String),
                "quality": pl.Series(self.quality, dtype=pl.String),
                "reason": pl.Series(self.reason, dtype=pl.String),
                "source": pl.Series([self.source] * len(self.tag), dtype=pl.String),
                "received_at": _times(self.received_at),
            }
        )
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
