"""ISO 8601 parsing shared by `cast`, `date_time` and conditions.

Timestamps become `Datetime("us", "UTC")`. A string with an offset (`Z`, `+02:00`) is converted to UTC;
a string without one is taken as UTC already (edge devices log in UTC; a local-time source should be
converted with `date_time: to_timezone` after an explicit `parse`).
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime

from engine.lazy import lazy_module

pl = lazy_module("polars")


@functools.cache
def utc_datetime() -> pl.Datetime:
    """Polars' UTC microsecond datetime type (made on first use: Polars is imported lazily)."""
    return pl.Datetime("us", "UTC")


_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M")


def parse_iso_datetime(text: pl.Expr) -> pl.Expr:
    """String expression -> UTC datetime; anything unparseable becomes null."""
    # A space between date and time is as common as the `T`; normalise it once.
    t = text.str.strip_chars().str.replace(" ", "T", literal=True)
    candidates = [t.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False) for f in _AWARE_FORMATS]
    candidates += [
        t.str.to_datetime(f, time_unit="us", strict=False).dt.replace_time_zone("UTC") for f in _NAIVE_FORMATS
    ]
    candidates.append(
        t.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    )
    return pl.coalesce(candidates)


def parse_iso_date(text: pl.Expr) -> pl.Expr:
    t = text.str.strip_chars()
    return pl.coalesce(t.str.to_date("%Y-%m-%d", strict=False), parse_iso_datetime(t).dt.date())


def to_utc_datetime(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr | None:
    """A Date, Datetime or ISO string expression as a UTC datetime; None for other types."""
    if isinstance(dtype, pl.Datetime):
        return expr.dt.replace_time_zone("UTC") if dtype.time_zone is None else expr
    if dtype == pl.Date:
        return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if dtype in (pl.String, pl.Null):
        return parse_iso_datetime(expr.cast(pl.String))
    return None


def parse_literal(value: str) -> datetime:
    """A Python datetime from an ISO 8601 literal (config values such as filter bounds); naive = UTC."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_date_literal(value: str) -> date:
    return parse_literal(value).date() if "T" in value or " " in value.strip() else date.fromisoformat(value)


_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def iso_duration_to_polars(text: str) -> str:
    """`P1DT2H30M` -> `1d2h30m` (Polars' offset language, which keeps calendar months and years).

    Raises ValueError with what is allowed when the text is not an ISO 8601 duration.
    """
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "-P") or text.strip().endswith("T"):
        raise ValueError(f"'{text}' is not an ISO 8601 duration (examples: 'PT15M', 'P1DT2H30M', '-P1D')")
    parts = match.groupdict()
    out = []
    for key, unit in (("y", "y"), ("mo", "mo"), ("w", "w"), ("d", "d"), ("h", "h"), ("mi", "m")):
        if parts[key]:
            out.append(f"{int(parts[key])}{unit}")
    if parts["s"]:
        seconds = float(parts["s"])
        whole, micros = int(seconds), round((seconds - int(seconds)) * 1_000_000)
        out.append(f"{whole}s" if whole else "")
        out.append(f"{micros}us" if micros else "")
    offset = "".join(out) or "0s"
    return f"-{offset}" if parts["sign"] else offset
