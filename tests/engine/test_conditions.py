"""Conditions: every operator, composition, null handling, literal conversion and config errors."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest
from pydantic import ValidationError

from engine.errors import TransformError
from engine.transforms.conditions import Condition, compile_condition

FRAME = pl.DataFrame(
    {
        "id": [1, 2, 3, 4, 5],
        "status": ["completed", "pending", None, "Completed", "cancelled"],
        "amount": [10.0, 55.5, 20.0, None, 100.0],
        "qty": [1, 5, 3, 2, None],
        "code": ["10", "9", "x", None, "100"],
        "day": [date(2024, 1, 1), date(2024, 2, 1), None, date(2024, 3, 1), date(2024, 1, 15)],
        "at": [datetime(2024, 1, 1, 8, tzinfo=UTC), None, datetime(2024, 1, 1, 12, tzinfo=UTC)] * 1
        + [datetime(2024, 1, 2, tzinfo=UTC), datetime(2023, 12, 31, tzinfo=UTC)],
        "ok": [True, False, None, True, False],
        "tags": [["a", "b"], [], None, ["b"], ["c"]],
        "site": [{"area": "north"}, {"area": "south"}, {"area": None}, None, {"area": "north"}],
    }
)


def ids(cond: dict) -> list[int]:
    expr = compile_condition(Condition.model_validate(cond), FRAME.collect_schema())
    return FRAME.filter(expr)["id"].to_list()


def test(field: str, operator: str, value=None) -> dict:
    return {"field": field, "operator": operator, "value": value}


test.__test__ = False  # a condition builder, not a pytest test


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        (test("status", "equals", "completed"), [1]),
        (test("status", "not_equals", "completed"), [2, 4, 5]),
        (test("amount", "gt", 20), [2, 5]),
        (test("amount", "gte", 20), [2, 3, 5]),
        (test("amount", "lt", 20), [1]),
        (test("amount", "lte", "20"), [1, 3]),
        (test("qty", "in", [1, 3, 99]), [1, 3]),
        (test("qty", "not_in", [1, 3]), [2, 4]),
        (test("status", "contains", "omplete"), [1, 4]),
        (test("status", "starts_with", "c"), [1, 5]),
        (test("status", "ends_with", "ed"), [1, 4, 5]),
        (test("status", "matches", "^[Cc]omp"), [1, 4]),
        (test("status", "is_null"), [3]),
        (test("status", "is_not_null"), [1, 2, 4, 5]),
        (test("amount", "between", [20, 60]), [2, 3]),
        (test("status", "equals", None), [3]),
        (test("qty", "in", [1.5, 2]), [4]),
    ],
)
def test_operators(cond, expected):
    assert ids(cond) == expected


def test_composition():
    assert ids({"all": [test("amount", "gt", 5), test("qty", "lt", 4)]}) == [1, 3]
    assert ids({"any": [test("status", "equals", "pending"), test("qty", "is_null")]}) == [2, 5]
    assert ids({"not": test("status", "equals", "completed")}) == [2, 3, 4, 5]
    nested = {
        "all": [
            {"not": {"any": [test("id", "equals", 1), test("id", "equals", 2)]}},
            test("amount", "is_not_null"),
        ]
    }
    assert ids(nested) == [3, 5]
    assert ids({"all": []}) == [1, 2, 3, 4, 5]
    assert ids({"any": []}) == []


def test_null_never_matches_but_not_is_the_complement():
    assert 4 not in ids(test("amount", "lt", 1000))
    assert 4 not in ids(test("amount", "not_equals", 1))
    assert 4 in ids({"not": test("amount", "lt", 1000)})


def test_number_against_text_compares_numerically():
    # "10" > 9 numerically although "10" < "9" as text; "x" is not a number and does not match.
    assert ids(test("code", "gt", 9)) == [1, 5]
    assert ids(test("code", "equals", 9)) == [2]
    assert ids(test("code", "in", [10, 100])) == [1, 5]
    assert ids(test("code", "gt", "9")) == [3]  # text against text stays text


def test_dates_datetimes_and_booleans_take_iso_and_text_literals():
    assert ids(test("day", "gte", "2024-02-01")) == [2, 4]
    assert ids(test("day", "between", ["2024-01-01", "2024-01-31"])) == [1, 5]
    assert ids(test("at", "lt", "2024-01-01T10:00:00Z")) == [1, 5]
    assert ids(test("at", "gte", "2024-01-01T13:00:00+02:00")) == [3, 4]
    assert ids(test("at", "in", ["2024-01-02T00:00:00"])) == [4]
    assert ids(test("ok", "equals", "true")) == [1, 4]
    assert ids(test("ok", "equals", False)) == [2, 5]


def test_naive_datetime_column_compares_in_utc():
    frame = pl.DataFrame({"t": [datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 11)]})
    cond = Condition.model_validate(test("t", "gt", "2024-01-01T12:30:00+02:00"))
    assert frame.filter(compile_condition(cond, frame.schema))["t"].to_list() == [datetime(2024, 1, 1, 11)]


def test_list_contains_and_nested_paths():
    assert ids(test("tags", "contains", "b")) == [1, 4]
    assert ids(test("site.area", "equals", "north")) == [1, 5]


def test_field_paths():
    cond = Condition.model_validate({"all": [test("a", "is_null"), {"not": test("b.c", "equals", 1)}]})
    assert cond.field_paths() == ["a", "b.c"]


@pytest.mark.parametrize(
    ("cond", "param"),
    [
        (test("nope", "equals", 1), "condition.field"),
        ({"all": [test("id", "equals", 1), test("nope", "equals", 1)]}, "condition.all[1].field"),
        (test("amount", "gt", "lots"), "condition.value"),
        (test("day", "gt", "yesterday"), "condition.value"),
        ({"not": test("ok", "equals", "maybe")}, "condition.not.value"),
    ],
)
def test_schema_errors_name_the_path(cond, param):
    with pytest.raises(TransformError) as err:
        compile_condition(Condition.model_validate(cond), pl.Schema(FRAME.schema))
    assert err.value.param == param


@pytest.mark.parametrize(
    ("cond", "loc", "text"),
    [
        (test("a", "like", 1), ("operator",), "'equals'"),
        ({"field": "a"}, ("operator",), "operator is required"),
        (test("a", "in", 1), ("value",), "needs a list"),
        (test("a", "between", [1]), ("value",), "[low, high]"),
        (test("a", "is_null", 3), ("value",), "takes no value"),
        (test("a", "matches", "("), ("value",), "invalid regex"),
        (test("a", "gt", None), ("value",), "single value"),
        ({"all": [test("a", "equals", 1)], "any": []}, (), "exactly one"),
        (
            {"any": [{"field": "a", "operator": "equals", "value": 1, "extra": 2}]},
            ("any", 0, "extra"),
            "Extra",
        ),
    ],
)
def test_config_errors(cond, loc, text):
    with pytest.raises(ValidationError) as err:
        Condition.model_validate(cond)
    first = err.value.errors()[0]
    assert first["loc"] == loc
    assert text in first["msg"]


def test_json_schema_lists_operators():
    schema = Condition.model_json_schema()["$defs"]["Condition"]  # recursive, so it is a $ref
    operator = schema["properties"]["operator"]["anyOf"][0]
    assert "between" in operator["enum"] and "matches" in operator["enum"]
    assert "not" in schema["properties"]
