"""SchemaForm: every registered schema builds a form; real configs round-trip unchanged; edits made
as a user would (typing, clicking, picking) land in `.value()`; errors show on their fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox, QToolButton

from engine.connectors import registry as connectors
from engine.transforms import registry as transforms
from ui.widgets.schema_form import SchemaForm, parse_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _protocols():
    import protocols

    protocols.register_all()


# ---- a model with every shape ---------------------------------------------------------------
class Point(BaseModel):
    name: str
    address: int = Field(0, ge=0, le=65535)
    scale: float = 1.0


class Tls(BaseModel):
    enabled: bool = False
    ca_file: str | None = None


class Everything(BaseModel):
    host: str
    port: int = Field(1883, ge=1, le=65535)
    ratio: float = Field(0.5, ge=0, le=1)
    mode: Literal["subscribe", "poll"] = "subscribe"
    retries: int | None = None
    verbose: bool = False
    topics: list[str] = []
    points: list[Point] = []
    tls: Tls = Tls()
    password: str | dict | None = None
    api: str | None = None
    key: str | int = "a"


def form_for(qtbot, model, value=None, names=("plc_password", "broker_token")):
    form = SchemaForm(model.model_json_schema(), value, secret_names=lambda: list(names))
    qtbot.addWidget(form)
    form.show()
    return form


def test_empty_form_gives_only_what_the_user_set(qtbot):
    form = form_for(qtbot, Everything)
    assert form.value() == {}
    line = form.field("host").findChild(QLineEdit)
    qtbot.keyClicks(line, "broker.local")
    assert form.value() == {"host": "broker.local"}
    Everything.model_validate(form.value())


def test_round_trip_of_every_shape(qtbot):
    config = {
        "host": "h",
        "port": 8883,
        "ratio": 0.25,
        "mode": "poll",
        "retries": 3,
        "verbose": True,
        "topics": ["a/#", "b/+"],
        "points": [{"name": "p1", "address": 7, "scale": 0.1}, {"name": "p2"}],
        "tls": {"enabled": True, "ca_file": "ca.pem"},
        "password": {"secret": "broker_token"},
        "api": None,
        "key": 5,
    }
    form = form_for(qtbot, Everything, config)
    assert form.value() == config
    assert type(form.value()["key"]) is int
    form.set_value({"host": "x"})
    assert form.value() == {"host": "x"}


def test_widgets_follow_the_schema(qtbot):
    form = form_for(qtbot, Everything)
    port = form.field("port").findChild(QSpinBox)
    assert (port.minimum(), port.maximum(), port.value()) == (1, 65535, 1883)
    ratio = form.field("ratio").findChild(QDoubleSpinBox)
    assert (ratio.minimum(), ratio.maximum()) == (0, 1)
    mode = form.field("mode").findChild(QComboBox)
    assert [mode.itemText(i) for i in range(mode.count())] == ["subscribe", "poll"]
    assert form.field("verbose").findChild(QCheckBox) is not None


def test_a_nested_object_is_titled_once_by_its_row_and_list_items_keep_theirs(qtbot):
    from PySide6.QtWidgets import QGroupBox, QLabel

    form = form_for(qtbot, Everything, {"host": "h", "points": [{"name": "p1"}]})
    labels = [w.text() for w in form.findChildren(QLabel) if w.isVisible()]
    assert labels.count("Tls") == 1  # the row's label; its frame shows no second title
    assert form.field("tls").findChild(QGroupBox).title() == ""
    # A list item has no row label: its frame keeps the item's title.
    item_boxes = form.field("points").findChildren(QGroupBox)
    assert item_boxes and all(box.title() == "Point" for box in item_boxes)


def test_user_edits_reach_the_value(qtbot):
    form = form_for(qtbot, Everything, {"host": "h"})
    changes = []
    form.changed.connect(lambda: changes.append(1))
    form.field("mode").findChild(QComboBox).setCurrentIndex(1)
    qtbot.mouseClick(form.field("verbose").findChild(QCheckBox), Qt.MouseButton.LeftButton)
    port = form.field("port").findChild(QSpinBox)
    port.clear()
    qtbot.keyClicks(port, "502")
    topics = form.field("topics")
    qtbot.mouseClick(topics.add_button, Qt.MouseButton.LeftButton)
    qtbot.keyClicks(form.field("topics.0").findChild(QLineEdit), "plant/#")
    points = form.field("points")
    qtbot.mouseClick(points.add_button, Qt.MouseButton.LeftButton)
    qtbot.keyClicks(form.field("points.0.name").findChild(QLineEdit), "meter")
    nullable = form.field("retries")
    qtbot.mouseClick(nullable.on, Qt.MouseButton.LeftButton)
    value = form.value()
    assert value["mode"] == "poll" and value["verbose"] is True and value["port"] == 502
    assert value["topics"] == ["plant/#"]
    assert value["points"] == [{"name": "meter"}]
    assert value["retries"] == 0
    assert changes
    Everything.model_validate(value)
    # removing the row removes it from the value
    qtbot.mouseClick(points.rows[0][0].findChild(QToolButton, "list_remove"), Qt.MouseButton.LeftButton)
    assert form.value()["points"] == []


def test_secret_fields_pick_stored_names(qtbot):
    form = form_for(qtbot, Everything, {"host": "h"})
    secret = form.field("password")
    picker = secret.picker
    assert [picker.itemText(i) for i in range(picker.count())] == ["broker_token", "plc_password"]
    picker.setCurrentText("plc_password")
    assert form.value()["password"] == {"secret": "plc_password"}
    # a field not named like a secret still shows a picker when its value is a reference
    qtbot.keyClicks(form.field("host").findChild(QLineEdit), "x")
    form.set_value({"host": "h", "password": {"secret": "broker_token"}})
    assert secret.mode.isChecked() and picker.currentText() == "broker_token"


def test_show_errors_marks_the_fields(qtbot):
    form = form_for(qtbot, Everything, {"host": "h", "points": [{"name": "a"}]})
    form.show_errors({"port": "must be at most 65535", "points[0].address": "not an int"})
    label = form.editor.error_labels["port"]
    assert label.text() == "must be at most 65535" and not label.isHidden()
    assert "not an int" in form.field("points.0.address").toolTip()
    form.clear_errors()
    assert label.isHidden()


def test_an_error_on_a_whole_sub_form_is_a_line_above_it_not_a_border_on_every_field(qtbot):
    from PySide6.QtWidgets import QLabel

    form = form_for(qtbot, Everything, {"host": "h", "points": [{"name": "a"}]})
    form.show_errors({"tls": "give ca_file when enabled", "points": "at most 8 points"})
    for key, text in (("tls", "give ca_file when enabled"), ("points", "at most 8 points")):
        editor = form.field(key)
        line = editor.findChild(QLabel, "form_error")
        assert line is not None and line.isVisible() and line.text() == text
        assert "border" not in editor.styleSheet()  # no red frame inherited by the fields inside
    assert form.field("tls.enabled").styleSheet() == ""
    form.clear_errors()
    assert form.field("tls").findChild(QLabel, "form_error").isHidden()


def test_parse_path_forms():
    assert parse_path("a.b[0].c") == parse_path("/a/b/0/c") == parse_path("$.a.b.0.c") == ["a", "b", "0", "c"]


# ---- the real registries ----------------------------------------------------------------------
def _schemas():
    for name in connectors.names():
        d = connectors.get(name).describe()
        for role in ("source_schema", "destination_schema"):
            if d[role]:
                yield f"{name}:{role}", d[role]
    for name, cls in transforms.all_types().items():
        yield f"transform:{name}", cls.describe()["config_schema"]


def test_every_registered_schema_builds_a_form(qtbot):
    built = 0
    for where, schema in _schemas():
        form = SchemaForm(schema)
        qtbot.addWidget(form)
        assert isinstance(form.value(), dict), where
        built += 1
    assert built >= 30


def _configs():
    """Every transform and connector config in the shipped pipelines, templates and golden cases."""
    files = [
        *sorted((ROOT / "resources").rglob("*.json")),
        *sorted((ROOT / "tests" / "golden" / "transforms").rglob("pipeline.json")),
    ]
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            if "connector_type" in node and isinstance(node.get("config"), dict):
                role = {"source": "source_schema", "destination": "destination_schema"}.get(node.get("kind"))
                found.append((where, role or "connector", node["connector_type"], node["config"]))
            elif isinstance(node.get("type"), str) and transforms.canonical(node["type"]) and len(node) > 1:
                found.append((where, "transform", node["type"], node))
            for v in node.values():
                walk(v, where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    for path in files:
        try:
            walk(json.loads(path.read_text()), path.name)
        except ValueError:
            continue
    # A config met again (the same file source in many pipelines) builds the same form: once each.
    distinct = {}
    for where, kind, type_name, config in found:
        distinct.setdefault(
            (kind, type_name, json.dumps(config, sort_keys=True)), (where, kind, type_name, config)
        )
    return list(distinct.values())


def test_real_configs_round_trip(qtbot):
    checked = 0
    for where, kind, type_name, config in _configs():
        if kind == "transform":
            schema = transforms.get(type_name).describe()["config_schema"]
            candidates = [schema]
        else:
            cls = connectors.get(type_name)
            if cls is None:
                continue
            d = cls.describe()
            # the node's own role when the spec says it (graph form), else either role
            roles = [kind] if kind != "connector" else ["source_schema", "destination_schema"]
            candidates = [d[role] for role in roles if d[role]]
        results = []
        for schema in candidates:
            form = SchemaForm(schema, config, secret_names=lambda: ["s"])
            qtbot.addWidget(form)
            results.append(form.value())
        assert config in results, f"{where}: {type_name} {config} -> {results}"
        checked += 1
    assert checked >= 40


def test_variants_read_as_words_and_an_empty_choice_is_a_note(qtbot):
    """Field validation's `parameters`: an anyOf of models. The picker names them in words, the
    no-parameters choice shows a note (not a JSON box), a value picks its own variant, and the
    form is as tall as the shown choice."""
    from PySide6.QtWidgets import QLabel

    from engine.transforms.validation import FieldValidationConfig

    config = {"field_name": "sku", "validation_type": "regex", "parameters": {"regex": "^[A-Z]+$"}}
    form = form_for(qtbot, FieldValidationConfig, config)
    params = form.field("parameters")
    picker = params.findChild(QComboBox, "variant_picker")
    titles = [picker.itemText(i) for i in range(picker.count())]
    assert titles == [
        "No parameters",
        "Regex parameters",
        "Range parameters",
        "In set parameters",
        "Date format parameters",
    ]
    assert picker.currentText() == "Regex parameters"
    assert form.value() == config
    picker.setCurrentIndex(titles.index("Range parameters"))
    ranged = params.stack.sizeHint().height()
    picker.setCurrentIndex(0)  # the user picks "No parameters"
    assert form.value()["parameters"] == {}
    note = params.findChild(QLabel, "no_settings")
    assert note.isVisible() and "Nothing to set" in note.text()
    assert params.stack.sizeHint().height() < ranged / 2
    FieldValidationConfig.model_validate({**form.value(), "validation_type": "email_format"})


class RetryPolicy(BaseModel):
    max_attempts: int = 3


class WithPolicy(BaseModel):
    retry_policy: RetryPolicy = RetryPolicy()


def test_a_model_named_row_reads_as_words(qtbot):
    from PySide6.QtWidgets import QLabel

    form = form_for(qtbot, WithPolicy)
    labels = [w.text() for w in form.findChildren(QLabel) if w.isVisible()]
    assert "Retry policy" in labels and "RetryPolicy" not in labels
