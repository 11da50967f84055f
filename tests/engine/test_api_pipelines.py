"""EngineAPI pipelines calls: the palette's node types, open (linear converted), save with a
version, validate with node ids, templates. No Qt here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.api import LocalEngine
from engine.api.pipelines import input_ports, issues_of, node_key, output_ports_of

ROOT = Path(__file__).resolve().parents[2]
ECOMMERCE = ROOT / "resources" / "pipelines" / "ecommerce_orders.json"
TEMPLATES = ROOT / "resources" / "templates"


@pytest.fixture
def engine(tmp_path):
    import protocols

    protocols.register_all()  # as the app does at start-up
    engine = LocalEngine(tmp_path / "data")
    yield engine
    engine.close()


def test_node_types_cover_the_registries_with_ports_and_schemas(engine):
    from engine.connectors import registry as connectors
    from engine.transforms import registry as transforms

    types = {t["key"]: t for t in engine.pipelines.node_types()}
    assert {f"transform:{n}" for n in transforms.all_types()} <= set(types)
    assert {f"source:{n}" for n in connectors.names("source")} <= set(types)
    assert {f"destination:{n}" for n in connectors.names("destination")} <= set(types)
    for info in types.values():
        assert info["title"] and info["config_schema"].get("type") == "object", info["key"]
        assert info["category"]
    assert types["source:file"]["inputs"] == [] and types["source:file"]["outputs"] == ["out"]
    assert types["destination:duckdb"]["outputs"] == []
    assert types["transform:field_validation"]["outputs"] == ["out", "rejected"]
    assert types["transform:union"]["inputs"] == [{"name": "in", "multi": True}]
    assert [p["name"] for p in types["transform:join"]["inputs"]] == ["in", "in2"]
    assert types["transform:split"]["dynamic_outputs"]
    assert "type" in types["transform:sort"]["config_schema"]["properties"]
    assert types["source:opc_ua"]["category"] == "sources"


def test_output_ports_follow_the_config():
    split = {
        "id": "s",
        "kind": "transform",
        "transform": {
            "type": "split",
            "branches": [{"name": "hot", "condition": {"field": "t", "operator": "gt", "value": 1}}],
        },
    }
    assert output_ports_of(split) == ["hot", "default"]
    flag = {"id": "v", "kind": "transform", "transform": {"type": "field_validation", "on_failure": "flag"}}
    assert output_ports_of(flag) == ["out", "rejected"]  # unfinished config: the type's usual ports
    flag["transform"].update(field_name="x", validation_type="not_null")
    assert output_ports_of(flag) == ["out"]
    assert output_ports_of({"kind": "destination"}) == []
    assert output_ports_of({"kind": "source"}) == ["out"]
    assert node_key(split) == "transform:split"
    assert node_key({"kind": "source", "connector_type": "file"}) == "source:file"


@given(st.integers(1, 5), st.one_of(st.none(), st.integers(1, 5)))
@settings(max_examples=50)
def test_input_ports_one_per_input_or_one_multi(low, high):
    if high is not None and high < low:
        high = low
    ports = input_ports(low, high)
    if high is None:
        assert ports == [{"name": "in", "multi": True}]
    else:
        assert len(ports) == high and ports[0]["name"] == "in"
        assert len({p["name"] for p in ports}) == high


def test_open_converts_the_linear_form(engine, tmp_path):
    linear = {
        "name": "L",
        "sources": [
            {"name": "a", "connector_type": "file", "config": {"path": "a.csv"}},
            {"name": "b", "connector_type": "file", "config": {"path": "b.csv"}},
        ],
        "transformations": [{"type": "sort", "fields": ["x"]}],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "o.json"}}],
    }
    path = tmp_path / "l.json"
    path.write_text(json.dumps(linear))
    read = engine.pipelines.read(path)
    assert read["form"] == "linear"
    doc = read["document"]
    assert [n["id"] for n in doc["nodes"]] == ["a", "b", "union_sources", "sort_1", "out"]
    assert engine.pipelines.validate(doc) == []
    assert engine.pipelines.open(ECOMMERCE) == json.loads(ECOMMERCE.read_text())


def test_open_reports_a_located_error(engine, tmp_path):
    from engine.errors import SpecError

    path = tmp_path / "bad.json"
    path.write_text("{\n  nope")
    with pytest.raises(SpecError) as err:
        engine.pipelines.open(path)
    assert "line 2" in str(err.value)


def test_save_is_atomic_and_records_versions(engine, tmp_path):
    doc = json.loads(ECOMMERCE.read_text())
    target = tmp_path / "sub" / "p.json"
    assert engine.pipelines.save(target, doc) == 1
    assert json.loads(target.read_text()) == doc
    assert engine.pipelines.save(target, doc) == 1  # unchanged: no new version
    doc["description"] = "changed"
    assert engine.pipelines.save(target, doc) == 2
    assert [p.name for p in target.parent.iterdir()] == ["p.json"]  # no temporary file left
    assert engine.workspace.metadata.pipeline_spec(doc["name"]) == doc


def test_validate_names_the_node_path_and_allowed_values(engine):
    doc = json.loads(ECOMMERCE.read_text())
    assert engine.pipelines.validate(doc) == []
    doc["nodes"][16]["transform"]["on_failure"] = "explode"
    doc["nodes"][20]["inputs"] = ["nowhere"]
    issues = engine.pipelines.validate(doc)
    assert {i["node_id"] for i in issues} == {"check_email"}  # the second is found once the first is fixed
    (issue,) = issues
    assert issue["path"] == "nodes[16].transform.on_failure"
    assert "flag" in issue["allowed"]
    doc["nodes"][16]["transform"]["on_failure"] = "reject"
    (issue,) = engine.pipelines.validate(doc)
    assert issue["node_id"] == "rejected" and issue["path"] == "nodes[20].inputs[0]"
    assert "unknown node" in issue["message"]
    doc["layout"]["ghost"] = [0, 0]
    assert any(i["node_id"] == "ghost" for i in issues_of(doc))


def test_templates_are_listed_and_every_one_is_valid_graph_form_with_layout(engine):
    templates = engine.pipelines.templates()
    names = {t["name"] for t in templates}
    assert {
        "file_to_duckdb_cleanup",
        "multi_source_union",
        "opcua_to_historian",
        "modbus_meters_quality",
    } <= names
    for t in templates:
        doc = json.loads(Path(t["path"]).read_text())
        assert t["title"] == doc["name"]
        assert "nodes" in doc and set(doc["layout"]) == {n["id"] for n in doc["nodes"]}, t["name"]
        assert engine.pipelines.validate(doc) == [], t["name"]


def test_list_pipelines_mine_first_with_mode_last_run_and_errors(engine, tmp_path):
    import time

    from tests.pipelines import csv_into_duckdb

    mine = engine.pipelines.pipelines_dir
    mine.mkdir(parents=True)
    doc = csv_into_duckdb(tmp_path, 10, name="Nightly load", table="t")
    (mine / "nightly.json").write_text(json.dumps(doc), encoding="utf-8")
    time.sleep(0.01)
    (mine / "broken.json").write_text('{"name": ', encoding="utf-8")
    (mine / "notes.txt").write_text("not a pipeline", encoding="utf-8")

    listed = engine.pipelines.list()
    own = [p for p in listed if p["origin"] == "mine"]
    assert [Path(p["path"]).name for p in own] == ["broken.json", "nightly.json"]  # newest first
    broken, nightly = own
    assert broken["error"] and "broken.json" in broken["error"] and broken["last_run"] is None
    assert nightly["name"] == "Nightly load" and nightly["mode"] == "manual" and not nightly["error"]
    shipped = [p for p in listed if p["origin"] != "mine"]
    assert {p["origin"] for p in shipped} == {"example", "template"}
    assert {Path(p["path"]).name for p in shipped} >= {"wind_farm.json", "ecommerce_orders.json"}
    assert next(p for p in shipped if p["name"] == "Wind farm to historian")["mode"] == "real_time"

    record = engine.runs.start(doc, base_dir=tmp_path).result(60)
    nightly = next(p for p in engine.pipelines.list() if p["name"] == "Nightly load")
    assert nightly["last_run"]["run_id"] == record["run_id"]
    assert nightly["last_run"]["status"] == "success"


def test_delete_pipeline_only_in_my_folder(engine):
    from engine.api.pipelines import EXAMPLES_DIR

    mine = engine.pipelines.pipelines_dir
    mine.mkdir(parents=True)
    target = mine / "old.json"
    target.write_text("{}", encoding="utf-8")
    with pytest.raises(PermissionError, match="only pipelines in"):
        engine.pipelines.delete(EXAMPLES_DIR / "wind_farm.json")
    with pytest.raises(PermissionError, match="only pipelines in"):
        engine.pipelines.delete(mine / ".." / "old.json")
    assert (EXAMPLES_DIR / "wind_farm.json").exists()
    engine.pipelines.delete(target)
    assert not target.exists()
