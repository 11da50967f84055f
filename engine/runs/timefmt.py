"""The one text form of a moment: ISO 8601 in UTC with `Z` and microseconds.

`2026-12-02T13:48:46.123456Z`: what run records, the metadata store and the API write. (Columns
in data files use `ISO_DATETIME` of engine/connectors/formats/common.py, the Polars form.)"""

from __future__ import annotations

from datetime import UTC, datetime

ISO_UTC = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso_utc(moment: datetime) -> str:
    """`moment` as ISO 8601 UTC text; a naive datetime is taken as local time (Python's rule)."""
    return moment.astimezone(UTC).strftime(ISO_UTC)


def iso_utc_or_none(moment: datetime | str | None) -> str | None:
    """As `iso_utc`; text is passed through (already written), None stays None."""
    if moment is None or isinstance(moment, str):
        return moment
    return iso_utc(moment)


def now_iso() -> str:
    return iso_utc(datetime.now(UTC))
