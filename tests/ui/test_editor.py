"""The pipeline editor, driven as a user drives it: palette, canvas gestures, property forms,
shortcuts. The e-commerce pipeline of the user guide is built from nothing and saved; the saved
spec must equal resources/pipelines/ecommerce_orders.json (layout coordinates aside)."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field
from PySide6.QtCore import QPoint, QPointF, Qt, QTimer
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QFileDialog, QLineEdit, QMessageBox, QPushButton

from tests.ui.form_driver import fill_form

ROOT = Path(__file__).resolve().parents[2]
ECOMMERCE = ROOT / "resources" / "pipelines" / "ecommerce_orders.json"
WIND_FARM = ROOT / "resources" / "pipelines" / "wind_farm.json"
TEMPLATES = sorted((ROOT / "resources" / "templates").glob("*.json"))
LEFT = Qt.MouseButton.LeftButton
NONE = Qt.KeyboardModifier.NoModifier
CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier
CTRL_SHIFT = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def editor(window, qtbot):
    page = window.show_page("editor")
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)  # shortcuts fire in the active window only
    # on_show fetched the templates and the user's pipelines folder in the background
    qtbot.waitUntil(
        lambda: bool(page.templates_menu.actions()) and page._pipelines_dir is not None, timeout=30_000
    )
    page.canvas.graph.viewer().setFocus()
    return page


@contextlib.contextmanager
def opening(qtbot, page, timeout: int = 20_000) -> Iterator[None]:
    """Around an action that opens a document (a template, Ctrl+O, a row on the Pipelines page):
    back once it is open (`opened`) AND its own validation has come back. Waiting on `validated`
    alone is a race: the debounced check of the previous document may answer first."""
    seen: list[str] = []

    def on_opened(_path: str) -> None:
        seen.append("opened")

    def on_validated(_issues: list) -> None:
        seen.append("validated")

    page.opened.connect(on_opened)
    page.validated.connect(on_validated)
    try:
        yield
        # opened is emitted after load_document started this document's check; any validation
        # answered after it is this document's (older generations are dropped by the page)
        qtbot.waitUntil(
            lambda: "validated" in seen[seen.index("opened") :] if "opened" in seen else False,
            timeout=timeout,
        )
    finally:
        page.opened.disconnect(on_opened)
        page.validated.disconnect(on_validated)


def settle(qtbot, page) -> None:
    """Wait until the debounced validation of the current document has come back."""
    with qtbot.waitSignal(page.validated, timeout=30_000):
        page.validate_now()


def press(qtbot, page, key, modifiers=NONE) -> None:
    """A key press on the canvas, as the user gives it: window active, canvas focused."""
    window = page.main_window
    if not window.isActiveWindow():
        window.activateWindow()
        qtbot.waitUntil(window.isActiveWindow)
    viewer = page.canvas.graph.viewer()
    viewer.setFocus()
    qtbot.keyClick(viewer, key, modifiers)


# ---- modal dialogs and popups: their exec() blocks the test until they are answered ----------------
def when_up(find, act, tries: int = 250) -> None:
    """Call `act(widget)` once `find()` gives a visible widget (checked every 20 ms)."""

    def attempt(left: int = tries) -> None:
        widget = find()
        if widget is None or not widget.isVisible():
            if left:
                QTimer.singleShot(20, lambda: attempt(left - 1))
            return
        act(widget)

    QTimer.singleShot(0, attempt)


def answer_confirm(qtbot, button: str, seen: list[str]) -> None:
    """Click ConfirmAccept or ConfirmReject on the next confirmation; its title and text go to `seen`."""

    def act(box) -> None:
        seen.append(
            f"{box.windowTitle()}: {box.text()} [{box.findChild(QPushButton, 'ConfirmAccept').text()}]"
        )
        qtbot.mouseClick(box.findChild(QPushButton, button), LEFT)

    when_up(
        lambda: (
            QApplication.activeModalWidget()
            if isinstance(QApplication.activeModalWidget(), QMessageBox)
            else None
        ),
        act,
    )


def answer_file_dialog(qtbot, path: Path | None, seen: dict) -> None:
    """In the next file dialog, go to `path`'s folder, type its name and press Enter (None: Enter on
    what the dialog offers); the dialog's title, first folder and offered name go to `seen`."""

    def find():
        widget = QApplication.activeModalWidget()
        return widget if isinstance(widget, QFileDialog) else None

    def act(dialog) -> None:
        name = dialog.findChild(QLineEdit, "fileNameEdit")
        seen.update(
            title=dialog.windowTitle(), folder=Path(dialog.directory().absolutePath()), name=name.text()
        )
        if path is not None:
            if Path(dialog.directory().absolutePath()) != path.parent:
                dialog.setDirectory(str(path.parent))  # the user browses to the folder
            name.setFocus()
            qtbot.keyClick(name, Qt.Key.Key_A, CTRL)
            qtbot.keyClicks(name, path.name)
        qtbot.keyClick(name, Qt.Key.Key_Return)
        if dialog.isVisible():  # not taken: fail the test rather than hang in the dialog
            seen["left_open"] = name.text()
            dialog.reject()

    when_up(find, act)


