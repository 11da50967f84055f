"""json_extract and hashing."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest
from pydantic import ValidationError

from engine.context import NodeContext, RunContext
from engine.errors import SecretError, TransformError
from engine.transforms.catalog import build
from engine.transforms.text import parse_json_path


def run(step: dict, frame: pl.DataFrame, ctx: NodeContext | None = None) -> pl.DataFrame:
    outputs = build(step).apply([frame.lazy()], ctx or NodeContext(RunContext(), "n"))
    return outputs["out"].collect()


JSON = pl.DataFrame(
    {
        "payload": [
            '{"reading": {"value": 21.5, "unit": "C"}, "tags": ["a", "b"]}',
            '{"reading": {"value": null}, "tags": []}',
            "not json",
            None,
        ]
    }
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.reading.value", ["21.5", None, None, None]),
        ("$.reading.unit", ["C", None, None, None]),
        ("$.tags[1]", ["b", None, None, None]),
        ("$['reading']['unit']", ["C", None, None, None]),
        ("$.missing", [None, None, None, None]),
    ],
)
def test_json_extract_from_text(path, expected):
    out = run({"type": "json_extract", "field_name": "payload", "path": path, "output_field": "x"}, JSON)
    assert out["x"].to_list() == expected
    assert out["payload"].to_list() == JSON["payload"].to_list()


def test_json_extract_from_struct_keeps_types():
    frame = pl.DataFrame(
        {"m": [{"reading": {"value": 1.5}, "tags": ["a"]}, {"reading": {"value": None}, "tags": []}]}
    )
    out = run(
        {"type": "json_extract", "field_name": "m", "path": "$.reading.value", "output_field": "v"}, frame
    )
    assert out["v"].to_list() == [1.5, None]
    out = run({"type": "json_extract", "field_name": "m", "path": "$.tags[0]", "output_field": "t"}, frame)
    assert out["t"].to_list() == ["a", None]
    with pytest.raises(TransformError) as err:
        run({"type": "json_extract", "field_name": "m", "path": "$.nope"}, frame)
    assert err.value.param == "path"


def test_json_extract_errors():
    with pytest.raises(TransformError) as err:
        run({"type": "json_extract", "field_name": "n", "path": "$.a"}, pl.DataFrame({"n": [1]}))
    assert err.value.param == "field_name"
    with pytest.raises(ValidationError) as err:
        build({"type": "json_extract", "field_name": "x", "path": "a.b"})
    assert "starts with `$`" in err.value.errors()[0]["msg"]


def test_json_path_parser():
    assert parse_json_path("$.a.b[0]['c d'][\"e\"]") == ["a", "b", 0, "c d", "e"]
    with pytest.raises(ValueError, match="character 4"):
        parse_json_path("$.a..b")


# ---- hashing -------------------------------------------------------------------------------------


def test_hash_with_salt_from_the_secret_store_and_nulls_stay_null():
    ctx = NodeContext(RunContext(secret={"demo_salt": "pepper"}.__getitem__), "n")
    frame = pl.DataFrame({"email": ["ada@example.com", None], "id": [7, 8], "keep": ["x", "y"]})
    out = run({"type": "hashing", "field_names": ["email", "id"], "salt_secret": "demo_salt"}, frame, ctx)
    assert out["email"].to_list() == [hashlib.sha256(b"pepperada@example.com").hexdigest(), None]
    assert out["id"].to_list() == [
        hashlib.sha256(b"pepper7").hexdigest(),
        hashlib.sha256(b"pepper8").hexdigest(),
    ]
    assert out["keep"].to_list() == ["x", "y"]


def test_blake2b_without_salt_and_nested_field():
    frame = pl.DataFrame({"c": [{"email": "a@b.io"}]})
    out = run({"type": "hashing", "field_names": ["c.email"], "algorithm": "blake2b"}, frame)
    assert out["c"].to_list() == [{"email": hashlib.blake2b(b"a@b.io").hexdigest()}]


def test_secret_is_only_read_when_data_flows():
    node = build({"type": "hashing", "field_names": ["a"], "salt_secret": "missing"})
    planned = node.apply([pl.LazyFrame(schema={"a": pl.String})], NodeContext(RunContext(), "n"))
    assert planned["out"].collect_schema()["a"] == pl.String
    with pytest.raises(SecretError, match="missing"):
        node.apply([pl.LazyFrame({"a": ["x"]})], NodeContext(RunContext(), "n"))["out"].collect()


def test_hashing_errors():
    with pytest.raises(TransformError) as err:
        run({"type": "hashing", "field_names": ["nope"]}, pl.DataFrame({"a": ["x"]}))
    assert err.value.param == "field_names"
    with pytest.raises(ValidationError):
        build({"type": "hashing", "field_names": ["a"], "algorithm": "md5"})
