"""JSON payloads -> tag records, one micro-batch at a time.

Each message is parsed once (`json.loads`, C-accelerated) and the configured paths are picked out
into plain column lists; everything after that is columnar Polars on the whole micro-batch: the
timestamp parsing (epoch in any unit, ISO 8601 with or without offset, or a strftime format),
quality mapping, tag names and the checks that turn an unreadable row into a rejected one.

Bad payloads are never dropped silently. A message that is not JSON, names a key twice in one
object (`duplicate key "a"`: which value was meant is unknowable), lacks the value, carries an
object where a value belongs, or has an unreadable timestamp or quality becomes ONE record with
quality `bad` and reason `bad_payload: <what> at <path>` (tag: the topic-derived tag, or the
topic when the tag itself could not be read), so it shows in the historian next to the good data.
`JsonDecoder.decode` also returns the (topic, reason) pairs, which the source counts
(`bad_payloads`) and keeps the last few of for the GUI.

Timestamps follow `protocols/timestamps.py`: missing, null or 0 at `timestamp_path` is a null
timestamp; one outside 1990..receive time + 1 day (e.g. milliseconds where `epoch_unit: s`) keeps
the value, quality `uncertain`, a null timestamp and reason `implausible_timestamp: <raw> at
<path> (<format>) ...`, also returned as a problem (counted `implausible_timestamps`). Without a
`timestamp_path` the receive time is the timestamp (the sender has no clock, like a Modbus poll).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from engine.tags import TAG_SCHEMA, TIME
from protocols.mqtt.config import JsonMapping
from protocols.timestamps import IMPLAUSIBLE, PLAUSIBLE_FROM, PLAUSIBLE_FROM_US

_TOKEN = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")
_MISSING = object()
_EPOCH_US = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}
_QUALITIES = {"good": "good", "uncertain": "uncertain", "bad": "bad", "true": "good", "false": "bad"}


class DuplicateKey(ValueError):
    """A JSON object names a key twice: which value was meant is unknowable, so the message is bad."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(f"duplicate key {json.dumps(key)} (keys are unique in an object)")
            seen.add(key)
    return doc


def compile_path(path: str) -> tuple[str | int, ...]:
    """`$.a.b[0]` -> ("a", "b", 0)."""
    body = path[1:] if path.startswith("$") else path
    return tuple(int(i) if i else key for i, key in _TOKEN.findall(body))


def pick(document: Any, steps: tuple[str | int, ...]) -> Any:
    for step in steps:
        if isinstance(step, int):
            if not isinstance(document, list) or step >= len(document):
                return _MISSING
            document = document[step]
        else:
            if not isinstance(document, dict) or step not in document:
                return _MISSING
            document = document[step]
    return document


