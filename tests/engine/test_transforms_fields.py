"""field_mapping, schema_mapping, field_calculation, field_addition and field_removal."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import polars as pl
import pytest
from pydantic import ValidationError

from engine.context import NodeContext, RunContext
from engine.errors import TransformError
from engine.transforms.catalog import build


def run(config: dict, frame: pl.DataFrame, ctx: NodeContext | None = None) -> pl.DataFrame:
    outputs = build(config, "n").apply([frame.lazy()], ctx or NodeContext(RunContext(), "n"))
    return outputs["out"].collect()


def mapping(field: str, operation: str, **parameters) -> dict:
    step = {"type": "field_mapping", "field_name": field, "operation": operation}
    return {**step, "parameters": parameters} if parameters else step


# ---- field_mapping -------------------------------------------------------------------------------

TEXT = pl.DataFrame({"name": ["  hello WORLD ", None, "élan vital"]})


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("title_case", ["  Hello World ", None, "Élan Vital"]),
        ("lowercase", ["  hello world ", None, "élan vital"]),
        ("uppercase", ["  HELLO WORLD ", None, "ÉLAN VITAL"]),
        ("trim", ["hello WORLD", None, "élan vital"]),
    ],
)
def test_text_operations(operation, expected):
    assert run(mapping("name", operation), TEXT)["name"].to_list() == expected


def test_alias_field_operation_is_the_same_type():
    out = run({"type": "field_operation", "field_name": "name", "operation": "trim"}, TEXT)
    assert out["name"][0] == "hello WORLD"


def test_format_rewrites_with_groups():
    frame = pl.DataFrame({"phone": ["5551234567", "12", None]})
    step = mapping("phone", "format", regex=r"^(\d{3})(\d{3})(\d{4})$", pattern="($1) $2-$3")
    assert run(step, frame)["phone"].to_list() == ["(555) 123-4567", "12", None]


def test_format_group_followed_by_letters():
    frame = pl.DataFrame({"code": ["ab12"]})
    step = mapping("code", "format", regex=r"([a-z]+)(\d+)", pattern="$2x$1")
    assert run(step, frame)["code"].to_list() == ["12xab"]


def test_replace_literal_and_regex():
    frame = pl.DataFrame({"s": ["a.b.c", "x"]})
    assert run(mapping("s", "replace", old=".", new="-"), frame)["s"].to_list() == ["a-b-c", "x"]
    regex = mapping("s", "replace", old=r"(\w)\.(\w)", new="$2$1", regex=True)
    assert run(regex, frame)["s"].to_list() == ["ba.c", "x"]


@pytest.mark.parametrize(
    ("values", "to", "expected"),
    [
        (["1", " 2 ", "3.0", "3.5", "x", None], "int", [1, 2, 3, None, None, None]),
        (["1.5", "2", "abc", None], "float", [1.5, 2.0, None, None]),
        ([1, 2, None], "string", ["1", "2", None]),
        (["true", "No", "1", "off", "maybe", None], "bool", [True, False, True, False, None, None]),
        ([0, 1, 3, None], "bool", [False, True, None, None]),  # 3 is neither (the one cast's rule)
        (
            ["2024-03-01", "2024-03-01T10:00:00Z", "bad", None],
            "date",
            [date(2024, 3, 1), date(2024, 3, 1), None, None],
        ),
        ([1.9, -2.0, 3.0], "int", [None, -2, 3]),  # a float is an int when it is whole, as text is
    ],
)
def test_cast(values, to, expected):
    frame = pl.DataFrame({"v": values})
    assert run(mapping("v", "cast", to=to), frame)["v"].to_list() == expected


def test_cast_datetime_accepts_iso_with_and_without_offset():
    frame = pl.DataFrame(
        {"t": ["2024-01-05T10:00:00Z", "2024-01-05T12:00:00+02:00", "2024-01-05 10:00:00", "no"]}
    )
    out = run(mapping("t", "cast", to="datetime"), frame)
    instant = datetime(2024, 1, 5, 10, tzinfo=UTC)
    assert out["t"].dtype == pl.Datetime("us", "UTC")
    assert out["t"].to_list() == [instant, instant, instant, None]


def test_cast_datetime_to_string_is_iso_utc():
    frame = pl.DataFrame({"t": [datetime(2024, 1, 5, 10, 30)]})
    assert run(mapping("t", "cast", to="string"), frame)["t"].to_list() == ["2024-01-05T10:30:00Z"]


def test_cast_number_to_date_is_refused():
    with pytest.raises(TransformError) as err:
        run(mapping("v", "cast", to="date"), pl.DataFrame({"v": [1]}))
    assert err.value.param == "parameters.to"


def test_round_half_away_from_zero_and_ints_unchanged():
    frame = pl.DataFrame({"x": [2.5, -2.5, 1.234, None], "n": [1, 2, 3, 4]})
    assert run(mapping("x", "round", digits=0), frame)["x"].to_list() == [3.0, -3.0, 1.0, None]
    assert run(mapping("x", "round", digits=2), frame)["x"].to_list() == [2.5, -2.5, 1.23, None]
    assert run(mapping("n", "round", digits=1), frame)["n"].to_list() == [1, 2, 3, 4]


def test_default_fills_nulls_with_the_column_type():
    frame = pl.DataFrame({"n": [1, None], "s": [None, "a"], "d": [None, date(2024, 1, 1)]})
    assert run(mapping("n", "default", value=0), frame)["n"].to_list() == [1, 0]
    assert run(mapping("s", "default", value="unknown"), frame)["s"].to_list() == ["unknown", "a"]
    assert run(mapping("d", "default", value="2000-01-01"), frame)["d"].to_list() == [
        date(2000, 1, 1),
        date(2024, 1, 1),
    ]
    with pytest.raises(TransformError, match="does not fit"):
        run(mapping("n", "default", value="zero"), frame)


def test_nested_struct_path_is_changed_in_place():
    frame = pl.DataFrame({"address": [{"city": "paris", "zip": "75001"}, {"city": None, "zip": "1"}]})
    out = run(mapping("address.city", "uppercase"), frame)
    assert out["address"].to_list() == [{"city": "PARIS", "zip": "75001"}, {"city": None, "zip": "1"}]


def test_flattened_dotted_column_wins_over_struct_walk():
    frame = pl.DataFrame({"address.city": ["lyon"]})
    assert run(mapping("address.city", "title_case"), frame)["address.city"].to_list() == ["Lyon"]


def test_missing_field_names_the_parameter_and_columns():
    with pytest.raises(TransformError) as err:
        run(mapping("nope", "trim"), TEXT)
    assert err.value.param == "field_name"
    assert "nope" in str(err.value) and "name" in str(err.value)


@pytest.mark.parametrize(
    ("field", "operation", "params"), [("n", "uppercase", {}), ("s", "round", {"digits": 1})]
)
def test_wrong_column_type_is_a_transform_error_on_an_empty_frame(field, operation, params):
    empty = pl.DataFrame(schema={"n": pl.Int64, "s": pl.String})
    with pytest.raises(TransformError) as err:
        run(mapping(field, operation, **params), empty)
    assert err.value.param == "field_name"


@pytest.mark.parametrize(
    ("step", "loc", "text"),
    [
        (mapping("a", "round"), ("parameters", "digits"), "operation 'round' needs parameters.digits"),
        (mapping("a", "format", regex="("), ("parameters", "pattern"), "needs parameters.pattern"),
        (mapping("a", "format", regex="(", pattern="x"), ("parameters", "regex"), "invalid regex"),
        (mapping("a", "cast", to="decimal"), ("parameters", "to"), "'int', 'float', 'string'"),
        (mapping("a", "trim", digits=1), ("parameters", "digits"), "does not take"),
        (
            {"type": "field_mapping", "field_name": "a", "operation": "explode"},
            ("operation",),
            "'title_case'",
        ),
        ({"type": "field_mapping", "field_name": "a", "operation": "trim", "extra": 1}, ("extra",), "Extra"),
    ],
)
def test_config_errors_point_at_the_parameter(step, loc, text):
    with pytest.raises(ValidationError) as err:
        build(step)
    errors = err.value.errors()
    assert errors[0]["loc"] == loc
    assert text in errors[0]["msg"]


def test_parameters_schema_lists_the_operations_and_cast_targets():
    from engine.transforms.mapping import FieldMappingConfig

    schema = FieldMappingConfig.model_json_schema()
    assert "title_case" in schema["properties"]["operation"]["enum"]
    assert schema["properties"]["type"]["enum"] == ["field_mapping", "field_operation"]
    assert schema["$defs"]["CastParameters"]["properties"]["to"]["enum"] == [
        "int",
        "float",
        "string",
        "bool",
        "date",
        "datetime",
    ]


# ---- schema_mapping ------------------------------------------------------------------------------


def test_schema_mapping_renames_in_place_and_keeps_others():
    frame = pl.DataFrame({"id": [1], "total_price": [9.5], "note": ["x"]})
    out = run({"type": "schema_mapping", "mapping": {"id": "order_id", "total_price": "price"}}, frame)
    assert out.columns == ["order_id", "price", "note"]
    assert out.row(0) == (1, 9.5, "x")


def test_schema_mapping_drop_unmapped_and_nested_source_and_swap():
    frame = pl.DataFrame({"a": [1], "b": [2], "customer": [{"email": "e@x.io"}]})
    step = {
        "type": "schema_mapping",
        "mapping": {"b": "a", "a": "b", "customer.email": "email"},
        "drop_unmapped": True,
    }
    out = run(step, frame)
    assert out.columns == ["a", "b", "email"]
    assert out.row(0) == (2, 1, "e@x.io")


def test_schema_mapping_missing_source():
    with pytest.raises(TransformError) as err:
        run({"type": "schema_mapping", "mapping": {"zz": "a"}}, pl.DataFrame({"a": [1]}))
    assert err.value.param == "mapping"


# ---- field_calculation ---------------------------------------------------------------------------

NUMBERS = pl.DataFrame(
    {"price": [10.0, 4.0, None, 3.0], "qty": [2, 0, 1, 3], "discount": [0.5, 0.0, 0.1, None]}
)


def calc(operation: str, fields: list[str] | None = None, **params) -> dict:
    parameters = {"source_fields": fields, **params} if fields else params
    return {
        "type": "field_calculation",
        "field_name": "total",
        "operation": operation,
        "parameters": parameters,
    }


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("multiply", [20.0, 0.0, None, 9.0]),
        ("add", [12.0, 4.0, None, 6.0]),
        ("subtract", [8.0, 4.0, None, 0.0]),
        ("divide", [5.0, None, None, 1.0]),
    ],
)
def test_arithmetic_over_source_fields(operation, expected):
    assert run(calc(operation, ["price", "qty"]), NUMBERS)["total"].to_list() == expected


def test_three_fields_fold_left_to_right():
    frame = pl.DataFrame({"a": [100], "b": [5], "c": [2]})
    assert run(calc("divide", ["a", "b", "c"]), frame)["total"].to_list() == [10.0]
    assert run(calc("subtract", ["a", "b", "c"]), frame)["total"].to_list() == [93]


def test_expression_and_output_field():
    step = calc("expression", expression="price * qty * (1 - discount)", output_field="net")
    out = run(step, NUMBERS)
    assert out["net"].to_list() == [10.0, 0.0, None, None]
    assert "total" not in out.columns


def test_calculation_writes_into_struct():
    frame = pl.DataFrame({"m": [{"a": 2, "b": 3}]})
    step = {
        "type": "field_calculation",
        "field_name": "m.c",
        "operation": "multiply",
        "parameters": {"source_fields": ["m.a", "m.b"]},
    }
    assert run(step, frame)["m"].to_list() == [{"a": 2, "b": 3, "c": 6}]


def test_numeric_operation_on_text_is_refused_before_running():
    empty = pl.DataFrame(schema={"price": pl.String, "qty": pl.Int64})
    with pytest.raises(TransformError) as err:
        run(calc("multiply", ["price", "qty"]), empty)
    assert err.value.param == "parameters.source_fields"
    assert "numeric" in str(err.value)


def test_calculation_config_errors():
    with pytest.raises(ValidationError) as err:
        build(calc("multiply", ["a"]))
    assert err.value.errors()[0]["loc"] == ("parameters", "source_fields")
    with pytest.raises(ValidationError) as err:
        build(calc("expression", expression="a +"))
    assert "at character" in err.value.errors()[0]["msg"]
    with pytest.raises(ValidationError) as err:
        build({"type": "field_calculation", "operation": "add", "parameters": {"source_fields": ["a", "b"]}})
    assert err.value.errors()[0]["loc"] == ("field_name",)


# ---- field_addition ------------------------------------------------------------------------------


def test_literal_and_specials():
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ctx = NodeContext(
        RunContext(run_id="r-42", pipeline="Daily", started_at=started), "n", batch_source="orders"
    )
    frame = pl.DataFrame({"a": [1, 2, 3]})
    add = {"type": "field_addition", "field_name": "x"}
    assert run({**add, "value": 7}, frame, ctx)["x"].to_list() == [7, 7, 7]
    assert run({**add, "value": "current_timestamp"}, frame, ctx)["x"].to_list() == [started] * 3
    assert run({**add, "value": "run_id"}, frame, ctx)["x"].to_list() == ["r-42"] * 3
    assert run({**add, "value": "source_name"}, frame, ctx)["x"].to_list() == ["orders"] * 3
    no_batch = NodeContext(RunContext(pipeline="Daily"), "n")
    assert run({**add, "value": "source_name"}, frame, no_batch)["x"].to_list() == ["Daily"] * 3


def test_uuid_is_a_new_version_4_uuid_per_record():
    frame = pl.DataFrame({"a": list(range(500))})
    ids = run({"type": "field_addition", "field_name": "id", "value": "uuid"}, frame)["id"].to_list()
    assert len(set(ids)) == 500
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
    assert run({"type": "field_addition", "field_name": "id", "value": "uuid"}, frame.clear()).height == 0


def test_concat_skips_nulls_and_reads_numbers_as_text():
    frame = pl.DataFrame({"first": ["Ada", "Alan", None], "last": ["Lovelace", None, None], "n": [1, 2, 3]})
    step = {
        "type": "field_addition",
        "field_name": "label",
        "operation": "concat",
        "parameters": {"source_fields": ["first", "last", "n"], "separator": " "},
    }
    assert run(step, frame)["label"].to_list() == ["Ada Lovelace 1", "Alan 2", "3"]


def test_addition_config_errors():
    with pytest.raises(ValidationError):
        build({"type": "field_addition", "field_name": "x", "operation": "concat"})
    with pytest.raises(ValidationError):
        build(
            {
                "type": "field_addition",
                "field_name": "x",
                "value": 1,
                "operation": "concat",
                "parameters": {"source_fields": ["a"]},
            }
        )


# ---- field_removal -------------------------------------------------------------------------------


def test_removal_top_level_and_nested():
    frame = pl.DataFrame({"a": [1, 2], "s": [{"x": 1, "y": {"p": 1, "q": 2}}, None]})
    out = run({"type": "field_removal", "field_names": ["a", "s.y.q"]}, frame)
    assert out.columns == ["s"]
    assert out["s"].to_list() == [{"x": 1, "y": {"p": 1}}, None]


def test_removal_of_missing_field_is_an_error():
    with pytest.raises(TransformError) as err:
        run({"type": "field_removal", "field_names": ["zz"]}, pl.DataFrame({"a": [1]}))
    assert err.value.param == "field_names"
