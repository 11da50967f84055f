"""date_time operations and the ISO 8601 helpers."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from pydantic import ValidationError

from engine.context import NodeContext, RunContext
from engine.errors import TransformError
from engine.transforms.catalog import build
from engine.transforms.isotime import iso_duration_to_polars

FRAME = pl.DataFrame(
    {
        "text": ["05/01/2024 10:30", "31/12/2023 23:59", "garbage", None],
        "iso": ["2024-01-05T10:30:00Z", "2024-01-05T12:30:00+02:00", "2024-01-05 10:30", None],
        "ts": [datetime(2024, 1, 5, 10, 30), datetime(2024, 3, 31, 0, 45), datetime(2024, 2, 29, 12), None],
        "start": [
            datetime(2024, 1, 5, 9),
            datetime(2024, 3, 30),
            datetime(2024, 2, 29, 12, 30),
            datetime(2024, 1, 1),
        ],
        "day": [date(2024, 1, 31), date(2024, 2, 29), date(2023, 12, 1), None],
        "n": [1, 2, 3, 4],
    }
)


def run(**step) -> pl.DataFrame:
    node = build({"type": "date_time", **step})
    return node.apply([FRAME.lazy()], NodeContext(RunContext(), "n"))["out"].collect()


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_parse_with_a_format_gives_utc_timestamps_and_null_for_bad_text():
    out = run(field_name="text", operation="parse", format="%d/%m/%Y %H:%M", output_field="parsed")
    assert out["parsed"].dtype == pl.Datetime("us", "UTC")
    assert out["parsed"].to_list() == [utc(2024, 1, 5, 10, 30), utc(2023, 12, 31, 23, 59), None, None]


def test_parse_date_only_format_gives_dates_and_offsets_are_honoured():
    frame_out = run(field_name="iso", operation="parse", format="%Y-%m-%dT%H:%M:%S%#z")
    assert frame_out["iso"].to_list()[:2] == [utc(2024, 1, 5, 10, 30), utc(2024, 1, 5, 10, 30)]
    dates = build({"type": "date_time", "field_name": "d", "operation": "parse", "format": "%d.%m.%Y"})
    frame = pl.DataFrame({"d": ["31.01.2024", "x"]})
    result = dates.apply([frame.lazy()], NodeContext(RunContext(), "n"))["out"].collect()
    assert result["d"].to_list() == [date(2024, 1, 31), None]


def test_format_reads_iso_text_and_naive_timestamps_as_utc():
    assert run(field_name="iso", operation="format", format="%Y-%m-%d %H:%M")["iso"].to_list() == [
        "2024-01-05 10:30",
        "2024-01-05 10:30",
        "2024-01-05 10:30",
        None,
    ]
    assert run(field_name="day", operation="format", format="%d/%m")["day"].to_list() == [
        "31/01",
        "29/02",
        "01/12",
        None,
    ]


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("hour", [utc(2024, 1, 5, 10), utc(2024, 3, 31, 0), utc(2024, 2, 29, 12), None]),
        ("15m", [utc(2024, 1, 5, 10, 30), utc(2024, 3, 31, 0, 45), utc(2024, 2, 29, 12), None]),
        ("day", [utc(2024, 1, 5), utc(2024, 3, 31), utc(2024, 2, 29), None]),
        ("month", [utc(2024, 1, 1), utc(2024, 3, 1), utc(2024, 2, 1), None]),
        ("YEAR", [utc(2024, 1, 1), utc(2024, 1, 1), utc(2024, 1, 1), None]),
    ],
)
def test_truncate(unit, expected):
    assert run(field_name="ts", operation="truncate", unit=unit)["ts"].to_list() == expected


def test_to_timezone_keeps_the_instant():
    out = run(field_name="ts", operation="to_timezone", timezone="Europe/Berlin")
    assert out["ts"].dtype == pl.Datetime("us", "Europe/Berlin")
    first = out["ts"][0]
    assert first == utc(2024, 1, 5, 10, 30) and first.utcoffset().total_seconds() == 3600
    assert out["ts"][1].tzinfo.key == ZoneInfo("Europe/Berlin").key  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("duration", "expected_first"),
    [
        ("PT15M", utc(2024, 1, 5, 10, 45)),
        ("P1DT2H30M", utc(2024, 1, 6, 13, 0)),
        ("-P1D", utc(2024, 1, 4, 10, 30)),
        ("P1M", utc(2024, 2, 5, 10, 30)),
        ("PT1.5S", utc(2024, 1, 5, 10, 30, 1, 500000)),
        ("P1W", utc(2024, 1, 12, 10, 30)),
    ],
)
def test_add_iso_duration(duration, expected_first):
    assert (
        run(field_name="ts", operation="add", duration=duration, output_field="later")["later"][0]
        == expected_first
    )


def test_add_months_is_calendar_aware_on_dates():
    assert run(field_name="day", operation="add", duration="P1M")["day"].to_list() == [
        date(2024, 2, 29),
        date(2024, 3, 29),
        date(2024, 1, 1),
        None,
    ]


@pytest.mark.parametrize(
    ("unit", "first"), [("seconds", 5400.0), ("minutes", 90.0), ("hours", 1.5), ("days", 1.5 / 24)]
)
def test_diff(unit, first):
    out = run(field_name="ts", operation="diff", other_field="start", unit=unit, output_field="gap")
    assert out["gap"][0] == pytest.approx(first)
    assert out["gap"][2] == pytest.approx(
        {"seconds": -1800, "minutes": -30, "hours": -0.5, "days": -1 / 48}[unit]
    )
    assert out["gap"][3] is None


def test_type_errors_and_missing_fields():
    with pytest.raises(TransformError) as err:
        run(field_name="n", operation="truncate", unit="day")
    assert err.value.param == "field_name"
    with pytest.raises(TransformError) as err:
        run(field_name="ts", operation="diff", other_field="nope")
    assert err.value.param == "other_field"
    with pytest.raises(TransformError):
        run(field_name="ts", operation="parse", format="%Y")


@pytest.mark.parametrize(
    ("step", "loc"),
    [
        ({"operation": "parse"}, ("format",)),
        ({"operation": "truncate", "unit": "fortnight"}, ("unit",)),
        ({"operation": "to_timezone", "timezone": "Mars/Olympus"}, ("timezone",)),
        ({"operation": "add", "duration": "1 day"}, ("duration",)),
        ({"operation": "diff", "other_field": "b", "unit": "weeks"}, ("unit",)),
        ({"operation": "shift"}, ("operation",)),
    ],
)
def test_config_errors(step, loc):
    with pytest.raises(ValidationError) as err:
        build({"type": "date_time", "field_name": "ts", **step})
    assert err.value.errors()[0]["loc"] == loc


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("PT15M", "15m"),
        ("P1Y2M3W4DT5H6M7S", "1y2mo3w4d5h6m7s"),
        ("-PT1H", "-1h"),
        ("PT0.25S", "250000us"),
        ("P0D", "0d"),
    ],
)
def test_iso_duration(text, offset):
    assert iso_duration_to_polars(text) == offset


@pytest.mark.parametrize("text", ["P", "PT", "1D", "P1H", "PT1D", "P-1D", ""])
def test_bad_iso_duration(text):
    with pytest.raises(ValueError, match="ISO 8601 duration"):
        iso_duration_to_polars(text)
