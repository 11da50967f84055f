"""aggregation, sort, deduplicate, explode, record_filter and split."""

from __future__ import annotations

import math

import polars as pl
import pytest
from pydantic import ValidationError

from engine.context import NodeContext, RunContext
from engine.errors import TransformError
from engine.transforms.catalog import build


def run_ports(step: dict, frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    outputs = build(step).apply([frame.lazy()], NodeContext(RunContext(), "n"))
    return {port: lf.collect() for port, lf in outputs.items()}


def run(step: dict, frame: pl.DataFrame) -> pl.DataFrame:
    return run_ports(step, frame)["out"]


SALES = pl.DataFrame(
    {
        "region": ["north", "south", "north", None, "south", "north"],
        "site": [{"area": "a"}, {"area": "b"}, {"area": "a"}, {"area": "c"}, {"area": "b"}, {"area": "z"}],
        "amount": [10.0, 5.0, None, 1.0, 7.0, 4.0],
        "customer": ["x", "y", "x", "z", None, "w"],
    }
)


def agg(*specs: tuple[str | None, str, str | None], by: list[str] | None = None, **extra) -> dict:
    fields = [
        {k: v for k, v in {"input_field": i, "operation": op, "output_field": o}.items() if v is not None}
        for i, op, o in specs
    ]
    return {"type": "aggregation", "group_by_fields": by or [], "aggregated_fields": fields, **extra}


def test_aggregation_every_operation_sorted_by_group_with_nulls_last():
    step = agg(
        ("amount", "sum", None),
        ("amount", "average", "avg"),
        ("amount", "count", "n"),
        ("customer", "count_distinct", "customers"),
        ("amount", "min", None),
        ("amount", "max", None),
        ("customer", "first", "first_customer"),
        ("customer", "last", "last_customer"),
        ("amount", "median", None),
        ("amount", "std", None),
        by=["region"],
    )
    out = run(step, SALES)
    assert out["region"].to_list() == ["north", "south", None]
    north = out.row(0, named=True)
    assert north["amount_sum"] == 14.0 and north["avg"] == 7.0 and north["n"] == 2
    assert north["customers"] == 2 and north["amount_min"] == 4.0 and north["amount_max"] == 10.0
    assert north["first_customer"] == "x" and north["last_customer"] == "w"
    assert north["amount_median"] == 7.0
    assert math.isclose(north["amount_std"], math.sqrt(18))
    south = out.row(1, named=True)
    assert south["customers"] == 1 and south["last_customer"] is None


def test_aggregation_without_groups_and_count_of_records():
    out = run(agg(("amount", "sum", "total"), (None, "count", "records")), SALES)
    assert out.rows() == [(27.0, 6)]
    empty = run(agg(("amount", "sum", "total"), (None, "count", "records")), SALES.clear())
    assert empty.rows() == [(0.0, 0)]


def test_aggregation_by_nested_path_and_details():
    out = run(agg(("amount", "sum", "total"), by=["site.area"]), SALES)
    assert out.columns == ["site.area", "total"]
    assert out.rows() == [("a", 10.0), ("b", 12.0), ("c", 1.0), ("z", 4.0)]
    details = run(agg(("amount", "sum", "region_total"), by=["region"], include_details=True), SALES)
    assert details.height == SALES.height
    assert details["region_total"].to_list() == [14.0, 12.0, 14.0, 1.0, 12.0, 14.0]


def test_aggregation_errors():
    with pytest.raises(TransformError) as err:
        run(agg(("customer", "sum", None), by=["region"]), SALES.clear())
    assert err.value.param == "aggregated_fields[0].input_field"
    with pytest.raises(TransformError) as err:
        run(agg(("amount", "sum", None), by=["nope"]), SALES)
    assert err.value.param == "group_by_fields"
    with pytest.raises(ValidationError) as err:
        build(agg((None, "sum", "x")))
    assert err.value.errors()[0]["loc"] == ("aggregated_fields", 0, "input_field")
    with pytest.raises(ValidationError) as err:
        build(agg(("a", "mode", None)))
    assert "'count_distinct'" in err.value.errors()[0]["msg"]
    assert build(agg(("amount", "sum", None))).streaming is False


# ---- sort ----------------------------------------------------------------------------------------


def test_sort_nulls_last_both_directions_and_per_field_flags():
    step = {"type": "sort", "fields": ["amount"]}
    assert run(step, SALES)["amount"].to_list() == [1.0, 4.0, 5.0, 7.0, 10.0, None]
    assert run({**step, "descending": True}, SALES)["amount"].to_list() == [10.0, 7.0, 5.0, 4.0, 1.0, None]
    two = run({"type": "sort", "fields": ["region", "amount"], "descending": [False, True]}, SALES)
    assert two.select("region", "amount").rows() == [
        ("north", 10.0),
        ("north", 4.0),
        ("north", None),
        ("south", 7.0),
        ("south", 5.0),
        (None, 1.0),
    ]


def test_sort_is_stable_and_takes_nested_paths():
    out = run({"type": "sort", "fields": ["site.area"]}, SALES)
    assert out["customer"].to_list() == ["x", "x", "y", None, "z", "w"]


def test_sort_errors():
    with pytest.raises(ValidationError):
        build({"type": "sort", "fields": ["a", "b"], "descending": [True]})
    with pytest.raises(TransformError):
        run({"type": "sort", "fields": ["nope"]}, SALES)


# ---- deduplicate ---------------------------------------------------------------------------------

PEOPLE = pl.DataFrame(
    {
        "id": [1, 2, 3, 4, 5, 6],
        "name": ["Acme Corp", "ACME corp.", "Widget Ltd", "Acme Corp", "Acme Corporation", None],
        "city": ["Paris", "Paris", "Lyon", "Lyon", "Paris", "Paris"],
    }
)


def test_exact_dedup_keep_first_and_last_in_input_order():
    step = {"type": "deduplicate", "fields": ["name"]}
    assert run(step, PEOPLE)["id"].to_list() == [1, 2, 3, 5, 6]
    assert run({**step, "keep": "last"}, PEOPLE)["id"].to_list() == [2, 3, 4, 5, 6]
    assert run({"type": "deduplicate"}, pl.concat([PEOPLE, PEOPLE]))["id"].to_list() == [1, 2, 3, 4, 5, 6]


def test_fuzzy_dedup_within_equal_exact_fields():
    step = {"type": "deduplicate", "fields": ["name", "city"], "fuzzy": {"field": "name", "threshold": 0.9}}
    # "ACME corp." is ~0.95 similar to "Acme Corp" in Paris; Lyon's "Acme Corp" is another city.
    assert run(step, PEOPLE)["id"].to_list() == [1, 3, 4, 5, 6]
    assert run({**step, "keep": "last"}, PEOPLE)["id"].to_list() == [2, 3, 4, 5, 6]
    loose = {**step, "fuzzy": {"field": "name", "threshold": 0.7}}
    assert run(loose, PEOPLE)["id"].to_list() == [1, 3, 4, 6]
    assert build(step).streaming is False


def test_fuzzy_dedup_errors():
    with pytest.raises(TransformError) as err:
        run({"type": "deduplicate", "fuzzy": {"field": "id"}}, PEOPLE)
    assert err.value.param == "fuzzy.field"
    with pytest.raises(ValidationError):
        build({"type": "deduplicate", "fuzzy": {"field": "name", "threshold": 1.5}})


# ---- explode -------------------------------------------------------------------------------------


def test_explode_keeps_empty_and_null_lists_as_one_row():
    frame = pl.DataFrame({"id": [1, 2, 3], "tags": [["a", "b"], [], None]})
    out = run({"type": "explode", "field_name": "tags"}, frame)
    assert out.rows() == [(1, "a"), (1, "b"), (2, None), (3, None)]


def test_explode_nested_list_and_errors():
    frame = pl.DataFrame({"id": [1], "m": [{"xs": [1, 2], "k": "v"}]})
    out = run({"type": "explode", "field_name": "m.xs"}, frame)
    assert out["m"].to_list() == [{"xs": 1, "k": "v"}, {"xs": 2, "k": "v"}]
    with pytest.raises(TransformError) as err:
        run({"type": "explode", "field_name": "id"}, frame)
    assert err.value.param == "field_name"


# ---- record_filter and split ---------------------------------------------------------------------


def test_record_filter():
    step = {"type": "record_filter", "condition": {"field": "region", "operator": "equals", "value": "north"}}
    assert run(step, SALES)["amount"].to_list() == [10.0, None, 4.0]
    with pytest.raises(TransformError) as err:
        run({"type": "record_filter", "condition": {"field": "x", "operator": "is_null"}}, SALES)
    assert err.value.param == "condition.field"


def test_split_sends_each_record_to_the_first_matching_branch_or_default():
    step = {
        "type": "split",
        "branches": [
            {"name": "big", "condition": {"field": "amount", "operator": "gte", "value": 7}},
            {"name": "north", "condition": {"field": "region", "operator": "equals", "value": "north"}},
        ],
    }
    node = build(step)
    assert node.output_ports() == ["big", "north", "default"]
    ports = run_ports(step, SALES)
    assert ports["big"]["amount"].to_list() == [10.0, 7.0]
    assert ports["north"]["amount"].to_list() == [None, 4.0]
    assert ports["default"]["amount"].to_list() == [5.0, 1.0]
    assert sum(f.height for f in ports.values()) == SALES.height


def test_split_config_errors():
    cond = {"field": "a", "operator": "is_null"}
    with pytest.raises(ValidationError) as err:
        build(
            {
                "type": "split",
                "branches": [{"name": "a", "condition": cond}, {"name": "a", "condition": cond}],
            }
        )
    assert "used twice" in err.value.errors()[0]["msg"]
    with pytest.raises(ValidationError) as err:
        build({"type": "split", "branches": [{"name": "default", "condition": cond}]})
    assert "reserved" in err.value.errors()[0]["msg"]
    with pytest.raises(TransformError) as err:
        run(
            {
                "type": "split",
                "branches": [{"name": "a", "condition": {"field": "q", "operator": "is_null"}}],
            },
            SALES,
        )
    assert err.value.param == "branches[0].condition.field"
