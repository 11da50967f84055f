"""join, lookup and union."""

from __future__ import annotations

import polars as pl
import pytest
from pydantic import ValidationError

from engine.context import NodeContext, RunContext
from engine.errors import TransformError
from engine.transforms import registry
from engine.transforms.catalog import build

ORDERS = pl.DataFrame(
    {"order_id": [1, 2, 3, 4], "customer_id": [10, 20, 10, 99], "total": [5.0, 7.5, 1.0, 3.0]}
)
CUSTOMERS = pl.DataFrame({"id": [20, 10, 30], "name": ["Bea", "Ada", "Cy"], "total": [100, 200, 300]})


def run(step: dict, *frames: pl.DataFrame) -> pl.DataFrame:
    outputs = build(step).apply([f.lazy() for f in frames], NodeContext(RunContext(), "n"))
    return outputs["out"].collect()


def join(join_type: str, **extra) -> dict:
    return {
        "type": "join",
        "join_type": join_type,
        "primary_key": "customer_id",
        "foreign_key": "id",
        **extra,
    }


def test_inner_join_keeps_primary_order_and_suffixes_clashes():
    out = run(join("inner"), ORDERS, CUSTOMERS)
    assert out.columns == ["order_id", "customer_id", "total", "name", "total_right"]
    assert out.rows() == [(1, 10, 5.0, "Ada", 200), (2, 20, 7.5, "Bea", 100), (3, 10, 1.0, "Ada", 200)]


def test_left_join_keeps_unmatched_primary_records():
    out = run(join("left", included_fields=["name"]), ORDERS, CUSTOMERS)
    assert out.columns == ["order_id", "customer_id", "total", "name"]
    assert out["name"].to_list() == ["Ada", "Bea", "Ada", None]


def test_right_and_full_joins_fill_the_primary_key_from_the_other_side():
    right = run(join("right", included_fields=["name"]), ORDERS, CUSTOMERS)
    assert sorted(right.select("customer_id", "name").rows()) == [
        (10, "Ada"),
        (10, "Ada"),
        (20, "Bea"),
        (30, "Cy"),
    ]
    full = run(join("full", included_fields=["name"]), ORDERS, CUSTOMERS)
    assert sorted(full.select("customer_id", "order_id").rows(), key=str) == sorted(
        [(10, 1), (20, 2), (10, 3), (99, 4), (30, None)], key=str
    )


def test_semi_and_anti_joins_bring_no_fields():
    assert run(join("semi"), ORDERS, CUSTOMERS).rows() == [(1, 10, 5.0), (2, 20, 7.5), (3, 10, 1.0)]
    assert run(join("anti"), ORDERS, CUSTOMERS).rows() == [(4, 99, 3.0)]


def test_composite_keys_and_nested_primary_key():
    left = pl.DataFrame({"k": [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}], "v": [1, 2]})
    right = pl.DataFrame({"a": [1, 1], "b": ["y", "z"], "w": ["found", "other"]})
    step = {"type": "join", "join_type": "left", "primary_key": ["k.a", "k.b"], "foreign_key": ["a", "b"]}
    assert run(step, left, right)["w"].to_list() == [None, "found"]


def test_null_keys_never_match():
    left = pl.DataFrame({"k": [None, 1]}, schema={"k": pl.Int64})
    right = pl.DataFrame({"k": [None, 1], "w": ["null", "one"]}, schema={"k": pl.Int64, "w": pl.String})
    step = {"type": "join", "join_type": "inner", "primary_key": "k", "foreign_key": "k"}
    assert run(step, left, right).rows() == [(1, "one")]


def test_join_errors():
    with pytest.raises(TransformError) as err:
        run(join("inner"), ORDERS.clear(), CUSTOMERS.clear().with_columns(pl.col("id").cast(pl.String)))
    assert err.value.param == "foreign_key"
    with pytest.raises(TransformError) as err:
        run(join("inner", included_fields=["nope"]), ORDERS, CUSTOMERS)
    assert err.value.param == "included_fields"
    with pytest.raises(TransformError) as err:
        run({**join("inner"), "primary_key": "nope"}, ORDERS, CUSTOMERS)
    assert err.value.param == "primary_key"
    with pytest.raises(ValidationError):
        build({**join("inner"), "foreign_key": ["a", "b"]})
    with pytest.raises(ValidationError):
        build({**join("outer")})


