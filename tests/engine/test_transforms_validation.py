"""field_validation: every check, the three on_failure modes, reasons and node properties."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.context import NodeContext, RunContext
from engine.errors import TransformError
from engine.transforms.base import REJECT_REASON
from engine.transforms.catalog import build

FRAME = pl.DataFrame(
    {
        "id": [1, 2, 3, 4, 5],
        "email": ["ada@example.com", "not-an-email", None, "bob@mail.co.uk", "x@y"],
        "amount": [10, -5, 50, None, 101],
        "status": ["new", "done", "lost", None, "new"],
        "day": ["2024-01-31", "2024-02-30", "31/01/2024", None, "2024-12-01"],
        "site": [{"zip": "75001"}, {"zip": "7500A"}, {"zip": None}, {"zip": "12345"}, {"zip": "1"}],
    }
)


def validate(field: str, kind: str, on_failure: str = "reject", **parameters) -> dict[str, pl.DataFrame]:
    step = {
        "type": "field_validation",
        "field_name": field,
        "validation_type": kind,
        "on_failure": on_failure,
    }
    if parameters:
        step["parameters"] = parameters
    outputs = build(step).apply([FRAME.lazy()], NodeContext(RunContext(), "n"))
    return {port: lf.collect() for port, lf in outputs.items()}


def split_ids(result: dict[str, pl.DataFrame]) -> tuple[list[int], list[int]]:
    return result["out"]["id"].to_list(), result["rejected"]["id"].to_list()


@pytest.mark.parametrize(
    ("field", "kind", "parameters", "kept", "rejected"),
    [
        ("email", "email_format", {}, [1, 3, 4], [2, 5]),
        ("email", "not_null", {}, [1, 2, 4, 5], [3]),
        ("site.zip", "regex", {"regex": r"^\d{5}$"}, [1, 3, 4], [2, 5]),
        ("amount", "range", {"min": 0, "max": 100}, [1, 3, 4], [2, 5]),
        ("amount", "range", {"min": 0}, [1, 3, 4, 5], [2]),
        ("amount", "range", {"max": "50"}, [1, 2, 3, 4], [5]),
        ("status", "in_set", {"values": ["new", "done"]}, [1, 2, 4, 5], [3]),
        ("day", "date_format", {"format": "%Y-%m-%d"}, [1, 4, 5], [2, 3]),
        ("status", "unique", {}, [1, 2, 3, 4], [5]),
    ],
)
def test_checks_split_valid_and_rejected(field, kind, parameters, kept, rejected):
    result = validate(field, kind, **parameters)
    assert split_ids(result) == (kept, rejected)
    assert result["rejected"].columns == [*FRAME.columns, REJECT_REASON]


def test_reasons_are_human_and_name_the_field():
    reasons = {
        "email": validate("email", "email_format")["rejected"][REJECT_REASON].to_list(),
        "null": validate("email", "not_null")["rejected"][REJECT_REASON].to_list(),
        "range": validate("amount", "range", min=0, max=100)["rejected"][REJECT_REASON].to_list(),
        "set": validate("status", "in_set", values=["new", "done"])["rejected"][REJECT_REASON].to_list(),
        "unique": validate("status", "unique")["rejected"][REJECT_REASON].to_list(),
        "regex": validate("site.zip", "regex", regex="^[0-9]+$")["rejected"][REJECT_REASON].to_list(),
        "date": validate("day", "date_format", format="%Y-%m-%d")["rejected"][REJECT_REASON].to_list(),
    }
    assert reasons["email"] == ["email: not a valid email address"] * 2
    assert reasons["null"] == ["email: value is missing (null)"]
    assert reasons["range"] == ["amount: -5 is below the minimum 0", "amount: 101 is above the maximum 100"]
    assert reasons["set"] == ["status: 'lost' is not one of: new, done"]
    assert reasons["unique"] == ["status: duplicate value 'new'"]
    assert reasons["regex"] == ["site.zip: '7500A' does not match the pattern '^[0-9]+$'"]
    assert reasons["date"][0] == "day: '2024-02-30' does not match the date format '%Y-%m-%d'"


def test_nulls_pass_every_check_but_not_null():
    for field, kind, params in [
        ("email", "email_format", {}),
        ("amount", "range", {"min": 0, "max": 1000}),
        ("status", "in_set", {"values": ["new", "done", "lost"]}),
        ("status", "regex", {"regex": "^[a-z]+$"}),
        ("day", "date_format", {"format": "%Y-%m-%d"}),
    ]:
        kept = validate(field, kind, **params)["out"]
        assert kept.filter(pl.col(field).is_null()).height == FRAME.filter(pl.col(field).is_null()).height


def test_flag_keeps_every_record_and_adds_a_valid_column():
    result = validate("email", "email_format", on_failure="flag")
    assert list(result) == ["out"]
    assert result["out"]["email_valid"].to_list() == [True, False, True, True, False]
    nested = validate("site.zip", "regex", on_failure="flag", regex=r"^\d{5}$")["out"]
    assert nested["site_zip_valid"].to_list() == [True, False, True, True, False]


def test_fail_routes_like_reject_and_asks_the_executor_to_fail():
    step = {
        "type": "field_validation",
        "field_name": "email",
        "validation_type": "not_null",
        "on_failure": "fail",
    }
    node = build(step)
    assert node.fails_on_reject is True
    result = validate("email", "not_null", on_failure="fail")
    assert split_ids(result) == ([1, 2, 4, 5], [3])
    assert build({**step, "on_failure": "reject"}).fails_on_reject is False


def test_ports_and_streaming():
    base = {"type": "field_validation", "field_name": "email", "validation_type": "email_format"}
    assert build(base).output_ports() == ["out", "rejected"]
    assert build({**base, "on_failure": "flag"}).output_ports() == ["out"]
    assert build(base).streaming is True
    assert build({**base, "validation_type": "unique"}).streaming is False


def test_range_on_dates_and_in_set_with_numbers():
    frame = pl.DataFrame({"d": [date(2024, 1, 1), date(2025, 1, 1)], "n": [1, 2]})
    step = {
        "type": "field_validation",
        "field_name": "d",
        "validation_type": "range",
        "parameters": {"max": "2024-06-30"},
    }
    out = build(step).apply([frame.lazy()], NodeContext(RunContext(), "n"))
    assert out["out"].collect()["n"].to_list() == [1]
    step = {
        "type": "field_validation",
        "field_name": "n",
        "validation_type": "in_set",
        "parameters": {"values": ["2"]},
    }
    out = build(step).apply([frame.lazy()], NodeContext(RunContext(), "n"))
    assert out["rejected"].collect()["n"].to_list() == [1]


@pytest.mark.parametrize(
    ("field", "kind", "parameters"),
    [
        ("amount", "email_format", {}),
        ("email", "range", {"min": 1}),
        ("amount", "date_format", {"format": "%Y"}),
    ],
)
def test_type_errors_on_an_empty_frame(field, kind, parameters):
    step = {"type": "field_validation", "field_name": field, "validation_type": kind}
    if parameters:
        step["parameters"] = parameters
    with pytest.raises(TransformError) as err:
        build(step).apply([FRAME.clear().lazy()], NodeContext(RunContext(), "n"))
    assert err.value.param == "field_name"


def test_missing_field():
    with pytest.raises(TransformError) as err:
        validate("nope", "not_null")
    assert err.value.param == "field_name"


@pytest.mark.parametrize(
    ("step", "loc", "text"),
    [
        (
            {"validation_type": "regex"},
            ("parameters", "regex"),
            "validation_type 'regex' needs parameters.regex",
        ),
        ({"validation_type": "range"}, ("parameters",), "min and/or"),
        (
            {"validation_type": "regex", "parameters": {"regex": "("}},
            ("parameters", "regex"),
            "invalid regex",
        ),
        ({"validation_type": "in_set", "parameters": {"values": []}}, ("parameters", "values"), "at least 1"),
        (
            {"validation_type": "not_null", "on_failure": "ignore"},
            ("on_failure",),
            "'reject', 'flag' or 'fail'",
        ),
        ({"validation_type": "phone"}, ("validation_type",), "'email_format'"),
    ],
)
def test_config_errors(step, loc, text):
    with pytest.raises(ValidationError) as err:
        build({"type": "field_validation", "field_name": "x", **step})
    assert err.value.errors()[0]["loc"] == loc
    assert text in err.value.errors()[0]["msg"]


# email_format matches EMAIL_PATTERN on the trimmed value, as one pattern that allows the
# whitespace around it (engine/transforms/validation.py EMAIL_PADDED): the same answer as trimming
# (`str.strip_chars()`, Unicode whitespace) and then matching, for any value.
_WHITESPACE = " \t\n\r\x0b\x0c\x85\xa0\u1680\u2003\u2028\u202f\u3000"
_EMAIL_PIECES = st.text(alphabet="ab0.-_@+Z" + _WHITESPACE, max_size=12)
_EMAILISH = st.builds(
    lambda pre, local, domain, tld, post: f"{pre}{local}@{domain}.{tld}{post}",
    st.text(alphabet=_WHITESPACE, max_size=3),
    _EMAIL_PIECES,
    _EMAIL_PIECES,
    st.text(alphabet="abcZ1" + _WHITESPACE, max_size=4),
    st.text(alphabet=_WHITESPACE + "x", max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_EMAILISH, _EMAIL_PIECES, st.text(max_size=20), st.none()), max_size=30))
def test_email_format_is_the_pattern_on_the_trimmed_value(values):
    from engine.transforms.validation import EMAIL_PADDED, EMAIL_PATTERN

    s = pl.Series("email", values, dtype=pl.String)
    trimmed_then_matched = s.str.strip_chars().str.contains(EMAIL_PATTERN)
    assert s.str.contains(EMAIL_PADDED).to_list() == trimmed_then_matched.to_list()


def test_email_format_accepts_an_address_with_whitespace_around_it():
    frame = pl.DataFrame({"email": [" ada@example.com\t", "\u00a0bob@mail.co.uk\u3000", "a b@c.de", "x@y "]})
    step = {"type": "field_validation", "field_name": "email", "validation_type": "email_format"}
    out = build(step).apply([frame.lazy()], NodeContext(RunContext(), "v"))
    assert out["out"].collect()["email"].to_list() == [" ada@example.com\t", "\u00a0bob@mail.co.uk\u3000"]
    assert out["rejected"].collect()["email"].to_list() == ["a b@c.de", "x@y "]
