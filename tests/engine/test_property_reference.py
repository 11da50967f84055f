"""Property tests: the columnar engine agrees with the per-record reference on random data."""

from __future__ import annotations

import math
from typing import Any

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.context import NodeContext, RunContext
from engine.transforms.catalog import build
from tests.engine import reference

SCHEMA = {"i": pl.Int64, "j": pl.Int64, "f": pl.Float64, "s": pl.String, "k": pl.String}
TYPES = {"i": "int", "j": "int", "f": "float", "s": "str", "k": "str"}
TEXT_ALPHABET = "ab AB01.-"
PROPERTY = settings(max_examples=80, deadline=None)


def no_negative_zero(x: float) -> float:
    return x + 0.0  # -0.0 + 0.0 == 0.0: hash-based membership would otherwise tell them apart


ints = st.integers(-1000, 1000)
floats = st.floats(-1000, 1000, allow_nan=False, allow_infinity=False).map(no_negative_zero)
texts = st.text(TEXT_ALPHABET, max_size=5)
records = st.lists(
    st.fixed_dictionaries(
        {
            "i": st.none() | ints,
            "j": st.none() | ints,
            "f": st.none() | floats,
            "s": st.none() | texts,
            "k": st.sampled_from(["x", "y", "z", None]),
        }
    ),
    max_size=30,
)


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA)


def run(step: dict, *frames: pl.DataFrame) -> pl.DataFrame:
    outputs = build(step).apply([f.lazy() for f in frames], NodeContext(RunContext(), "n"))
    return outputs["out"].collect()


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


# ---- conditions ----------------------------------------------------------------------------------

ORDERED = ["equals", "not_equals", "gt", "gte", "lt", "lte"]


def number_leaf(field: str, values: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.builds(
            lambda op, v: {"field": field, "operator": op, "value": v}, st.sampled_from(ORDERED), values
        ),
        st.builds(
            lambda op, vs: {"field": field, "operator": op, "value": vs},
            st.sampled_from(["in", "not_in"]),
            st.lists(values, max_size=4),
        ),
        st.builds(lambda lo, hi: {"field": field, "operator": "between", "value": [lo, hi]}, values, values),
        st.builds(lambda op: {"field": field, "operator": op}, st.sampled_from(["is_null", "is_not_null"])),
    )


small_ints = st.integers(-5, 5)
text_leaf = st.one_of(
    number_leaf("s", texts),
    number_leaf("s", small_ints | st.floats(-5, 5).map(no_negative_zero)),  # numbers against text
    st.builds(
        lambda op, v: {"field": "s", "operator": op, "value": v},
        st.sampled_from(["contains", "starts_with", "ends_with"]),
        texts,
    ),
    st.builds(
        lambda v: {"field": "s", "operator": "matches", "value": v},
        st.sampled_from(["^a", "b$", "[0-9]", "a.b", "^$", "A|B"]),
    ),
)
leaf = st.one_of(
    number_leaf("i", small_ints),
    number_leaf("f", st.floats(-5, 5).map(no_negative_zero) | small_ints),
    text_leaf,
)
conditions = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.builds(lambda cs: {"all": cs}, st.lists(children, max_size=3)),
        st.builds(lambda cs: {"any": cs}, st.lists(children, max_size=3)),
        st.builds(lambda c: {"not": c}, children),
    ),
    max_leaves=6,
)


@PROPERTY
@given(rows=records, cond=conditions)
def test_filter_matches_reference(rows, cond):
    engine = run({"type": "record_filter", "condition": cond}, frame(rows)).to_dicts()
    assert engine == reference.record_filter(rows, cond, TYPES)


# ---- field_calculation ---------------------------------------------------------------------------


