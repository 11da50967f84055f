"""Pipeline spec: models, both forms, conversion, validation paths, files, JSON Schema."""

from __future__ import annotations

import json

import pytest
import yaml

from engine.errors import SpecError
from engine.spec.convert import graph_to_linear, linear_to_graph
from engine.spec.io import load_pipeline, parse_document, read_document, save_pipeline
from engine.spec.models import LinearPipeline, dump
from engine.spec.schema import document_schema
from engine.spec.validate import validate

LINEAR = {
    "name": "Daily orders",
    "description": "optional text",
    "sources": [{"name": "orders", "connector_type": "file", "config": {"path": "orders.json"}}],
    "transformations": [{"type": "field_mapping", "field_name": "product_name", "operation": "title_case"}],
    "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
    "schedule": {"type": "cron", "expression": "0 8 * * *", "timezone": "UTC"},
    "error_handling": {
        "retry_policy": {"max_retries": 3, "backoff_multiplier": 2, "initial_delay_seconds": 1}
    },
}

GRAPH = {
    "name": "Orders unification",
    "spec_version": 1,
    "nodes": [
        {"id": "shop", "kind": "source", "connector_type": "file", "config": {"path": "shopify.json"}},
        {"id": "woo", "kind": "source", "connector_type": "file", "config": {"path": "woo.json"}},
        {
            "id": "map_shop",
            "kind": "transform",
            "inputs": ["shop"],
            "transform": {"type": "schema_mapping", "mapping": {"id": "order_id", "total_price": "price"}},
        },
        {"id": "all", "kind": "transform", "inputs": ["map_shop", "woo"], "transform": {"type": "union"}},
        {
            "id": "check",
            "kind": "transform",
            "inputs": ["all"],
            "transform": {
                "type": "field_validation",
                "field_name": "customer_email",
                "validation_type": "email_format",
            },
        },
        {
            "id": "out",
            "kind": "destination",
            "inputs": ["check"],
            "connector_type": "duckdb",
            "config": {"table": "orders", "mode": "append"},
        },
        {
            "id": "bad",
            "kind": "destination",
            "inputs": ["check.rejected"],
            "connector_type": "file",
            "config": {"path": "rejected.json"},
        },
    ],
    "layout": {"shop": [0, 0], "woo": [0, 120]},
    "schedule": {"type": "manual"},
}


def issues_of(doc) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        validate(doc, check_schemas=False)
    return {i.path: i.message + (f" | {i.allowed}" if i.allowed else "") for i in info.value.issues}


def test_spec_examples_are_valid():
    linear = validate(LINEAR, check_schemas=False)
    assert linear.form == "linear"
    assert [n.kind for n in linear.graph.nodes] == ["source", "transform", "destination"]
    graph = validate(GRAPH, check_schemas=False)
    assert graph.form == "graph"
    assert graph.order.index("shop") < graph.order.index("all") < graph.order.index("bad")
    assert graph.transforms["check"].output_ports() == ["out", "rejected"]


def test_single_source_and_destination_forms():
    doc = {k: v for k, v in LINEAR.items() if k not in ("sources", "destinations")}
    doc["source"], doc["destination"] = LINEAR["sources"][0], LINEAR["destinations"][0]
    compiled = validate(doc, check_schemas=False)
    assert compiled.linear.sources[0].name == "orders"
    assert compiled.linear.destinations[0].name == "out"


def test_connector_types_match_case_and_separator_insensitively():
    doc = json.loads(json.dumps(LINEAR))
    doc["sources"][0]["connector_type"] = "FILE"
    doc["destinations"][0]["connector_type"] = " File "
    assert validate(doc, check_schemas=False).graph.nodes[0].connector_type == "FILE"


def test_unknown_connector_lists_available_types():
    doc = json.loads(json.dumps(LINEAR))
    doc["sources"][0]["connector_type"] = "rest-apiz"
    found = issues_of(doc)
    assert "unknown connector type 'rest-apiz'" in found["sources[0].connector_type"]
    assert "duckdb" in found["sources[0].connector_type"] and "file" in found["sources[0].connector_type"]


