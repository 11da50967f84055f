"""A deliberately simple, per-record reference of the time-series transformations (plain Python).

Rows are dicts with `tag`, `t` (integer microseconds since the epoch), `value` (float or None) and
`quality`. Each function restates the documented semantics one record at a time, so the property
tests can check that the columnar engine means the same thing. Never used by the engine.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

Row = dict[str, Any]


def by_tag(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows per tag, each list sorted by time (ties keep input order), tags in sorted order."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row["tag"]].append(row)
    return {tag: sorted(groups[tag], key=lambda r: r["t"]) for tag in sorted(groups)}


def stat(name: str, values: list[float]) -> float | int | None:
    if name == "count":
        return len(values)
    if not values:
        return None
    if name in ("avg", "mean"):
        return sum(values) / len(values)
    if name == "sum":
        return sum(values)
    if name == "min":
        return min(values)
    if name == "max":
        return max(values)
    if name == "first":
        return values[0]
    if name == "last":
        return values[-1]
    if name == "median":
        return statistics.median(values)
    if name == "std":
        return statistics.stdev(values) if len(values) > 1 else None
    raise ValueError(name)


def resample(rows: list[Row], interval_us: int, names: list[str]) -> list[Row]:
    """Left-closed buckets aligned to the epoch, labelled by their start; empty buckets absent."""
    out = []
    for tag, series in by_tag(rows).items():
        buckets: dict[int, list[Row]] = defaultdict(list)
        for row in series:
            buckets[row["t"] // interval_us * interval_us].append(row)
        for start in sorted(buckets):
            values = [r["value"] for r in buckets[start] if r["value"] is not None]
            out.append({"tag": tag, "t": start, **{n: stat(n, values) for n in names}})
    return out


def rolling_time(rows: list[Row], window_us: int, name: str) -> list[Row]:
    """The window of a row: the tag's rows with time in (t - window, t]."""
    out = []
    for tag, series in by_tag(rows).items():
        for row in series:
            inside = [r["value"] for r in series if row["t"] - window_us < r["t"] <= row["t"]]
            out.append(
                {"tag": tag, "t": row["t"], "result": stat(name, [v for v in inside if v is not None])}
            )
    return out


def rolling_rows(rows: list[Row], count: int, name: str) -> list[Row]:
    """The window of a row: the tag's last `count` rows, this one included."""
    out = []
    for tag, series in by_tag(rows).items():
        for i, row in enumerate(series):
            inside = [r["value"] for r in series[max(0, i - count + 1) : i + 1]]
            out.append(
                {"tag": tag, "t": row["t"], "result": stat(name, [v for v in inside if v is not None])}
            )
    return out


def rate_of_change(rows: list[Row], per_seconds: float) -> list[Row]:
    out = []
    for tag, series in by_tag(rows).items():
        previous = None
        for row in series:
            rate = None
            if previous is not None and previous["value"] is not None and row["value"] is not None:
                seconds = (row["t"] - previous["t"]) / 1e6
                if seconds > 0:
                    rate = (row["value"] - previous["value"]) / seconds * per_seconds
            out.append({"tag": tag, "t": row["t"], "result": rate})
            previous = row
    return out


def deadband(rows: list[Row], absolute: float | None, percent: float | None, span: float | None) -> list[Row]:
    """Rows kept: first of a tag, quality changed from the previous row, value appears/disappears,
    or |value - last kept value| > band."""
    kept = []
    for series in by_tag(rows).values():
        last_kept: Row | None = None
        previous: Row | None = None
        for row in series:
            value = _number(row["value"])
            if (
                last_kept is None
                or row["quality"] != previous["quality"]
                or (value is None) != (_number(last_kept["value"]) is None)
            ):
                keep = True
            elif value is None:
                keep = False
            else:
                reference = _number(last_kept["value"])
                if absolute is not None:
                    band = absolute
                elif span is not None:
                    band = percent / 100 * span
                else:
                    band = percent / 100 * abs(reference)
                keep = abs(value - reference) > band
            if keep:
                kept.append(row)
                last_kept = row
            previous = row
    return kept


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value