@PROPERTY
@given(
    rows=records,
    operation=st.sampled_from(["multiply", "add", "subtract", "divide"]),
    fields=st.lists(st.sampled_from(["i", "j", "f"]), min_size=2, max_size=3),
)
def test_arithmetic_matches_reference(rows, operation, fields):
    step = {
        "type": "field_calculation",
        "field_name": "out",
        "operation": operation,
        "parameters": {"source_fields": fields},
    }
    engine = run(step, frame(rows))["out"].to_list()
    expected = [reference.calculate(r, operation, fields) for r in rows]
    assert all(same(a, b) for a, b in zip(engine, expected, strict=True)), (engine, expected)


expression_leaves = (
    st.sampled_from(["i", "j", "f"]) | st.integers(0, 5).map(str) | st.sampled_from(["0.5", "2.25"])
)
expressions = st.recursive(
    expression_leaves,
    lambda inner: st.one_of(
        st.builds(
            lambda a, op, b: f"({a} {op} {b})", inner, st.sampled_from(["+", "-", "*", "/", "//", "%"]), inner
        ),
        st.builds(lambda a: f"-({a})", inner),
    ),
    max_leaves=6,
)


@PROPERTY
@given(rows=records, expression=expressions)
def test_expression_matches_reference(rows, expression):
    step = {
        "type": "field_calculation",
        "field_name": "out",
        "operation": "expression",
        "parameters": {"expression": expression},
    }
    engine = run(step, frame(rows))["out"].to_list()
    expected = [reference.evaluate(r, expression) for r in rows]
    assert all(same(a, b) for a, b in zip(engine, expected, strict=True)), (expression, engine, expected)


# ---- string operations ---------------------------------------------------------------------------

words = st.none() | st.text("abcXYZ éÉß-' \t\n019", max_size=12)


@PROPERTY
@given(
    values=st.lists(words, max_size=20),
    operation=st.sampled_from(["title_case", "lowercase", "uppercase", "trim"]),
)
def test_string_operations_match_reference(values, operation):
    data = pl.DataFrame({"s": values}, schema={"s": pl.String})
    engine = run({"type": "field_mapping", "field_name": "s", "operation": operation}, data)["s"].to_list()
    assert engine == [reference.string_operation(v, operation) for v in values]


# ---- aggregation ---------------------------------------------------------------------------------


@PROPERTY
@given(rows=records, field=st.sampled_from(["i", "f"]))
def test_aggregation_matches_reference(rows, field):
    operations = ["sum", "count", "min", "max", "average"]
    step = {
        "type": "aggregation",
        "group_by_fields": ["k"],
        "aggregated_fields": [
            {"input_field": field, "operation": op, "output_field": op} for op in operations
        ],
    }
    engine = run(step, frame(rows)).to_dicts()
    expected = reference.aggregate(rows, "k", field)
    assert [r["k"] for r in engine] == [r["k"] for r in expected]
    for got, want in zip(engine, expected, strict=True):
        assert all(same(got[op], want[op]) for op in operations), (got, want)


# ---- join ----------------------------------------------------------------------------------------

keys = st.none() | st.integers(0, 4)
left_rows = st.lists(st.fixed_dictionaries({"key": keys, "v": ints}), max_size=12)
right_rows = st.lists(st.fixed_dictionaries({"id": keys, "v": texts, "w": ints}), max_size=12)


def canonical(rows: list[dict]) -> list[str]:
    return sorted(repr(sorted(r.items())) for r in rows)


@PROPERTY
@given(left=left_rows, right=right_rows, how=st.sampled_from(["inner", "left"]))
def test_join_matches_reference(left, right, how):
    left_frame = pl.DataFrame(left, schema={"key": pl.Int64, "v": pl.Int64})
    right_frame = pl.DataFrame(right, schema={"id": pl.Int64, "v": pl.String, "w": pl.Int64})
    step = {"type": "join", "join_type": how, "primary_key": "key", "foreign_key": "id"}
    engine = run(step, left_frame, right_frame)
    columns = (left_frame.columns, right_frame.columns)
    expected = reference.join(left, right, "key", "id", how, columns)
    assert engine.columns == ["key", "v", "v_right", "w"]
    assert canonical(engine.to_dicts()) == canonical(expected)
