"""`validate(doc, reuse=True)` keeps the Plan of a document that checked out (engine/spec/validate.py):
the engine's runs of a scheduled pipeline parse it once. What depends on more than the document is
still checked on every call: the sources' schemas, and that its connectors are the same classes."""

from __future__ import annotations

import pytest

from engine.connectors import registry
from engine.connectors.base import Connector, ConnectorConfig
from engine.context import RunContext
from engine.errors import SpecError
from engine.spec import validate as validate_module
from engine.spec.validate import validate


def csv_doc(dest: str = "out.csv") -> dict:
    return {
        "name": "reuse",
        "sources": [{"name": "in", "connector_type": "file", "config": {"path": "in.csv", "format": "csv"}}],
        "transformations": [
            {"type": "record_filter", "condition": {"field": "b", "operator": "gte", "value": 1}}
        ],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": dest}}],
    }


def test_the_same_document_gives_the_same_plan_and_a_changed_one_a_new_plan(tmp_path):
    (tmp_path / "in.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    ctx = RunContext(base_dir=tmp_path)
    first = validate(csv_doc(), ctx=ctx, reuse=True)
    assert validate(csv_doc(), ctx=ctx, reuse=True) is first
    changed = validate(csv_doc("other.csv"), ctx=ctx, reuse=True)
    assert changed is not first and changed.configs["out"].path == "other.csv"
    assert validate(csv_doc(), ctx=ctx) is not first  # without reuse: compiled anew, as before


def test_the_sources_schemas_are_checked_on_every_reuse(tmp_path):
    (tmp_path / "in.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    ctx = RunContext(base_dir=tmp_path)
    validate(csv_doc(), ctx=ctx, reuse=True)
    (tmp_path / "in.csv").write_text("a,c\n1,2\n", encoding="utf-8")  # column b is gone
    with pytest.raises(SpecError) as err:
        validate(csv_doc(), ctx=ctx, reuse=True)
    assert "field 'b' not found" in str(err.value)


class ReuseConfig(ConnectorConfig):
    rows: int = 1


def _connector(name: str) -> type[Connector]:
    return type(name, (Connector,), {"connector_type": "test_reuse", "SourceConfig": ReuseConfig})


def test_a_replaced_connector_class_compiles_the_document_again():
    doc = {
        "name": "plugin",
        "nodes": [
            {"id": "src", "kind": "source", "connector_type": "test_reuse", "config": {"rows": 2}},
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["src"],
                "connector_type": "file",
                "config": {"path": "x.csv"},
            },
        ],
    }
    old, new = _connector("OldPlugin"), _connector("NewPlugin")
    registry.register(old)
    first = validate(doc, reuse=True)
    assert first.connector("src") is old
    registry.register(new)  # the plugin was replaced
    second = validate(doc, reuse=True)
    assert second is not first and second.connector("src") is new


def test_the_kept_plans_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(validate_module, "PLAN_CACHE_SIZE", 3)
    (tmp_path / "in.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    ctx = RunContext(base_dir=tmp_path)
    plans = [validate(csv_doc(f"o{i}.csv"), ctx=ctx, reuse=True) for i in range(6)]
    assert len(validate_module._plans) <= 3
    assert validate(csv_doc("o5.csv"), ctx=ctx, reuse=True) is plans[5]  # the newest are kept
    assert validate(csv_doc("o0.csv"), ctx=ctx, reuse=True) is not plans[0]


def test_an_invalid_document_is_never_kept_and_says_the_same_with_reuse():
    bad = {"name": "bad", "sources": [{"name": "in", "connector_type": "nope", "config": {}}]}
    with pytest.raises(SpecError) as plain:
        validate(bad)
    with pytest.raises(SpecError) as reused:
        validate(bad, reuse=True)
    assert str(plain.value) == str(reused.value)
    unsortable = {**csv_doc(), "layout": {1: {"x": 0}, "a": {"x": 1}}}  # YAML can give int keys
    with pytest.raises(SpecError) as plain:
        validate(unsortable, check_schemas=False)
    with pytest.raises(SpecError) as reused:
        validate(unsortable, check_schemas=False, reuse=True)
    assert str(plain.value) == str(reused.value)
