"""The pipeline editor, driven as a user drives it: palette, canvas gestures, property forms,
shortcuts. The e-commerce pipeline of the user guide is built from nothing and saved; the saved
spec must equal resources/pipelines/ecommerce_orders.json (layout coordinates aside)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QApplication, QLineEdit

from tests.ui.form_driver import fill_form

ROOT = Path(__file__).resolve().parents[2]
ECOMMERCE = ROOT / "resources" / "pipelines" / "ecommerce_orders.json"
WIND_FARM = ROOT / "resources" / "pipelines" / "wind_farm.json"
TEMPLATES = sorted((ROOT / "resources" / "templates").glob("*.json"))
CTRL = Qt.KeyboardModifier.ControlModifier
CTRL_SHIFT = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def editor(window, qtbot):
    page = window.show_page("editor")
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)  # shortcuts fire in the active window only
    page.canvas.graph.viewer().setFocus()
    return page


def settle(qtbot, page) -> None:
    """Wait until the debounced validation of the current document has come back."""
    with qtbot.waitSignal(page.validated, timeout=10_000):
        page.validate_now()


def press(qtbot, page, key, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    """A key press on the canvas, as the user gives it: window active, canvas focused."""
    window = page.main_window
    if not window.isActiveWindow():
        window.activateWindow()
        qtbot.waitUntil(window.isActiveWindow)
    viewer = page.canvas.graph.viewer()
    viewer.setFocus()
    qtbot.keyClick(viewer, key, modifiers)


def palette_add(qtbot, page, key: str) -> str:
    """Double-click a palette entry (it lands in the view's centre, selected)."""
    tree, item = page.palette.tree, page.palette.entry(key)
    tree.scrollToItem(item)
    before = set(page.document.ids())
    rect = tree.visualItemRect(item)
    assert rect.isValid(), (key, rect)
    # Qt 6's item views take a double-click only after a press on the same item.
    qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    (new,) = set(page.document.ids()) - before
    return new


def palette_drop(qtbot, page, key: str, scene_pos: tuple[float, float]) -> str:
    """Drop a palette entry's drag data on the canvas, as a drag from the palette does."""
    tree, item = page.palette.tree, page.palette.entry(key)
    mime = tree.mimeData([item])
    viewer = page.canvas.graph.viewer()
    where = viewer.mapFromScene(QPointF(*scene_pos))
    before = set(page.document.ids())
    event = QDropEvent(
        QPointF(where),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    viewer.dropEvent(event)
    (new,) = set(page.document.ids()) - before
    return new


def type_into(qtbot, line: QLineEdit, text: str) -> None:
    line.selectAll()
    qtbot.keyClick(line, Qt.Key.Key_Backspace)
    qtbot.keyClicks(line, text)
    qtbot.keyClick(line, Qt.Key.Key_Return)


def fill(qtbot, page, values: dict) -> None:
    """Fill the shown property form field by field through its widgets (tests/ui/form_driver.py):
    typing, clicking, picking, Add buttons and sub-forms, as the user fills it in."""
    fill_form(qtbot, lambda: page.properties.form, values)


def add_node(qtbot, page, node: dict, *, drop_at: tuple[float, float] | None = None) -> None:
    from engine.api.pipelines import node_key

    key = node_key(node)
    new = palette_drop(qtbot, page, key, drop_at) if drop_at else palette_add(qtbot, page, key)
    assert page.properties.node_id == new
    type_into(qtbot, page.properties.id_edit, node["id"])
    assert page.properties.node_id == node["id"]
    if node.get("name"):
        type_into(qtbot, page.properties.name_edit, node["name"])
    config = node.get("config") or {k: v for k, v in (node.get("transform") or {}).items() if k != "type"}
    fill(qtbot, page, config)


def port_view(page, node_id: str, port: str, output: bool):
    item = page.canvas.item(node_id)
    return (item.get_output(port) if output else item.get_input(port)).view


def connect(page, producer: str, port: str, consumer: str, in_port: str = "in") -> None:
    """A finished port-to-port drag: the viewer's connection_changed, as NodeGraphQt sends it."""
    viewer = page.canvas.graph.viewer()
    viewer.connection_changed.emit(
        [], [(port_view(page, producer, port, True), port_view(page, consumer, in_port, False))]
    )


def drag_connect(qtbot, page, producer: str, consumer: str) -> None:
    """A real mouse drag from an output port to an input port on the canvas."""
    viewer = page.canvas.graph.viewer()
    page.canvas.select([producer, consumer])
    viewer.zoom_to_nodes([page.canvas.item(producer).view, page.canvas.item(consumer).view])
    page.canvas.graph.clear_selection()
    start = port_view(page, producer, "out", True)
    end = port_view(page, consumer, "in", False)

    def at(view) -> QPoint:
        return viewer.mapFromScene(view.sceneBoundingRect().center())

    qtbot.mousePress(viewer.viewport(), Qt.MouseButton.LeftButton, pos=at(start))
    qtbot.mouseMove(viewer.viewport(), pos=(at(start) + at(end)) / 2)
    qtbot.mouseMove(viewer.viewport(), pos=at(end))
    qtbot.mouseRelease(viewer.viewport(), Qt.MouseButton.LeftButton, pos=at(end))


def without_layout(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "layout"}


def test_build_the_user_guide_pipeline_through_the_gui(editor, qtbot, tmp_path, artifacts):
    page = editor
    expected = json.loads(ECOMMERCE.read_text())
    toasts = []
    page.toast = lambda kind, text: toasts.append((kind, text))

    # The pipeline's own fields: nothing selected, the properties show the pipeline form.
    page.canvas.graph.clear_selection()
    page.properties.show_node(None)
    fill(qtbot, page, {"name": expected["name"], "description": expected["description"]})
    assert page.document.get("name") == expected["name"]
    assert page.document.get("description") == expected["description"]

    for i, node in enumerate(expected["nodes"]):
        # The first source arrives by drag and drop, the rest by double-click.
        add_node(qtbot, page, node, drop_at=(0.0, 0.0) if i == 0 else None)

    connections = 0
    for node in expected["nodes"]:
        info = page.canvas.item(node["id"]).info
        for index, ref in enumerate(node.get("inputs", [])):
            producer, _, port = ref.partition(".")
            in_port = info["inputs"][min(index, len(info["inputs"]) - 1)]["name"]
            if connections == 0:
                drag_connect(qtbot, page, producer, node["id"])
            else:
                connect(page, producer, port or "out", node["id"], in_port)
            connections += 1

    page.canvas.graph.viewer().setFocus()
    press(qtbot, page, Qt.Key.Key_L, CTRL)  # auto-layout
    assert page.document.position("shopify")[0] < page.document.position("map_shopify")[0]
    settle(qtbot, page)
    assert page.issues == []
    assert page.problems.count() == 1 and "No problems" in page.problems.item(0).text()

    page.canvas.fit_to_view()
    page.select_node("check_email")
    page.grab().save(str(artifacts / "editor_ecommerce.png"))

    target = tmp_path / "ecommerce.json"
    page.path = target
    assert page.has_unsaved_changes()
    page.canvas.graph.viewer().setFocus()
    with qtbot.waitSignal(page.saved, timeout=10_000):
        press(qtbot, page, Qt.Key.Key_S, CTRL)
    assert toasts[-1][0] == "success"
    assert not page.has_unsaved_changes()
    saved = json.loads(target.read_text())
    for got, want in zip(saved["nodes"], expected["nodes"], strict=True):
        assert got == want
    assert without_layout(saved) == without_layout(expected)
    assert set(saved["layout"]) == {n["id"] for n in expected["nodes"]}
    versions = page.engine.workspace.metadata.pipeline_versions(expected["name"])
    assert [v["version"] for v in versions] == [1]

    # Undo everything: back to the empty document; redo everything: the saved spec again.
    stack = page.document.undo_stack
    steps = stack.index()
    assert steps > 60
    for _ in range(steps):
        press(qtbot, page, Qt.Key.Key_Z, CTRL)
    assert stack.index() == 0
    assert page.document.nodes == [] and page.canvas._items == {}
    for _ in range(steps):
        press(qtbot, page, Qt.Key.Key_Z, CTRL_SHIFT)
    assert page.document.to_dict() == saved
    assert not page.has_unsaved_changes()
    assert len(page.canvas._edges) == sum(len(n.get("inputs", [])) for n in expected["nodes"])


def test_validation_marks_the_node_and_a_problem_selects_it(editor, qtbot):
    page = editor
    with qtbot.waitSignal(page.validated, timeout=10_000):  # opening validates at once
        page.load_document(json.loads(ECOMMERCE.read_text()))
    assert page.issues == []
    node = dict(page.document.node("check_email"))
    node["transform"] = {**node["transform"], "validation_type": "shiny"}
    with qtbot.waitSignal(page.validated, timeout=10_000):  # an edit, after the edit debounce
        page.document.set_node("check_email", node)
    assert [i["node_id"] for i in page.issues] == ["check_email"]
    assert page.canvas.error_of("check_email")
    assert page.canvas.item("check_email").view.border_color[:3] == (230, 60, 60)
    assert "shiny" in page.canvas.item("check_email").view.toolTip()
    page.canvas.graph.clear_selection()
    item = page.problems.item(0)
    qtbot.mouseClick(
        page.problems.viewport(), Qt.MouseButton.LeftButton, pos=page.problems.visualItemRect(item).center()
    )
    assert page.canvas.selected_ids() == ["check_email"]
    assert page.properties.node_id == "check_email"
    press(qtbot, page, Qt.Key.Key_Z, CTRL)
    settle(qtbot, page)
    assert page.issues == [] and not page.canvas.error_of("check_email")


def test_copy_paste_delete_and_undo(editor, qtbot):
    page = editor
    page.load_document(json.loads(ECOMMERCE.read_text()))
    before = page.document.to_dict()
    page.canvas.select(["map_shopify", "tag_shopify"])
    page.canvas.graph.viewer().setFocus()
    press(qtbot, page, Qt.Key.Key_C, CTRL)
    press(qtbot, page, Qt.Key.Key_V, CTRL)
    pasted = set(page.document.ids()) - set(before_ids := [n["id"] for n in before["nodes"]])
    assert pasted == {"map_shopify_2", "tag_shopify_2"}
    assert page.document.node("tag_shopify_2")["inputs"] == ["map_shopify_2"]  # the inner link kept
    assert page.document.node("map_shopify_2")["inputs"] == []  # the link from outside dropped
    assert sorted(page.canvas.selected_ids()) == sorted(pasted)
    press(qtbot, page, Qt.Key.Key_Delete)
    assert page.document.ids() == before_ids
    page.canvas.select(["union"])
    press(qtbot, page, Qt.Key.Key_Delete)
    assert page.document.node("union") is None
    assert page.document.node("full_name")["inputs"] == []  # links into the deleted node went too
    for _ in range(3):
        press(qtbot, page, Qt.Key.Key_Z, CTRL)
    assert page.document.to_dict() == before


def test_split_branches_and_rejected_ports_follow_the_config(editor, qtbot):
    page = editor
    split = palette_add(qtbot, page, "transform:split")
    assert list(page.canvas.item(split).outputs()) == ["out"]  # no branches yet
    fill(
        qtbot,
        page,
        {"branches": [{"name": "hot", "condition": {"field": "t", "operator": "gt", "value": 30}}]},
    )
    assert list(page.canvas.item(split).outputs()) == ["hot", "default"]
    check = palette_add(qtbot, page, "transform:field_validation")
    assert set(page.canvas.item(check).outputs()) == {"out", "rejected"}
    sink = palette_add(qtbot, page, "destination:file")
    connect(page, split, "hot", check)
    connect(page, check, "rejected", sink)
    assert page.document.node(check)["inputs"] == [f"{split}.hot"]
    assert page.document.node(sink)["inputs"] == [f"{check}.rejected"]
    # A destination has no outputs and a source no inputs: the canvas offers neither.
    assert page.canvas.item(sink).outputs() == {}
    # Moving a node is a command; its position is the layout's.
    viewer = page.canvas.graph.viewer()
    view = page.canvas.item(sink).view
    old = tuple(view.xy_pos)
    view.xy_pos = [old[0] + 100, old[1] + 50]
    viewer.moved_nodes.emit({view: old})
    assert page.document.position(sink) == (old[0] + 100, old[1] + 50)
    page.document.undo_stack.undo()
    assert tuple(page.canvas.item(sink).view.xy_pos) == old


def test_palette_search_filters_by_words(editor):
    palette = editor.palette
    palette.search.setText("valid")
    assert "transform:field_validation" in palette.visible_keys()
    assert "source:file" not in palette.visible_keys()
    palette.search.setText("")
    assert len(palette.visible_keys()) == len(palette.keys())
    categories = [palette.tree.topLevelItem(i).text(0) for i in range(palette.tree.topLevelItemCount())]
    assert categories == ["Sources", "Transforms", "Destinations"]


@pytest.mark.parametrize("path", [*TEMPLATES, WIND_FARM], ids=lambda p: p.stem)
def test_open_templates_and_the_wind_farm_without_errors(editor, qtbot, path, artifacts):
    page = editor
    with qtbot.waitSignal(page.opened, timeout=10_000):
        page.open_pipeline(path, as_template=path != WIND_FARM, confirm=False)
    settle(qtbot, page)
    doc = json.loads(path.read_text())
    assert page.issues == []
    assert page.document.ids() == [n["id"] for n in doc["nodes"]]
    assert len(page.canvas._items) == len(doc["nodes"])
    assert len(page.canvas._edges) == sum(len(n.get("inputs", [])) for n in doc["nodes"])
    page.canvas.fit_to_view()
    page.grab().save(str(artifacts / f"editor_{path.stem}.png"))


def test_templates_are_listed_and_valid(engine):
    names = {t["name"] for t in engine.templates()}
    assert {
        "file_to_duckdb_cleanup",
        "multi_source_union",
        "opcua_to_historian",
        "modbus_meters_quality",
    } <= names


def test_linear_form_imports_as_a_graph_and_is_laid_out(editor, qtbot, tmp_path):
    linear = {
        "name": "Linear import",
        "sources": [{"name": "orders", "connector_type": "file", "config": {"path": "orders.csv"}}],
        "transformations": [{"type": "sort", "fields": ["id"]}],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
    }
    path = tmp_path / "linear.json"
    path.write_text(json.dumps(linear))
    with qtbot.waitSignal(editor.opened, timeout=10_000):
        editor.open_pipeline(path, confirm=False)
    assert editor.document.ids() == ["orders", "sort_1", "out"]
    assert editor.document.node("sort_1")["inputs"] == ["orders"]
    assert set(editor.document.get("layout")) == {"orders", "sort_1", "out"}
    assert editor.path is None  # saving writes the graph form to a new file, not over the linear one


def test_unsaved_changes_flag(editor, qtbot, tmp_path):
    page = editor
    assert not page.has_unsaved_changes()
    palette_add(qtbot, page, "source:file")
    assert page.has_unsaved_changes()
    with qtbot.waitSignal(page.saved, timeout=10_000):
        page.save_to(tmp_path / "p.json")
    assert not page.has_unsaved_changes()
    page.document.undo_stack.undo()
    assert page.has_unsaved_changes()


def ecommerce_copy(tmp_path: Path) -> Path:
    """The user guide's pipeline beside its example exports (its paths are relative to the spec)."""
    for f in (ROOT / "resources" / "examples" / "ecommerce").iterdir():
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(ECOMMERCE, tmp_path / ECOMMERCE.name)
    return tmp_path / ECOMMERCE.name


def test_preview_a_node_then_run_with_f5(editor, qtbot, tmp_path, artifacts):
    page = editor
    page.main_window.resize(1400, 900)
    spec = ecommerce_copy(tmp_path)
    with qtbot.waitSignal(page.opened, timeout=10_000):
        page.open_pipeline(spec, confirm=False)
    settle(qtbot, page)
    page.canvas.fit_to_view()
    with qtbot.waitSignal(page.preview.finished, timeout=20_000) as preview:
        page.select_node("check_email")  # selecting a node previews it (debounced)
    result = preview.args[0]
    rows = result.output("check_email").rows
    assert rows.height > 0 and "customer_email" in rows.columns and "channel" in rows.columns
    assert result.rejected("check_email").rows_total == 3  # the user guide's three bad addresses
    assert page.preview.rows_table.model().rowCount() == rows.height
    page.bottom_tabs.setCurrentIndex(1)
    page.canvas.zoom_to(
        [
            "order_time",
            "currency_default",
            "status",
            "drop_parts",
            "check_email",
            "sorted",
            "historian",
            "rejected",
        ]
    )
    qtbot.wait(50)
    page.main_window.grab().save(str(artifacts / "editor_preview.png"))

    with qtbot.waitSignal(page.runner.finished, timeout=30_000) as run:
        press(qtbot, page, Qt.Key.Key_F5)
    record = run.args[0]
    assert record["status"] in ("success", "warning")
    assert record["rows_rejected"] == 3
    assert (tmp_path / "unified_orders.json").exists()
    runs = page.engine.workspace.metadata.runs()
    assert [r["run_id"] for r in runs] == [record["run_id"]]


def test_screenshot_for_the_docs(editor, qtbot, artifacts):
    page = editor
    page.main_window.resize(1400, 860)
    with qtbot.waitSignal(page.opened, timeout=10_000):
        page.open_pipeline(TEMPLATES[0], as_template=True, confirm=False)
    settle(qtbot, page)
    page.select_node("check_email")
    QApplication.processEvents()
    page.canvas.fit_to_view()
    page.main_window.grab().save(str(artifacts / "editor_window.png"))
    assert (artifacts / "editor_window.png").stat().st_size > 10_000


def test_secret_fields_offer_the_stored_secret_names(window, engine, qtbot):
    engine.set_secret("plc_password", "s3cret")
    page = window.show_page("editor")  # on_show fetches the names in the background
    qtbot.waitUntil(lambda: page._secret_names == ["plc_password"], timeout=5_000)
    plc = palette_add(qtbot, page, "source:opc_ua")
    secret = page.properties.form.field("password")
    secret = getattr(secret, "inner", secret)
    secret.refresh_names()
    assert [secret.picker.itemText(i) for i in range(secret.picker.count())][-1:] == ["plc_password"]
    fill(qtbot, page, {"password": {"secret": "plc_password"}})
    assert page.document.node(plc)["config"]["password"] == {"secret": "plc_password"}
    type_into(qtbot, page.properties.id_edit, "plc")
    assert page.properties.title.text().endswith("plc")


class Corner(BaseModel):
    label: str
    at: tuple[float, float]


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scale(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float


class EveryKind(BaseModel):
    """One field per editor kind of the schema form, several at their defaults (the driver must
    still write those explicitly, as a user re-picking them does)."""

    host: str
    port: int = Field(1883, ge=1, le=65535)
    retries_max: int = 5
    ratio: float = 0.5
    mode: Literal["subscribe", "poll"] = "subscribe"
    retries: int | None = None
    level: Literal["low", "high"] | None = None
    verbose: bool = True
    password: str | dict | None = None
    token: str | dict | None = None
    key: str | int = "a"
    point: tuple[float, float] = (0.0, 0.0)
    limits: dict[str, int] = {}
    corners: list[Corner] = []
    extra: Any = None
    note: str | None = "x"
    tags: list[str] = ["a", "b"]
    choice: NoSettings | Scale = Scale(factor=2.0)
    scaling: NoSettings | Scale = NoSettings()


def test_the_form_driver_fills_every_editor_kind_through_its_widgets(qtbot):
    """The user guide's pipeline meets only some editor kinds; the driver must reach every one
    (numbers, tuples, unions, secrets, empty choices too) or the GUI tests built on it prove less."""
    from ui.widgets.schema_form import SchemaForm

    form = SchemaForm(EveryKind.model_json_schema(), secret_names=lambda: ["plc_password"])
    qtbot.addWidget(form)
    form.show()
    kinds = {name: type(editor).__name__ for name, editor in form.editor.fields.items()}
    assert set(kinds.values()) == {
        "SecretEditor",
        "NumberEditor",
        "EnumEditor",
        "NullableEditor",
        "BoolEditor",
        "UnionEditor",
        "TupleEditor",
        "MappingEditor",
        "ListEditor",
        "JsonEditor",
    }, kinds
    variants = {type(e).__name__ for e in form.editor.fields["choice"].variants}
    assert variants == {"EmptyObjectEditor", "ObjectEditor"}
    values = {
        "host": "broker.local",
        "port": 1883,
        "retries_max": 5,
        "ratio": 0.25,
        "mode": "subscribe",
        "retries": 3,
        "level": "high",
        "verbose": True,
        "password": {"secret": "plc_password"},
        "token": {"secret": "broker_token"},
        "key": 7,
        "point": [1.5, -2.0],
        "limits": {"a": 1, "b": 2},
        "corners": [{"label": "ne", "at": [1.0, 2.0]}, {"label": "sw", "at": [-1.0, -2.5]}],
        "extra": {"k": [1, 2]},
        "note": None,
        "tags": ["z"],
        "choice": {},
        "scaling": {"factor": 0.5},
    }
    fill_form(qtbot, form, values)
    assert form.value() == values
    assert EveryKind.model_validate(form.value()).key == 7


def test_f5_draws_every_nodes_status_and_rows_on_the_canvas(editor, qtbot, tmp_path, artifacts):
    page = editor
    page.main_window.resize(1400, 900)
    spec = ecommerce_copy(tmp_path)
    with qtbot.waitSignal(page.opened, timeout=10_000):
        page.open_pipeline(spec, confirm=False)
    settle(qtbot, page)
    page.canvas.fit_to_view()
    assert page.run_action.text() == "Run"
    seen_running: set[str] = set()
    page.runner.node_progress.connect(
        lambda node, stats: stats["status"] == "running" and seen_running.add(node)
    )

    with qtbot.waitSignal(page.runner.finished, timeout=30_000) as run:
        press(qtbot, page, Qt.Key.Key_F5)
        assert page.run_action.text() == "Stop" and "running" in page.status.text()
    record = run.args[0]
    assert record["status"] == "warning" and page.run_action.text() == "Run"
    assert seen_running  # nodes were drawn running on the way

    stats = {row["node_id"]: row for row in page.engine.workspace.metadata.node_stats(record["run_id"])}
    assert set(stats) == set(page.document.ids())
    for node_id, row in stats.items():
        shown = page.canvas.progress_of(node_id)
        assert (shown["status"], shown["rows_out"]) == (row["status"], row["rows_out"]), node_id
        rows = row["rows_out"] or row["rows_in"]
        text = page.canvas.badge_text(node_id)
        assert text and row["status"] in text and f"{rows:,} rows" in text, (node_id, text)
        color = page.canvas.item(node_id).view.border_color
        assert tuple(color[:3]) == {"success": (40, 160, 80), "warning": (215, 150, 30)}[row["status"]]
    assert "3 rejected" in page.canvas.badge_text("check_email")
    # the links carry the run's counts
    assert page.canvas.edge_labels("union") == ["15 rows"]
    assert page.canvas.edge_labels("check_email", "rejected") == ["3 rows"]

    for toast in list(page.main_window.toasts.toasts):
        if "Open run" not in toast.text:
            toast.dismiss()
    with qtbot.waitSignal(page.preview.finished, timeout=20_000):
        page.select_node("check_email")  # the marks stay while a node is previewed
    page.bottom_tabs.setCurrentWidget(page.preview)
    assert page.canvas.badge_text("check_email").startswith("✓ success · 12 rows")
    page.canvas.zoom_to(["status", "drop_parts", "check_email", "sorted", "historian", "rejected"])
    qtbot.wait(50)
    page.main_window.grab().save(str(artifacts / "editor_run.png"))

    # a new run clears the old marks first
    page.canvas.set_progress(None, None)
    assert page.canvas.badge_text("union") is None and page.canvas.progress_of("union") is None


def test_the_minimap_shows_the_pipeline_and_a_click_centres_the_canvas(editor, qtbot, artifacts):
    page = editor
    page.main_window.resize(1400, 860)
    with qtbot.waitSignal(page.opened, timeout=10_000):
        page.open_pipeline(WIND_FARM, as_template=True, confirm=False)
    minimap = page.canvas.minimap
    assert minimap.isVisible() and minimap.parent() is page.canvas.graph.viewer()
    viewport = page.canvas.graph.viewer().viewport().geometry()
    assert viewport.contains(minimap.geometry())  # in the canvas' corner
    first, last = page.document.ids()[0], page.document.ids()[-1]
    page.canvas.select([first])
    page.canvas.graph.viewer().zoom_to_nodes([page.canvas.item(first).view])  # zoomed in on one node
    qtbot.waitUntil(lambda: not minimap._fit_timer.isActive())
    shown = minimap.mapToScene(minimap.viewport().rect()).boundingRect()
    for node_id in page.document.ids():  # the whole pipeline is on the minimap
        assert shown.contains(page.canvas.item(node_id).view.sceneBoundingRect()), node_id
    target = page.canvas.item(last).view.sceneBoundingRect().center()
    assert not minimap.visible_rect().contains(target)

    qtbot.mouseClick(minimap.viewport(), Qt.MouseButton.LeftButton, pos=minimap.mapFromScene(target))
    centre = minimap.visible_rect().center()
    assert abs(centre.x() - target.x()) < 30 and abs(centre.y() - target.y()) < 30
    assert minimap.visible_rect().contains(target)
    assert page.document.undo_stack.count() == 0  # steering the view edits nothing
    qtbot.wait(60)
    page.main_window.grab().save(str(artifacts / "editor_minimap.png"))
