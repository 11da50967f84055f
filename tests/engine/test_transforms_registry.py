"""The catalog as a whole: every type registered, schemas usable by the GUI, node properties."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from engine.transforms import registry
from engine.transforms.catalog import build

TYPES = [
    "field_mapping",
    "schema_mapping",
    "field_calculation",
    "record_filter",
    "field_addition",
    "field_removal",
    "field_validation",
    "aggregation",
    "join",
    "lookup",
    "conditional",
    "sort",
    "deduplicate",
    "split",
    "explode",
    "union",
    "hashing",
    "date_time",
    "json_extract",
    "sql",
    "python",
    "resample",
    "rolling",
    "rate_of_change",
    "deadband",
    "quality_check",
    "power_curve",
]
CONDITION = {"field": "a", "operator": "is_null"}
MINIMAL = {
    "field_mapping": {"field_name": "a", "operation": "trim"},
    "schema_mapping": {"mapping": {"a": "b"}},
    "field_calculation": {"field_name": "c", "operation": "add", "parameters": {"source_fields": ["a", "b"]}},
    "record_filter": {"condition": CONDITION},
    "field_addition": {"field_name": "c", "value": 1},
    "field_removal": {"field_names": ["a"]},
    "field_validation": {"field_name": "a", "validation_type": "not_null"},
    "aggregation": {"aggregated_fields": [{"input_field": "a", "operation": "sum"}]},
    "join": {"primary_key": "a", "foreign_key": "b"},
    "lookup": {"field_name": "a", "table": {"x": "y"}},
    "conditional": {"condition": CONDITION},
    "sort": {"fields": ["a"]},
    "deduplicate": {},
    "split": {"branches": [{"name": "x", "condition": CONDITION}]},
    "explode": {"field_name": "a"},
    "union": {},
    "hashing": {"field_names": ["a"]},
    "date_time": {"field_name": "a", "operation": "truncate", "unit": "day"},
    "json_extract": {"field_name": "a", "path": "$.x"},
    "sql": {"query": "SELECT * FROM input"},
    "python": {"function": "m:f"},
    "resample": {"interval": "1m"},
    "rolling": {"window": "5m"},
    "rate_of_change": {},
    "deadband": {"deadband": 0.5},
    "quality_check": {"min": 0},
    "power_curve": {"curve": [[3, 0], [12, 2500]]},
}
STREAMING = {
    "field_mapping": True,
    "schema_mapping": True,
    "field_calculation": True,
    "record_filter": True,
    "field_addition": True,
    "field_removal": True,
    "field_validation": True,
    "aggregation": False,
    "join": False,
    "lookup": True,
    "conditional": True,
    "sort": False,
    "deduplicate": False,
    "split": True,
    "explode": True,
    "union": False,
    "hashing": True,
    "date_time": True,
    "json_extract": True,
    "sql": False,
    "python": False,
    "resample": False,
    "rolling": False,
    "rate_of_change": False,
    "deadband": False,
    "quality_check": True,
    "power_curve": True,
}


def test_every_spec_type_is_registered():
    assert sorted(registry.all_types()) == sorted(TYPES)
    assert registry.canonical("field_operation") == "field_mapping"


@pytest.mark.parametrize("type_name", TYPES)
def test_minimal_config_builds_and_round_trips(type_name):
    node = build({"type": type_name, **MINIMAL[type_name]}, "node-1")
    assert node.node_id == "node-1" and node.type == type_name
    assert node.streaming is STREAMING[type_name]
    dumped = node.config.model_dump(by_alias=True, exclude_none=True)
    assert type(node.config).model_validate(dumped) == node.config


@pytest.mark.parametrize("type_name", TYPES)
def test_unknown_keys_are_errors(type_name):
    with pytest.raises(ValidationError) as err:
        build({"type": type_name, **MINIMAL[type_name], "surprise": 1})
    assert ("surprise",) in [e["loc"] for e in err.value.errors()]


@pytest.mark.parametrize("type_name", TYPES)
def test_describe_gives_a_json_schema_with_descriptions(type_name):
    cls = registry.get(type_name)
    description = cls.describe()
    json.dumps(description)  # the GUI receives it as JSON
    schema = description["config_schema"]
    assert schema["additionalProperties"] is False
    type_schema = schema["properties"]["type"]
    assert type_name in type_schema.get("enum", [type_schema.get("const")])
    for name, prop in schema["properties"].items():
        if name != "type":
            assert prop.get("description"), f"{type_name}.{name} has no description"
    assert description["description"] and description["category"] != "transform"


def test_alias_accepted_in_the_type_literal():
    assert build({"type": "field_operation", "field_name": "a", "operation": "trim"}).type == "field_mapping"


def test_unknown_type_is_a_key_error():
    with pytest.raises(KeyError):
        build({"type": "teleport"})