def test_every_error_is_reported_at_once_with_its_path():
    doc = json.loads(json.dumps(GRAPH))
    doc["nodes"][2]["transform"]["colour"] = "red"  # unknown key
    doc["nodes"][4]["transform"]["validation_type"] = "telepathy"  # bad enum
    doc["nodes"][3]["inputs"] = ["map_shop", "nowhere"]  # dangling input
    doc["bogus"] = 1  # unknown top-level key
    found = issues_of(doc)
    assert "unknown key 'colour'" in found["nodes[2].transform"]
    assert "'telepathy' is not allowed" in found["nodes[4].transform.validation_type"]
    assert "email_format" in found["nodes[4].transform.validation_type"]
    assert "unknown key 'bogus'" in found[""]
    assert "name" in found[""] and "nodes" in found[""]  # the allowed keys are listed


def test_dangling_input_cycle_and_kinds():
    doc = json.loads(json.dumps(GRAPH))
    doc["nodes"][3]["inputs"] = ["map_shop", "ghost"]
    assert "unknown node 'ghost'" in issues_of(doc)["nodes[3].inputs[1]"]

    doc = json.loads(json.dumps(GRAPH))
    doc["nodes"][2]["inputs"] = ["check"]  # map_shop <- check <- all <- map_shop
    found = issues_of(doc)
    assert any("cycle" in m for m in found.values())

    doc = json.loads(json.dumps(GRAPH))
    doc["nodes"][0]["inputs"] = ["woo"]
    assert "a source takes no inputs" in issues_of(doc)["nodes[0].inputs"]

    doc = json.loads(json.dumps(GRAPH))
    doc["nodes"][6]["inputs"] = ["out"]
    assert "destinations have no outputs" in issues_of(doc)["nodes[6].inputs[0]"]

    doc = json.loads(json.dumps(GRAPH))
    doc["nodes"][6]["inputs"] = ["check.nope"]
    assert "no port 'nope'" in issues_of(doc)["nodes[6].inputs[0]"]


def test_missing_fields_and_unknown_transformation():
    doc = json.loads(json.dumps(LINEAR))
    del doc["transformations"][0]["field_name"]
    doc["transformations"].append({"type": "teleport"})
    del doc["name"]
    found = issues_of(doc)
    assert found["transformations[0].field_name"] == "missing required field"
    assert "unknown transformation type 'teleport'" in found["transformations[1].type"]
    assert "field_mapping" in found["transformations[1].type"]
    assert found["name"] == "missing required field"


def test_bad_schedule_paths_skip_the_union_tag():
    doc = json.loads(json.dumps(LINEAR))
    doc["schedule"] = {"type": "cron", "expression": "61 8 * * *", "timezone": "Mars/Olympus"}
    found = issues_of(doc)
    assert "invalid cron expression" in found["schedule.expression"]
    assert "unknown time zone" in found["schedule.timezone"]
    doc["schedule"] = {"type": "hourly"}
    assert "unknown type 'hourly'" in issues_of(doc)["schedule"]


def test_join_on_missing_source_names_the_sources():
    doc = json.loads(json.dumps(LINEAR))
    doc["transformations"] = [
        {
            "type": "join",
            "join_type": "left",
            "primary_key": "id",
            "foreign_key": "id",
            "join_source": "customers",
        }
    ]
    found = issues_of(doc)
    assert "unknown source 'customers'" in found["transformations[0].join_source"]
    assert "orders" in found["transformations[0].join_source"]


def test_type_mismatch_is_caught_from_the_known_input_schema(tmp_path):
    (tmp_path / "orders.csv").write_text("id,name,price\n1,widget,2.5\n")
    doc = {
        "name": "typed",
        "sources": [
            {"name": "orders", "connector_type": "file", "config": {"path": str(tmp_path / "orders.csv")}}
        ],
        "transformations": [
            {
                "type": "field_calculation",
                "field_name": "x",
                "operation": "multiply",
                "parameters": {"source_fields": ["name", "price"], "output_field": "x"},
            }
        ],
        "destinations": [
            {"name": "out", "connector_type": "file", "config": {"path": str(tmp_path / "o.json")}}
        ],
    }
    with pytest.raises(SpecError) as info:
        validate(doc)
    assert info.value.issues[0].path.startswith("transformations[0]")
    assert "name" in info.value.issues[0].message