def pick_template(qtbot, page, title: str) -> None:
    """Click the Templates button and the template's entry in its menu."""

    def act(menu) -> None:
        action = next(a for a in menu.actions() if a.text() == title)
        qtbot.mouseClick(menu, LEFT, pos=menu.actionGeometry(action).center())

    when_up(QApplication.activePopupWidget, act)
    qtbot.mouseClick(page.templates_button, LEFT)


def tool_button(page, text: str):
    action = next(a for a in page.toolbar.actions() if a.text() == text)
    return page.toolbar.widgetForAction(action)


def click_tool(qtbot, page, text: str) -> None:
    qtbot.mouseClick(tool_button(page, text), LEFT)


# ---- the canvas, by mouse -------------------------------------------------------------------------
def viewport_point(page, scene_point: QPointF) -> QPoint:
    return page.canvas.graph.viewer().mapFromScene(scene_point)


def node_point(page, node_id: str) -> QPoint:
    """A point on the node's title (its ports and their labels are lower, at the sides)."""
    rect = page.canvas.item(node_id).view.sceneBoundingRect()
    return viewport_point(page, QPointF(rect.center().x(), rect.top() + 6))


def click_node(qtbot, page, node_id: str, modifiers=NONE) -> None:
    viewport = page.canvas.graph.viewer().viewport()
    pos = node_point(page, node_id)
    assert viewport.rect().contains(pos), f"{node_id} is off the canvas at {pos}"
    qtbot.mouseClick(viewport, LEFT, modifiers, pos)


def shift_click_nodes(qtbot, page, ids: list[str]) -> None:
    """Select these nodes: a click on empty canvas, then Shift+click on each."""
    viewer = page.canvas.graph.viewer()
    click_empty(qtbot, page)
    viewer.setFocus()
    # NodeGraphQt follows Shift through its key events (Qt 6 reports a Shift press given without
    # modifiers as one with Shift held, as a keyboard sends it).
    qtbot.keyPress(viewer, Qt.Key.Key_Shift)
    assert viewer.SHIFT_state
    for node_id in ids:
        click_node(qtbot, page, node_id, SHIFT)
    qtbot.keyRelease(viewer, Qt.Key.Key_Shift, SHIFT)


