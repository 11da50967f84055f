"""conditional: nested steps, rejects, properties and error locations."""

from __future__ import annotations

import polars as pl
import pytest
from pydantic import ValidationError

from engine.context import NodeContext, RunContext
from engine.errors import TransformError
from engine.transforms.base import REJECT_REASON
from engine.transforms.catalog import build

FRAME = pl.DataFrame(
    {
        "id": [1, 2, 3, 4],
        "country": ["FR", "US", "FR", None],
        "price": [10.0, 20.0, 30.0, 40.0],
        "email": ["a@b.fr", "bad", "oops", "c@d.com"],
    }
)
IS_FR = {"field": "country", "operator": "equals", "value": "FR"}
VAT = {
    "type": "field_calculation",
    "field_name": "gross",
    "operation": "expression",
    "parameters": {"expression": "price * 1.2"},
}
CHECK_EMAIL = {"type": "field_validation", "field_name": "email", "validation_type": "email_format"}


def run(step: dict, frame: pl.DataFrame = FRAME) -> dict[str, pl.DataFrame]:
    outputs = build(step).apply([frame.lazy()], NodeContext(RunContext(), "n"))
    return {port: lf.collect() for port, lf in outputs.items()}


def test_then_and_else_steps_apply_to_their_records_and_combine_by_name():
    step = {
        "type": "conditional",
        "condition": IS_FR,
        "then": [VAT],
        "else": [{"type": "field_addition", "field_name": "gross", "value": 0.0}],
    }
    out = run(step)["out"].sort("id")
    assert out["gross"].to_list() == pytest.approx([12.0, 0.0, 36.0, 0.0])  # null country is "else"


def test_steps_run_in_order_and_empty_else_passes_records_through():
    upper = {"type": "field_mapping", "field_name": "country", "operation": "lowercase"}
    step = {"type": "conditional", "condition": IS_FR, "then": [upper, {**VAT, "field_name": "g"}]}
    out = run(step)["out"].sort("id")
    assert out["country"].to_list() == ["fr", "US", "fr", None]
    assert out["g"].to_list() == pytest.approx([12.0, None, 36.0, None])


def test_nested_rejects_go_to_the_rejected_port():
    step = {"type": "conditional", "condition": IS_FR, "then": [CHECK_EMAIL]}
    node = build(step)
    assert node.output_ports() == ["out", "rejected"]
    result = run(step)
    assert sorted(result["out"]["id"].to_list()) == [1, 2, 4]
    assert result["rejected"]["id"].to_list() == [3]
    assert result["rejected"][REJECT_REASON].to_list() == ["email: not a valid email address"]


def test_properties_follow_the_nested_steps():
    plain = build({"type": "conditional", "condition": IS_FR, "then": [VAT]})
    assert plain.output_ports() == ["out"] and plain.streaming is True and plain.fails_on_reject is False
    failing = build(
        {"type": "conditional", "condition": IS_FR, "else": [{**CHECK_EMAIL, "on_failure": "fail"}]}
    )
    assert failing.fails_on_reject is True
    blocking = build(
        {"type": "conditional", "condition": IS_FR, "then": [{"type": "sort", "fields": ["id"]}]}
    )
    assert blocking.streaming is False


def test_empty_rejected_port_has_the_reject_column():
    result = run(
        {
            "type": "conditional",
            "condition": {"field": "id", "operator": "gt", "value": 100},
            "then": [CHECK_EMAIL],
        }
    )
    assert result["rejected"].height == 0 and REJECT_REASON in result["rejected"].columns


def test_nested_schema_errors_name_the_step():
    step = {"type": "conditional", "condition": IS_FR, "else": [VAT, {**CHECK_EMAIL, "field_name": "nope"}]}
    with pytest.raises(TransformError) as err:
        run(step)
    assert err.value.param == "else[1].field_name"
    bad_type = {**VAT, "parameters": {"expression": "email * 2"}}
    with pytest.raises(TransformError) as err:
        run({"type": "conditional", "condition": IS_FR, "then": [bad_type]}, FRAME.clear())
    assert err.value.param == "then[0].parameters.expression"


@pytest.mark.parametrize(
    ("steps", "loc", "fragment"),
    [
        (
            {"then": [{"type": "field_mapping", "field_name": "a", "operation": "round"}]},
            ("then", 0, "parameters", "digits"),
            "needs",
        ),
        ({"else": [VAT, {"type": "nope"}]}, ("else", 1, "type"), "unknown or missing step type"),
        ({"then": [{"field_name": "a"}]}, ("then", 0, "type"), "allowed:"),
        (
            {"then": [{"type": "join", "primary_key": "a", "foreign_key": "b"}]},
            ("then", 0, "type"),
            "cannot be nested",
        ),
        (
            {"then": [{"type": "split", "branches": [{"name": "x", "condition": IS_FR}]}]},
            ("then", 0, "type"),
            "cannot be nested",
        ),
        (
            {"then": [{"type": "lookup", "field_name": "a", "key_field": "k", "value_field": "v"}]},
            ("then", 0, "type"),
            "cannot be nested",
        ),
        (
            {"then": [{"type": "conditional", "condition": IS_FR, "then": [{"type": "sort"}]}]},
            ("then", 0, "then", 0, "fields"),
            "required",
        ),
    ],
)
def test_config_errors_carry_the_step_location(steps, loc, fragment):
    with pytest.raises(ValidationError) as err:
        build({"type": "conditional", "condition": IS_FR, **steps})
    first = err.value.errors()[0]
    assert first["loc"] == loc
    assert fragment in first["msg"]


def test_nested_conditional_and_lookup_table_are_allowed():
    inner = {
        "type": "conditional",
        "condition": {"field": "price", "operator": "gt", "value": 15},
        "then": [VAT],
    }
    lookup = {"type": "lookup", "field_name": "country", "table": {"FR": "France"}}
    out = run({"type": "conditional", "condition": IS_FR, "then": [inner, lookup]})["out"].sort("id")
    assert out["gross"].to_list() == pytest.approx([None, None, 36.0, None])
    assert out["country"].to_list() == ["France", "US", "France", None]