def test_linear_to_graph_unions_unnamed_sources_and_round_trips():
    doc = json.loads(json.dumps(LINEAR))
    doc["sources"].append({"name": "more orders", "connector_type": "file", "config": {"path": "more.json"}})
    compiled = validate(doc, check_schemas=False)
    union = compiled.graph.node("union_sources")
    assert union.inputs == ["orders", "more_orders"]
    assert compiled.graph.node("more_orders").name == "more orders"
    back = graph_to_linear(compiled.graph)
    assert dump(back) == dump(compiled.linear)


def test_join_source_becomes_second_input_and_back():
    linear = LinearPipeline.model_validate(
        {
            "name": "j",
            "sources": [
                {"name": "orders", "connector_type": "file", "config": {"path": "o.json"}},
                {"name": "customers", "connector_type": "file", "config": {"path": "c.json"}},
            ],
            "transformations": [
                {
                    "type": "join",
                    "join_type": "left",
                    "primary_key": "cid",
                    "foreign_key": "id",
                    "join_source": "customers",
                }
            ],
            "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
        }
    )
    graph, _ = linear_to_graph(linear)
    join = graph.node("join_1")
    assert join.inputs == ["orders", "customers"] and "join_source" not in join.transform
    assert dump(graph_to_linear(graph)) == dump(linear)


def test_graph_with_rejected_port_cannot_be_linear():
    compiled = validate(GRAPH, check_schemas=False)
    with pytest.raises(SpecError, match="cannot be written in linear form"):
        graph_to_linear(compiled.graph)


def test_files_json_and_yaml(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(LINEAR))
    assert load_pipeline(tmp_path / "p.yaml", check_schemas=False).graph.name == "Daily orders"
    compiled = validate(GRAPH, check_schemas=False)
    save_pipeline(compiled.graph, tmp_path / "saved.json")
    assert read_document(tmp_path / "saved.json") == dump(compiled.graph)
    assert read_document(tmp_path / "saved.json")["layout"] == {"shop": [0.0, 0.0], "woo": [0.0, 120.0]}


def test_syntax_errors_are_located(tmp_path):
    with pytest.raises(SpecError, match=r"invalid JSON at line 2, column \d+"):
        parse_document('{"name": "x",\n "sources": [}', "p.json")
    with pytest.raises(SpecError, match="invalid YAML at line 2, column 7"):
        parse_document("name: x\nkind: : bad\n", "p.yaml", yaml_syntax=True)
    with pytest.raises(SpecError, match="file not found"):
        read_document(tmp_path / "nope.json")


def test_json_schema_lists_every_transformation_and_connector():
    schema = document_schema()
    from engine.transforms import registry

    for name in registry.all_types():
        assert f"transform_{name}" in schema["$defs"]
    assert {"file", "duckdb"} <= set(schema["x-connectors"])
    json.dumps(schema)  # serialisable


def test_validate_reads_relative_sources_from_the_spec_folder_not_the_working_folder(
    tmp_path, monkeypatch, capsys
):
    from app.cli import main

    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "orders.csv").write_text("order_id,price\n1,2.5\n")
    doc = {
        "name": "relative",
        "sources": [{"name": "orders", "connector_type": "file", "config": {"path": "orders.csv"}}],
        "transformations": [
            {"type": "record_filter", "condition": {"field": "nope", "operator": "gt", "value": 1}}
        ],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
    }
    (folder / "p.json").write_text(json.dumps(doc))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no orders.csv here: the spec's folder must be used

    assert main(["validate", str(folder / "p.json")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "transformations[0]" in err