def click_empty(qtbot, page) -> None:
    """Click the canvas where there is no node or link (clears the selection)."""
    viewer = page.canvas.graph.viewer()
    rect = viewer.viewport().rect()
    for pos in (QPoint(x, y) for y in range(6, rect.height(), 40) for x in range(6, rect.width() // 2, 40)):
        if not [i for i in viewer.items(pos) if i.isVisible()]:
            qtbot.mouseClick(viewer.viewport(), LEFT, pos=pos)
            return
    raise AssertionError("no empty spot on the canvas")


def drag(qtbot, page, start: QPoint, end: QPoint) -> None:
    """Press, move in steps, release: a mouse drag on the canvas."""
    viewport = page.canvas.graph.viewer().viewport()
    qtbot.mousePress(viewport, LEFT, pos=start)
    for k in (1, 2, 3):
        qtbot.mouseMove(viewport, pos=start + (end - start) * k / 3)
    qtbot.mouseRelease(viewport, LEFT, pos=end)


def port_view(page, node_id: str, port: str, output: bool):
    item = page.canvas.item(node_id)
    return (item.get_output(port) if output else item.get_input(port)).view


def drag_connect(qtbot, page, producer: str, port: str, consumer: str, in_port: str = "in") -> None:
    """A mouse drag from an output port to an input port (the two nodes framed first)."""
    page.canvas.zoom_to([producer, consumer])
    start = viewport_point(page, port_view(page, producer, port, True).sceneBoundingRect().center())
    end = viewport_point(page, port_view(page, consumer, in_port, False).sceneBoundingRect().center())
    drag(qtbot, page, start, end)


def palette_add(qtbot, page, key: str) -> str:
    """Double-click a palette entry (it lands in the view's centre, selected)."""
    tree, item = page.palette.tree, page.palette.entry(key)
    tree.scrollToItem(item)
    before = set(page.document.ids())
    rect = tree.visualItemRect(item)
    assert rect.isValid(), (key, rect)
    # Qt 6's item views take a double-click only after a press on the same item.
    qtbot.mouseClick(tree.viewport(), LEFT, pos=rect.center())
    qtbot.mouseDClick(tree.viewport(), LEFT, pos=rect.center())
    (new,) = set(page.document.ids()) - before
    return new


def palette_drop(qtbot, page, key: str, scene_pos: tuple[float, float]) -> str:
    """Drag a palette entry onto the canvas: the palette's own drag data, entering, moving over and
    dropped on the canvas (a real QDrag cannot run offscreen)."""
    tree, item = page.palette.tree, page.palette.entry(key)
    mime = tree.mimeData([item])
    viewer = page.canvas.graph.viewer()
    where = viewer.mapFromScene(QPointF(*scene_pos))
    before = set(page.document.ids())
    copy = Qt.DropAction.CopyAction
    enter = QDragEnterEvent(where, copy, mime, LEFT, NONE)
    QApplication.sendEvent(viewer.viewport(), enter)
    assert enter.isAccepted()
    QApplication.sendEvent(viewer.viewport(), QDragMoveEvent(where, copy, mime, LEFT, NONE))
    QApplication.sendEvent(viewer.viewport(), QDropEvent(QPointF(where), copy, mime, LEFT, NONE))
    (new,) = set(page.document.ids()) - before
    return new


def type_into(qtbot, line: QLineEdit, text: str) -> None:
    line.setFocus()
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


def problem_lines(page) -> list[str]:
    return [page.problems.item(i).text() for i in range(page.problems.count())]


def without_layout(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "layout"}


def test_build_the_user_guide_pipeline_through_the_gui(editor, qtbot, artifacts):
    page = editor
    expected = json.loads(ECOMMERCE.read_text())

    # The pipeline's own fields: with nothing selected the properties show the pipeline form.
    click_empty(qtbot, page)
    assert page.properties.node_id is None and page.properties.title.text() == "Pipeline"
    fill(qtbot, page, {"name": expected["name"], "description": expected["description"]})
    assert page.document.get("name") == expected["name"]
    assert page.document.get("description") == expected["description"]

    for i, node in enumerate(expected["nodes"]):
        # The first source arrives by drag and drop, the rest by double-click.
        add_node(qtbot, page, node, drop_at=(0.0, 0.0) if i == 0 else None)

    press(qtbot, page, Qt.Key.Key_L, CTRL)  # auto-layout, so that every link can be drawn by mouse
    for node in expected["nodes"]:
        info = page.canvas.item(node["id"]).info
        for index, ref in enumerate(node.get("inputs", [])):
            producer, _, port = ref.partition(".")
            in_port = info["inputs"][min(index, len(info["inputs"]) - 1)]["name"]
            drag_connect(qtbot, page, producer, port or "out", node["id"], in_port)
            assert ref in page.document.node(node["id"])["inputs"], (ref, node["id"])

    press(qtbot, page, Qt.Key.Key_L, CTRL)  # auto-layout again, now by the links
    assert page.document.position("shopify")[0] < page.document.position("map_shopify")[0]
    settle(qtbot, page)
    assert page.issues == []
    assert problem_lines(page) == ["✓ No problems: the pipeline is valid."]

    page.canvas.fit_to_view()
    page.select_node("check_email")
    page.grab().save(str(artifacts / "editor_ecommerce.png"))

    # Ctrl+S on a pipeline never saved asks where, offering the user's pipelines folder and a file
    # named after the pipeline; Enter takes it.
    assert page.has_unsaved_changes() and "•" in page.status.text()
    dialog: dict = {}
    answer_file_dialog(qtbot, None, dialog)
    with qtbot.waitSignal(page.saved, timeout=30_000) as saved_to:
        press(qtbot, page, Qt.Key.Key_S, CTRL)
    assert dialog["title"] == "Save pipeline"
    assert (
        dialog["folder"] == page.engine.pipelines.pipelines_dir
        and dialog["name"] == "e-commerce_order_unification.json"
    )
    target = page.engine.pipelines.pipelines_dir / "e-commerce_order_unification.json"
    assert saved_to.args == [str(target)] and page.path == target
    toast = page.main_window.toasts.toasts[-1]
    assert toast.kind == "success" and "Saved e-commerce_order_unification.json (version 1)" in toast.text
    assert not page.has_unsaved_changes() and "•" not in page.status.text()
    saved = json.loads(target.read_text())
    for got, want in zip(saved["nodes"], expected["nodes"], strict=True):
        assert got == want
    assert without_layout(saved) == without_layout(expected)
    assert set(saved["layout"]) == {n["id"] for n in expected["nodes"]}
    versions = page.engine.workspace.metadata.pipeline_versions(expected["name"])
    assert [v["version"] for v in versions] == [1]
    mine = [p for p in page.engine.pipelines.list() if p["origin"] == "mine"]
    assert [p["path"] for p in mine] == [str(target)]  # the Pipelines page lists it

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
    with qtbot.waitSignal(page.validated, timeout=30_000):  # opening validates at once
        page.load_document(json.loads(ECOMMERCE.read_text()))
    assert page.issues == []
    press(qtbot, page, Qt.Key.Key_0, CTRL)  # fit
    click_node(qtbot, page, "shopify")
    assert page.properties.node_id == "shopify"
    # A typo: the file's extension left out. The check comes after the edit debounce.
    with qtbot.waitSignal(page.validated, timeout=30_000):
        fill(qtbot, page, {"path": "shopify_orders"})
    assert [i["node_id"] for i in page.issues] == ["shopify"]
    assert page.canvas.error_of("shopify")
    assert page.canvas.item("shopify").view.border_color[:3] == (230, 60, 60)
    assert "cannot tell the file format" in page.canvas.item("shopify").view.toolTip()
    (line,) = problem_lines(page)
    assert line.startswith("⚠ [shopify] nodes[0].config: cannot tell the file format")

    click_empty(qtbot, page)
    assert page.canvas.selected_ids() == [] and page.properties.node_id is None
    item = page.problems.item(0)
    qtbot.mouseClick(page.problems.viewport(), LEFT, pos=page.problems.visualItemRect(item).center())
    assert page.canvas.selected_ids() == ["shopify"]
    assert page.properties.node_id == "shopify"
    press(qtbot, page, Qt.Key.Key_Z, CTRL)
    settle(qtbot, page)
    assert page.issues == [] and not page.canvas.error_of("shopify")
    assert problem_lines(page) == ["✓ No problems: the pipeline is valid."]


def test_f5_with_problems_refuses_and_shows_them(editor, qtbot):
    page = editor
    palette_add(qtbot, page, "transform:sort")  # a transform without an input
    settle(qtbot, page)
    assert page.issues
    page.bottom_tabs.setCurrentWidget(page.preview)
    press(qtbot, page, Qt.Key.Key_F5)
    assert not page.runner.running and page.run_action.text() == "Run"
    assert page.bottom_tabs.currentWidget() is page.problems
    toast = page.main_window.toasts.toasts[-1]
    assert toast.kind == "error" and f"Fix the {len(page.issues)} problem(s)" in toast.text


def test_copy_paste_delete_and_undo(editor, qtbot):
    page = editor
    page.load_document(json.loads(ECOMMERCE.read_text()))
    before = page.document.to_dict()
    before_ids = [n["id"] for n in before["nodes"]]
    page.canvas.zoom_to(["map_shopify", "tag_shopify", "union"])
    shift_click_nodes(qtbot, page, ["map_shopify", "tag_shopify"])
    assert sorted(page.canvas.selected_ids()) == ["map_shopify", "tag_shopify"]
    press(qtbot, page, Qt.Key.Key_C, CTRL)
    press(qtbot, page, Qt.Key.Key_V, CTRL)
    pasted = set(page.document.ids()) - set(before_ids)
    assert pasted == {"map_shopify_2", "tag_shopify_2"}
    assert page.document.node("tag_shopify_2")["inputs"] == ["map_shopify_2"]  # the inner link kept
    assert page.document.node("map_shopify_2")["inputs"] == []  # the link from outside dropped
    assert sorted(page.canvas.selected_ids()) == sorted(pasted)
    press(qtbot, page, Qt.Key.Key_Delete)
    assert page.document.ids() == before_ids
    click_node(qtbot, page, "union")
    press(qtbot, page, Qt.Key.Key_Delete)
    assert page.document.node("union") is None and page.canvas.item("union") is None
    assert page.document.node("full_name")["inputs"] == []  # links into the deleted node went too
    for _ in range(3):
        press(qtbot, page, Qt.Key.Key_Z, CTRL)
    assert page.document.to_dict() == before
    # Auto-layout is one step of the history too.
    press(qtbot, page, Qt.Key.Key_L, CTRL)
    assert page.document.get("layout") != before["layout"]
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
    press(qtbot, page, Qt.Key.Key_L, CTRL)  # side by side, the links drawn by mouse below
    drag_connect(qtbot, page, split, "hot", check)
    drag_connect(qtbot, page, check, "rejected", sink)
    assert page.document.node(check)["inputs"] == [f"{split}.hot"]
    assert page.document.node(sink)["inputs"] == [f"{check}.rejected"]
    assert (split, "hot", check, "in") in page.canvas._edges
    # A destination has no outputs and a source no inputs: the canvas offers neither.
    assert page.canvas.item(sink).outputs() == {}
    # A branch renamed in the form renames the port; the link on the old one goes.
    page.canvas.zoom_to([split, check, sink])
    click_node(qtbot, page, split)
    fill(
        qtbot,
        page,
        {"branches": [{"name": "warm", "condition": {"field": "t", "operator": "gt", "value": 30}}]},
    )
    assert list(page.canvas.item(split).outputs()) == ["warm", "default"]
    assert not [e for e in page.canvas._edges if e[0] == split]  # no port "hot" to draw it from

    # Dragging a node moves it: one command, undone by Ctrl+Z.
    old = page.document.position(sink)
    start = node_point(page, sink)
    drag(qtbot, page, start, start + QPoint(60, 40))
    moved = page.document.position(sink)
    assert moved != old and moved[0] > old[0] and moved[1] > old[1]
    assert tuple(page.canvas.item(sink).view.xy_pos) == moved
    assert page.document.undo_stack.undoText().startswith("Move")
    press(qtbot, page, Qt.Key.Key_Z, CTRL)
    assert page.document.position(sink) == old
    assert tuple(page.canvas.item(sink).view.xy_pos) == old


def test_palette_has_categories_and_search_adds_by_enter(editor, qtbot):
    page = editor
    palette = page.palette
    top = [palette.tree.topLevelItem(i).text(0) for i in range(palette.tree.topLevelItemCount())]
    assert top == ["Sources", "Transforms", "Destinations"]
    transforms = palette.tree.topLevelItem(1)
    groups = [transforms.child(i).text(0) for i in range(transforms.childCount())]
    assert groups[:3] == ["Clean", "Calculate", "Validate"] and "Combine" in groups
    sources = palette.tree.topLevelItem(0)
    assert {"File", "OPC UA", "Modbus TCP/RTU"} <= {
        sources.child(i).text(0) for i in range(sources.childCount())
    }

    qtbot.keyClicks(palette.search, "valid")
    assert "transform:field_validation" in palette.visible_keys()
    assert "source:file" not in palette.visible_keys()
    assert palette.tree.topLevelItem(0).isHidden()  # no source matches: the group hides
    qtbot.keyClick(palette.search, Qt.Key.Key_A, CTRL)
    qtbot.keyClicks(palette.search, "split")
    assert palette.visible_keys() == ["transform:split"]
    item = palette.entry("transform:split")
    qtbot.mouseClick(palette.tree.viewport(), LEFT, pos=palette.tree.visualItemRect(item).center())
    qtbot.keyClick(palette.tree, Qt.Key.Key_Return)
    assert [node_key_of(n) for n in page.document.nodes] == ["transform:split"]
    qtbot.keyClick(palette.search, Qt.Key.Key_A, CTRL)
    qtbot.keyClick(palette.search, Qt.Key.Key_Backspace)
    assert len(palette.visible_keys()) == len(palette.keys())


def node_key_of(node: dict) -> str:
    from engine.api.pipelines import node_key

    return node_key(node)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_open_every_template_from_the_menu_without_errors(editor, qtbot, path, artifacts):
    page = editor
    doc = json.loads(path.read_text())
    with opening(qtbot, page):
        pick_template(qtbot, page, doc["name"])
    assert page.document.get("name") == doc["name"]
    assert_drawn_without_problems(page, doc)
    assert page.path is None and not page.has_unsaved_changes()  # saving asks where: a copy
    qtbot.wait(150)  # the minimap frames the pipeline after its 100 ms debounce
    page.grab().save(str(artifacts / f"editor_{path.stem}.png"))
    # opened at a size where the nodes keep their names (NodeGraphQt drops them below 70 px)
    viewer = page.canvas.graph.viewer()
    shown = viewer.mapToScene(viewer.viewport().rect()).boundingRect()
    on_screen = [
        n["id"] for n in doc["nodes"] if shown.intersects(page.canvas.item(n["id"]).view.sceneBoundingRect())
    ]
    assert on_screen and doc["nodes"][0]["id"] in on_screen  # from the sources on
    assert not [n for n in on_screen if page.canvas.item(n).view._proxy_mode], on_screen


def test_open_the_wind_farm_demo_with_ctrl_o_without_errors(editor, qtbot, artifacts):
    page = editor
    dialog: dict = {}
    answer_file_dialog(qtbot, WIND_FARM, dialog)
    with opening(qtbot, page):
        press(qtbot, page, Qt.Key.Key_O, CTRL)
    assert dialog["title"] == "Open pipeline" and dialog["folder"] == page.engine.pipelines.pipelines_dir
    assert_drawn_without_problems(page, json.loads(WIND_FARM.read_text()))
    assert page.path is None  # a shipped example is read-only: Ctrl+S saves a copy
    page.grab().save(str(artifacts / "editor_wind_farm.png"))


def assert_drawn_without_problems(page, doc: dict) -> None:
    """No problem listed or marked, and every node and link of `doc` drawn on the canvas."""
    assert page.issues == [] and page.canvas._errors == {}
    assert problem_lines(page) == ["✓ No problems: the pipeline is valid."]
    assert page.document.ids() == [n["id"] for n in doc["nodes"]]
    scene = page.canvas.graph.viewer().scene()
    for node in doc["nodes"]:
        view = page.canvas.item(node["id"]).view
        assert view.scene() is scene and view.isVisible(), node["id"]
        assert view.name == (node.get("name") or node["id"])
    links = sum(len(n.get("inputs", [])) for n in doc["nodes"])
    assert len(page.canvas._edges) == links
    pipes = [
        p
        for n in doc["nodes"]
        for port in page.canvas.item(n["id"]).output_ports()
        for p in port.view.connected_pipes
    ]
    assert len(pipes) == links and all(p.isVisible() for p in pipes)


def test_linear_form_imports_as_a_graph_and_is_laid_out(editor, qtbot, tmp_path):
    linear = {
        "name": "Linear import",
        "sources": [{"name": "orders", "connector_type": "file", "config": {"path": "orders.csv"}}],
        "transformations": [{"type": "sort", "fields": ["id"]}],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
    }
    path = tmp_path / "linear.json"
    path.write_text(json.dumps(linear))
    answer_file_dialog(qtbot, path, {})
    with qtbot.waitSignal(editor.opened, timeout=30_000):
        click_tool(qtbot, editor, "Open…")
    assert editor.document.ids() == ["orders", "sort_1", "out"]
    assert editor.document.node("sort_1")["inputs"] == ["orders"]
    assert set(editor.document.get("layout")) == {"orders", "sort_1", "out"}
    assert editor.path is None  # saving writes the graph form to a new file, not over the linear one
    assert editor._base_dir() == tmp_path  # its relative paths still read beside it


def test_a_file_that_does_not_open_says_why_in_one_line(editor, qtbot, tmp_path):
    page = editor
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "half a pipeline", "nodes": [')
    before = page.document.to_dict()
    answer_file_dialog(qtbot, broken, {})
    press(qtbot, page, Qt.Key.Key_O, CTRL)
    qtbot.waitUntil(lambda: any(t.kind == "error" for t in page.main_window.toasts.toasts), timeout=30_000)
    (toast,) = [t for t in page.main_window.toasts.toasts if t.kind == "error"]
    assert toast.text == "Cannot open broken.json: invalid JSON at line 1, column 39: Expecting value"
    assert page.document.to_dict() == before and not page.loading.active


def test_leaving_unsaved_changes_asks_first(editor, qtbot):
    page = editor
    window = page.main_window
    assert not page.has_unsaved_changes()
    source = palette_add(qtbot, page, "source:file")
    assert page.has_unsaved_changes() and "•" in page.status.text()
    asked: list[str] = []

    # A template over unsaved work: Cancel keeps the work.
    answer_confirm(qtbot, "ConfirmReject", asked)
    pick_template(qtbot, page, "Multi-source union")
    assert asked == [
        "Discard changes?: “Untitled pipeline” has unsaved changes. Discard them? [Discard changes]"
    ]
    qtbot.wait(100)
    assert page.document.ids() == [source] and page.has_unsaved_changes()

    # New and Open ask too.
    answer_confirm(qtbot, "ConfirmReject", asked)
    click_tool(qtbot, page, "New")
    answer_confirm(qtbot, "ConfirmReject", asked)
    press(qtbot, page, Qt.Key.Key_O, CTRL)  # no file dialog: the answer was Cancel
    assert len(asked) == 3 and page.document.ids() == [source]

    # Closing the window asks; Cancel keeps it open.
    answer_confirm(qtbot, "ConfirmReject", asked)
    window.close()
    assert asked[-1].startswith("Unsaved changes: Editor has unsaved changes")
    assert window.isVisible() and page.document.ids() == [source]

    # Discard: the template replaces the work.
    answer_confirm(qtbot, "ConfirmAccept", asked)
    with opening(qtbot, page):
        pick_template(qtbot, page, "Multi-source union")
    assert len(asked) == 5 and page.document.get("name") == "Multi-source union"
    assert not page.has_unsaved_changes()

    # Nothing unsaved: New asks nothing.
    click_tool(qtbot, page, "New")
    assert len(asked) == 5 and page.document.nodes == [] and not page.has_unsaved_changes()


def ecommerce_copy(tmp_path: Path) -> Path:
    """The user guide's pipeline beside its example exports (its paths are relative to the spec)."""
    for f in (ROOT / "resources" / "examples" / "ecommerce").iterdir():
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(ECOMMERCE, tmp_path / ECOMMERCE.name)
    return tmp_path / ECOMMERCE.name


def open_file(qtbot, page, path: Path) -> None:
    """Ctrl+O, the path typed into the dialog; back when the pipeline is open and checked."""
    answer_file_dialog(qtbot, path, {})
    with opening(qtbot, page):
        press(qtbot, page, Qt.Key.Key_O, CTRL)
    assert page.path == path


def historian_tables(page) -> set[str]:
    return {o["name"] for o in page.engine.call(page.engine.data.objects).result(10)}


def test_preview_a_node_then_run_with_f5(editor, qtbot, tmp_path, artifacts):
    page = editor
    page.main_window.resize(1400, 900)
    spec = ecommerce_copy(tmp_path)
    open_file(qtbot, page, spec)
    page.canvas.zoom_to(["drop_parts", "check_email", "sorted", "historian", "rejected", "unified_json"])
    with qtbot.waitSignal(page.preview.finished, timeout=30_000) as preview:
        click_node(qtbot, page, "check_email")  # selecting a node previews it (debounced)
    result = preview.args[0]
    rows = result.output("check_email").rows
    assert rows.height == 12 and "customer_email" in rows.columns and "channel" in rows.columns
    assert result.rejected("check_email").rows_total == 3  # the user guide's three bad addresses
    assert page.preview.rows_table.model().rowCount() == rows.height
    assert page.preview.title.text().startswith("check_email · 12 rows")
    assert page.preview.tabs.tabText(1) == "Rejected (3)"
    # the links carry the preview's counts
    assert page.canvas.edge_labels("drop_parts") == ["15 rows"]
    assert page.canvas.edge_labels("check_email", "rejected") == ["3 rows"]
    assert page.canvas.edge_labels("check_email") == ["12 rows"]
    # a dry run: no destination wrote anything
    assert (
        not (tmp_path / "unified_orders.json").exists() and not (tmp_path / "rejected_orders.json").exists()
    )
    assert "orders" not in historian_tables(page)
    assert page.engine.workspace.metadata.runs() == []
    page.bottom_tabs.setCurrentWidget(page.preview)
    qtbot.wait(50)
    page.main_window.grab().save(str(artifacts / "editor_preview.png"))

    with qtbot.waitSignal(page.runner.finished, timeout=30_000) as run:
        press(qtbot, page, Qt.Key.Key_F5)
    record = run.args[0]
    assert record["status"] in ("success", "warning")
    assert record["rows_rejected"] == 3
    assert (tmp_path / "unified_orders.json").exists() and (tmp_path / "rejected_orders.json").exists()
    assert "orders" in historian_tables(page)
    runs = page.engine.workspace.metadata.runs()
    assert [r["run_id"] for r in runs] == [record["run_id"]]


def test_screenshot_for_the_docs(editor, qtbot, artifacts):
    page = editor
    page.main_window.resize(1400, 860)
    with opening(qtbot, page):
        pick_template(qtbot, page, json.loads(TEMPLATES[0].read_text())["name"])
    page.select_node("check_email")
    qtbot.wait(150)  # the minimap frames the pipeline after its 100 ms debounce
    page.main_window.grab().save(str(artifacts / "editor_window.png"))
    assert (artifacts / "editor_window.png").stat().st_size > 10_000


def test_secret_fields_offer_the_stored_secret_names(window, engine, qtbot):
    engine.connectors.set_secret("plc_password", "s3cret")
    page = window.show_page("editor")  # on_show fetches the names in the background
    qtbot.waitUntil(lambda: page._secret_names == ["plc_password"], timeout=30_000)
    plc = palette_add(qtbot, page, "source:opc_ua")
    secret = page.properties.form.field("password")
    secret = getattr(secret, "inner", secret)
    assert type(secret).__name__ == "SecretEditor" and secret.mode.isChecked()  # a picker, not text
    assert [secret.picker.itemText(i) for i in range(secret.picker.count())] == ["plc_password"]
    fill(qtbot, page, {"password": {"secret": "plc_password"}})
    assert page.document.node(plc)["config"]["password"] == {"secret": "plc_password"}
    type_into(qtbot, page.properties.id_edit, "plc")
    assert page.properties.title.text().endswith("plc")
    assert page.document.node("plc")["config"]["password"] == {"secret": "plc_password"}


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


def click_link(qtbot, label) -> None:
    """Click the link in a rich-text label where the user sees it: the first point, from the bottom
    up, where the mouse pointer turns into a hand."""
    rect = label.contentsRect()
    for y in range(rect.bottom() - 2, rect.top(), -3):
        for x in range(rect.left() + 2, rect.left() + 120, 6):
            qtbot.mouseMove(label, QPoint(x, y))
            if label.cursor().shape() == Qt.CursorShape.PointingHandCursor:
                qtbot.mouseClick(label, LEFT, pos=QPoint(x, y))
                return
    raise AssertionError(f"no link to click in {label.text()!r}")


def test_f5_draws_every_nodes_status_and_rows_and_the_toast_opens_the_run(editor, qtbot, tmp_path, artifacts):
    page = editor
    window = page.main_window
    window.resize(1400, 900)
    open_file(qtbot, page, ecommerce_copy(tmp_path))
    page.canvas.fit_to_view()
    assert page.run_action.text() == "Run"
    drawn_running: dict[str, str] = {}

    def on_progress(node: str, stats: dict) -> None:  # what the canvas shows while the run goes
        if stats["status"] == "running":
            drawn_running[node] = page.canvas.badge_text(node)

    page.runner.node_progress.connect(on_progress)

    with qtbot.waitSignal(page.runner.finished, timeout=30_000) as run:
        press(qtbot, page, Qt.Key.Key_F5)
        assert page.run_action.text() == "Stop" and "running (Shift+F5 cancels)" in page.status.text()
    record = run.args[0]
    assert record["status"] == "warning" and page.run_action.text() == "Run"
    assert drawn_running and all(text.startswith("● running · ") for text in drawn_running.values())

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

    (toast,) = [t for t in window.toasts.toasts if "Open run" in t.text]
    assert toast.kind == "warning" and "Run warning: 15 rows in, 12 out, 3 rejected" in toast.text
    for other in list(window.toasts.toasts):
        if other is not toast:
            other.dismiss()
    page.canvas.zoom_to(["status", "drop_parts", "check_email", "sorted", "historian", "rejected"])
    with qtbot.waitSignal(page.preview.finished, timeout=30_000):
        click_node(qtbot, page, "check_email")  # the marks stay while a node is previewed
    page.bottom_tabs.setCurrentWidget(page.preview)
    assert page.canvas.badge_text("check_email").startswith("✓ success · 12 rows")
    qtbot.wait(50)
    window.grab().save(str(artifacts / "editor_run.png"))

    # "Open run" in the toast shows the run on the Runs page, with its detail
    click_link(qtbot, toast.label)
    assert window.current_page_name() == "runs"
    runs = window.pages["runs"]
    qtbot.waitUntil(lambda: runs.detail is not None, timeout=30_000)
    assert runs.selected_run_id() == record["run_id"] == runs.detail["record"]["run_id"]
    assert runs.nodes_table.rowCount() == len(stats)

    # back in the editor, a new run clears the old marks before it draws its own
    window.show_page("editor")
    cleared: list = []
    page.runner.running_changed.connect(
        lambda running: (
            running and cleared.append((page.canvas.badge_text("union"), page.canvas.progress_of("union")))
        )
    )
    with qtbot.waitSignal(page.runner.finished, timeout=30_000):
        press(qtbot, page, Qt.Key.Key_F5)
    assert cleared == [(None, None)]


def test_cancel_a_run_from_the_toolbar(editor, qtbot, tmp_path):
    page = editor
    spec = ecommerce_copy(tmp_path)
    open_file(qtbot, page, spec)
    with qtbot.waitSignal(page.runner.finished, timeout=30_000) as run:
        press(qtbot, page, Qt.Key.Key_F5)
        assert tool_button(page, "Stop").toolTip() == "Cancel the run (Shift+F5)"
        click_tool(qtbot, page, "Stop")
    record = run.args[0]
    assert record["status"] == "cancelled" and page.run_action.text() == "Run"
    toast = page.main_window.toasts.toasts[-1]
    assert toast.kind == "info" and toast.text.startswith("Run cancelled") and "Open run" in toast.text
    assert not (tmp_path / "unified_orders.json").exists()
    assert [r["status"] for r in page.engine.workspace.metadata.runs()] == ["cancelled"]
    # Shift+F5 cancels too
    with qtbot.waitSignal(page.runner.finished, timeout=30_000) as run:
        press(qtbot, page, Qt.Key.Key_F5)
        press(qtbot, page, Qt.Key.Key_F5, SHIFT)
    assert run.args[0]["status"] == "cancelled"


def test_a_real_time_template_streams_from_a_simulator_until_stopped(editor, qtbot, opcua_sim, artifacts):
    """The OPC UA template pointed at a running server: F5 starts the stream, the nodes show its
    counts, Stop ends it after its last commit."""
    page = editor
    page.main_window.resize(1400, 860)
    with opening(qtbot, page):
        pick_template(qtbot, page, "OPC UA to historian")
    press(qtbot, page, Qt.Key.Key_0, CTRL)  # fit
    click_node(qtbot, page, "plc")
    with qtbot.waitSignal(page.validated, timeout=30_000):
        fill(qtbot, page, {"endpoint": opcua_sim.endpoint})
    assert page.issues == []

    with qtbot.waitSignal(page.runner.stream_stats, timeout=30_000):
        press(qtbot, page, Qt.Key.Key_F5)
        assert page.runner.streaming and page.run_action.text() == "Stop"
        assert "streaming (Shift+F5 stops)" in page.status.text()
        assert tool_button(page, "Stop").toolTip() == "Stop the stream (Shift+F5)"
    qtbot.waitUntil(lambda: bool((page.canvas.progress_of("historian") or {}).get("rows_in")), timeout=30_000)
    assert page.canvas.badge_text("plc").startswith("● running")
    page.main_window.grab().save(str(artifacts / "editor_template_streaming.png"))

    with qtbot.waitSignal(page.runner.finished, timeout=30_000) as run:
        click_tool(qtbot, page, "Stop")
    record = run.args[0]
    assert record["status"] == "cancelled" and record["rows_out"] > 0
    assert not page.runner.streaming and page.run_action.text() == "Run"
    assert "streaming" not in page.status.text()
    # the historian kept the server's tags
    tags = [t["tag"] for t in page.engine.call(lambda: page.engine.live.tags(wait=True)).result(10)]
    assert len(tags) == opcua_sim.tag_count
    stored = page.engine.live.history(tags, None, None)
    assert set(stored["tag"]) == set(tags) and stored["count"].sum() > 0


def double_click_row(qtbot, tree, name: str) -> None:
    (item,) = [
        tree.topLevelItem(i) for i in range(tree.topLevelItemCount()) if tree.topLevelItem(i).text(0) == name
    ]
    pos = tree.visualItemRect(item).center()
    qtbot.mouseClick(tree.viewport(), LEFT, pos=pos)
    qtbot.mouseDClick(tree.viewport(), LEFT, pos=pos)


def test_a_template_from_the_pipelines_page_runs_and_saves_as_a_copy(editor, qtbot, artifacts):
    """A template opened from the Pipelines page reads its relative paths in the user's pipelines
    folder; F5 runs it unsaved; Ctrl+S saves a copy there (the template stays as shipped), and
    the Pipelines page lists the copy with its last run."""
    page = editor
    window = page.main_window
    window.resize(1100, 680)
    folder = page.engine.pipelines.pipelines_dir
    (folder / "data").mkdir(parents=True)
    for site in "abc":  # the plant's three exports, where the template expects them
        rows = [f"2026-03-0{day}T0{site_n}:00:00,{day * 10 + site_n}" for day in (1, 2) for site_n in (1, 2)]
        (folder / "data" / f"site_{site}.csv").write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    template = ROOT / "resources" / "templates" / "multi_source_union.json"
    shipped_text = template.read_text()

    pipelines = window.show_page("pipelines")
    qtbot.waitUntil(lambda: pipelines.shipped.topLevelItemCount() > 0, timeout=30_000)
    with opening(qtbot, page):
        double_click_row(qtbot, pipelines.shipped, "Multi-source union")
    assert window.current_page_name() == "editor" and page.issues == []
    assert page.path is None and "not saved yet" in page.status.text()

    with qtbot.waitSignal(page.runner.finished, timeout=30_000) as run:
        press(qtbot, page, Qt.Key.Key_F5)
    record = run.args[0]
    assert (record["status"], record["rows_in"], record["rows_out"]) == ("success", 12, 12)
    assert json.loads((folder / "data" / "combined.json").read_text())[0]["site"] == "A"

    dialog: dict = {}
    answer_file_dialog(qtbot, None, dialog)
    with qtbot.waitSignal(page.saved, timeout=30_000):
        press(qtbot, page, Qt.Key.Key_S, CTRL)
    assert (dialog["folder"], dialog["name"]) == (folder, "multi-source_union.json")
    assert page.path == folder / "multi-source_union.json" and template.read_text() == shipped_text

    window.show_page("pipelines")
    qtbot.waitUntil(lambda: pipelines.mine.topLevelItemCount() == 1, timeout=30_000)
    row = pipelines.mine.topLevelItem(0)
    assert [row.text(i) for i in range(3)] == ["Multi-source union", "multi-source_union.json", "manual"]
    assert row.text(3).startswith("✓ success · ")
    for toast in list(window.toasts.toasts):
        toast.dismiss()
    qtbot.wait(50)
    window.grab().save(str(artifacts / "pipelines.png"))


def test_the_minimap_shows_the_pipeline_and_a_click_centres_the_canvas(editor, qtbot, artifacts):
    page = editor
    page.main_window.resize(1400, 860)
    with qtbot.waitSignal(page.opened, timeout=30_000):
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