def test_join_contract():
    cls = registry.get("join")
    node = build({**join("left"), "join_source": "customers"})
    assert (cls.min_inputs, cls.max_inputs) == (2, 2)
    assert cls.side_sources(node.config) == ["customers"]
    assert cls.side_sources(build(join("left")).config) == []
    assert node.streaming is False


# ---- lookup --------------------------------------------------------------------------------------

CODES = pl.DataFrame({"code": ["A", "B", "Z", None], "n": [1, 2, 3, None]})


def test_lookup_table_in_place_keeps_unknown_values():
    out = run({"type": "lookup", "field_name": "code", "table": {"A": "Alpha", "B": "Beta"}}, CODES)
    assert out["code"].to_list() == ["Alpha", "Beta", "Z", None]


def test_lookup_table_to_output_field_with_default_and_integer_keys():
    step = {"type": "lookup", "field_name": "n", "table": {"1": "one", "2": "two"}, "output_field": "word"}
    assert run(step, CODES)["word"].to_list() == ["one", "two", None, None]
    assert run({**step, "default": "?"}, CODES)["word"].to_list() == ["one", "two", "?", "?"]
    in_place = run({"type": "lookup", "field_name": "n", "table": {"1": "one"}}, CODES)
    assert in_place["n"].to_list() == ["one", "2", "3", None]


def test_lookup_from_a_second_input_takes_the_first_match_and_never_multiplies_rows():
    table = pl.DataFrame({"key": ["A", "B", "A"], "label": ["first A", "Beta", "second A"]})
    step = {
        "type": "lookup",
        "field_name": "code",
        "key_field": "key",
        "value_field": "label",
        "output_field": "label",
    }
    out = run(step, CODES, table)
    assert out.height == CODES.height
    assert out["label"].to_list() == ["first A", "Beta", None, None]
    assert out.columns == ["code", "n", "label"]
    node = build({**step, "lookup_source": "labels"})
    assert node.streaming is False and registry.get("lookup").side_sources(node.config) == ["labels"]
    assert build({"type": "lookup", "field_name": "c", "table": {"a": 1}}).streaming is True


def test_lookup_errors():
    with pytest.raises(ValidationError) as err:
        build({"type": "lookup", "field_name": "code"})
    assert err.value.errors()[0]["loc"] == ("key_field",)
    with pytest.raises(ValidationError):
        build(
            {"type": "lookup", "field_name": "code", "table": {"a": 1}, "key_field": "k", "value_field": "v"}
        )
    with pytest.raises(TransformError) as err:
        run({"type": "lookup", "field_name": "n", "table": {"one": 1}}, CODES)
    assert err.value.param == "table"
    with pytest.raises(TransformError, match="one type"):
        run({"type": "lookup", "field_name": "code", "table": {"A": "x", "B": 2}}, CODES)
    step = {"type": "lookup", "field_name": "code", "key_field": "key", "value_field": "nope"}
    with pytest.raises(TransformError) as err:
        run(step, CODES, pl.DataFrame({"key": ["A"]}))
    assert err.value.param == "value_field"


# ---- union ---------------------------------------------------------------------------------------


def test_union_matches_columns_by_name_and_fills_missing_with_null():
    a = pl.DataFrame({"id": [1], "x": ["a"]})
    b = pl.DataFrame({"y": [2.5], "id": [2]})
    c = pl.DataFrame({"id": [3.5]})
    out = run({"type": "union"}, a, b, c)
    assert out.columns == ["id", "x", "y"]
    assert out.rows() == [(1.0, "a", None), (2.0, None, 2.5), (3.5, None, None)]


def test_union_contract():
    cls = registry.get("union")
    assert (cls.min_inputs, cls.max_inputs) == (2, None)
    assert cls.side_sources(build({"type": "union", "sources": ["b", "c"]}).config) == ["b", "c"]
    with pytest.raises(ValidationError):
        build({"type": "union", "sources": ["b", "b"]})
    with pytest.raises(TransformError):
        run({"type": "union"}, pl.DataFrame({"a": [1]}))