def _float(number: int | float) -> float:
    """float(), but an integer beyond a float's range (JSON allows 400 digits) is +-inf."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


@dataclass
class _Columns:
    topic: list[str]
    tag: list[str | None]
    value: list[float | None]
    value_text: list[str | None]
    ts_number: list[float | None]
    ts_text: list[str | None]
    quality: list[str | None]
    error: list[str | None]
    received: list[datetime]


class JsonDecoder:
    """Maps JSON messages to TAG_SCHEMA rows as configured by a `JsonMapping`."""

    def __init__(self, mapping: JsonMapping, source: str):
        self.mapping, self.source = mapping, source
        self.tag_path = None if mapping.tag_from == "topic" else compile_path(mapping.tag_from)
        fields = mapping.fields or [mapping.value_path]
        # (suffix appended to the tag, path as written, compiled path)
        self.fields = [
            (("/" + p.removeprefix("$").lstrip(".")) if mapping.fields else "", p, compile_path(p))
            for p in fields
        ]
        self.ts_path = compile_path(mapping.timestamp_path) if mapping.timestamp_path else None
        self.quality_path = compile_path(mapping.quality_path) if mapping.quality_path else None
        self.fields_missing = 0

    def decode(
        self, topics: list[str], payloads: list[bytes], received: list[datetime]
    ) -> tuple[pl.DataFrame, list[tuple[str, str]]]:
        """One micro-batch of messages -> (TAG_SCHEMA frame, [(topic, reason) of each problem]):
        a bad payload (reason `bad_payload: ...`) or an implausible timestamp (`implausible_timestamp: ...`)."""
        cols = _Columns([], [], [], [], [], [], [], [], [])
        for topic, payload, at in zip(topics, payloads, received, strict=True):
            self._message(cols, topic, payload, at)
        frame = self._frame(cols)
        bad = frame.filter(
            pl.col("reason").str.starts_with("bad_payload") | pl.col("reason").str.starts_with(IMPLAUSIBLE)
        )
        rejected = list(zip(bad["topic"].to_list(), bad["reason"].to_list(), strict=True))
        return frame.drop("topic"), rejected

    def _message(self, c: _Columns, topic: str, payload: bytes, at: datetime) -> None:
        m = self.mapping

        def row(tag: str | None, number=None, text=None, ts=None, quality=None, error=None) -> None:
            c.topic.append(topic)
            c.tag.append(m.tag_prefix + tag if tag is not None else topic)
            c.value.append(number)
            c.value_text.append(text)
            c.ts_number.append(
                _float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None
            )
            c.ts_text.append(ts if isinstance(ts, str) else None)
            c.quality.append(quality)
            c.error.append(error)
            c.received.append(at)

        try:
            doc = json.loads(payload, object_pairs_hook=_unique_keys)
        except DuplicateKey as exc:
            return row(topic, error=str(exc)[:200])
        except (ValueError, UnicodeDecodeError) as exc:
            return row(topic, error=f"not JSON ({exc.__class__.__name__}: {exc})"[:200])
        tag = topic
        if self.tag_path is not None:
            tag = pick(doc, self.tag_path)
            if tag is _MISSING or isinstance(tag, dict | list) or tag is None:
                return row(None, error=f"expected a tag name at {m.tag_from}")
            tag = str(tag)
        ts = None
        if self.ts_path is not None:
            ts = pick(doc, self.ts_path)
            if ts is _MISSING or ts is None or (ts == 0 and not isinstance(ts, str | bool)):
                ts = None  # none, and 0 is "none" too (never 1970)
            elif not isinstance(ts, int | float | str) or isinstance(ts, bool):
                return row(tag, error=f"expected a timestamp at {m.timestamp_path}, got {_kind(ts)}")
        quality = None
        if self.quality_path is not None:
            raw = pick(doc, self.quality_path)
            if raw is not _MISSING and raw is not None:
                quality = _QUALITIES.get(str(raw).lower())
                if quality is None:
                    return row(tag, error=f"expected good, uncertain or bad at {m.quality_path}")
        for suffix, path, steps in self.fields:
            value = pick(doc, steps)
            if value is _MISSING:
                if m.fields:  # a partial update: that field is simply not in this message
                    self.fields_missing += 1
                    continue
                row(tag, error=f"no value at {path}")
            elif isinstance(value, dict | list):
                row(tag + suffix, error=f"expected a number, boolean or string at {path}, got {_kind(value)}")
            elif isinstance(value, str):
                row(tag + suffix, text=value, ts=ts, quality=quality)
            else:
                try:
                    number = None if value is None else float(value)
                except OverflowError:  # an integer of 400 digits: JSON allows it, a float does not
                    row(tag + suffix, error=f"a number out of range at {path} ({str(value)[:20]}...)")
                    continue
                row(tag + suffix, number=number, ts=ts, quality=quality)

    def _frame(self, c: _Columns) -> pl.DataFrame:
        m = self.mapping
        raw = pl.DataFrame(
            {
                "topic": pl.Series(c.topic, dtype=pl.String),
                "tag": pl.Series(c.tag, dtype=pl.String),
                "value": pl.Series(c.value, dtype=pl.Float64),
                "value_text": pl.Series(c.value_text, dtype=pl.String),
                "ts_number": pl.Series(c.ts_number, dtype=pl.Float64),
                "ts_text": pl.Series(c.ts_text, dtype=pl.String),
                "quality": pl.Series(c.quality, dtype=pl.String),
                "error": pl.Series(c.error, dtype=pl.String),
                "received_at": pl.Series(c.received, dtype=TIME),
            }
        )
        raw = self._timestamps(raw)
        has_ts = pl.col("ts_number").is_not_null() | pl.col("ts_text").is_not_null()
        raw_ts = pl.coalesce(pl.col("ts_text"), pl.col("ts_number").cast(pl.String)).str.slice(0, 40)
        unit = m.timestamp_format if m.timestamp_format != "epoch" else f"epoch {m.epoch_unit}"
        ts_error = pl.when(has_ts & pl.col("_ts").is_null() & ~pl.col("_odd")).then(
            pl.format("unreadable timestamp at {} ({}): {}", pl.lit(m.timestamp_path), pl.lit(unit), raw_ts)
        )
        raw = raw.with_columns(pl.coalesce(pl.col("error"), ts_error).alias("error"))
        bad = pl.col("error").is_not_null()
        odd_time = ~bad & pl.col("_odd")
        odd_reason = pl.format(
            "{}: {} at {} ({}) is outside {}..now+1 day",
            pl.lit(IMPLAUSIBLE),
            raw_ts,
            pl.lit(m.timestamp_path),
            pl.lit(unit),
            pl.lit(PLAUSIBLE_FROM.date().isoformat()),
        )
        error = pl.col("error")
        # The receive time stands in only when no timestamp is configured (a sender without a
        # clock, like a Modbus poll); a configured one that is missing, 0 or implausible is null.
        when = pl.col("received_at") if self.ts_path is None else pl.col("_ts")
        return raw.select(
            pl.when(bad).then(pl.col("received_at")).otherwise(when).alias("timestamp"),
            pl.lit(None, dtype=TIME).alias("server_timestamp"),
            pl.col("tag"),
            pl.when(bad).then(None).otherwise(pl.col("value")).alias("value"),
            pl.when(bad).then(None).otherwise(pl.col("value_text")).alias("value_text"),
            pl.when(bad)
            .then(pl.lit("bad"))
            .when(odd_time & (pl.col("quality").fill_null("good") == "good"))
            .then(pl.lit("uncertain"))
            .otherwise(pl.col("quality").fill_null("good"))
            .alias("quality"),
            pl.when(bad)
            .then(pl.lit("bad_payload: ") + error)
            .when(odd_time)
            .then(odd_reason)
            .when(pl.col("quality").is_in(["uncertain", "bad"]))
            .then(pl.lit("reported"))
            .alias("reason"),
            pl.lit(self.source, dtype=pl.String).alias("source"),
            pl.col("received_at"),
            pl.col("topic"),
        ).cast(dict(TAG_SCHEMA))

    def _timestamps(self, raw: pl.DataFrame) -> pl.DataFrame:
        """`raw` with `_ts`, the parsed time when it is plausible (1990-01-01..received + 1 day)
        or null, and `_odd`, true where a time was read but fell outside. In steps, so that each
        expression runs once (an eager select does not share common subexpressions)."""
        m = self.mapping
        fmt = m.timestamp_format
        if self.ts_path is None:
            return raw.with_columns(pl.lit(None, dtype=TIME).alias("_ts"), pl.lit(False).alias("_odd"))
        number, text = pl.col("ts_number"), pl.col("ts_text")
        epoch_number = pl.coalesce(number, text.cast(pl.Float64, strict=False)) if fmt == "epoch" else number
        if fmt == "iso8601":
            epoch_number = pl.lit(None, dtype=pl.Float64)
        if fmt in ("auto", "iso8601"):
            iso = text.str.replace(" ", "T", literal=True)
            parsed = pl.coalesce(
                iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False),
                iso.str.to_datetime(
                    "%Y-%m-%dT%H:%M:%S%.f", time_unit="us", strict=False
                ).dt.replace_time_zone("UTC"),
            )
        elif fmt == "epoch":
            parsed = pl.lit(None, dtype=TIME)
        else:  # a strftime format; a time without an offset is taken as UTC
            aware = "%z" in fmt or "%#z" in fmt or "%:z" in fmt
            parsed = text.str.to_datetime(fmt, time_unit="us", strict=False)
            parsed = parsed.dt.convert_time_zone("UTC") if aware else parsed.dt.replace_time_zone("UTC")
            epoch_number = pl.lit(None, dtype=pl.Float64)
        upto = pl.col("received_at") + pl.duration(days=1)
        raw = raw.with_columns((epoch_number * _EPOCH_US[m.epoch_unit]).alias("_us"), parsed.alias("_parsed"))
        us, parsed = pl.col("_us"), pl.col("_parsed")
        raw = raw.with_columns(
            us.is_between(PLAUSIBLE_FROM_US, upto.dt.epoch("us")).alias("_us_ok"),
            parsed.is_between(pl.lit(PLAUSIBLE_FROM, dtype=TIME), upto).alias("_parsed_ok"),
        )
        us_ok, parsed_ok = pl.col("_us_ok"), pl.col("_parsed_ok")
        return raw.with_columns(
            pl.coalesce(
                pl.when(us_ok).then(us.round().cast(pl.Int64, strict=False).cast(TIME)),
                pl.when(parsed_ok).then(parsed),
            ).alias("_ts"),
            ((us.is_not_null() & ~us_ok) | (parsed.is_not_null() & ~parsed_ok))
            .fill_null(False)
            .alias("_odd"),
        )
