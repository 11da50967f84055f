"""Connectors page as a user drives it (clicks, typing, combo popups, dialog buttons): the empty state,
a form per type, Test connection against real peers (the historian, an OPC UA simulator, a Modbus
simulator) and against a refused port and a bad endpoint (a one-line error in the badge), the tag
browser picking nodes, save, edit, rename, replace, unsaved-changes prompts and delete."""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit, QListWidget, QPushButton

from tests.engine.test_api_connectors_data import opcua_browse_classmethod
from tests.net import closed_port
from tests.ui.gestures import click, click_in_modal, pick, type_over

DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"
LEFT = Qt.MouseButton.LeftButton


# ---- gestures ---------------------------------------------------------------------------------------
def click_row(qtbot, listing: QListWidget, text: str) -> None:
    """Click the list row whose first line is `text`."""
    rows = [listing.item(i) for i in range(listing.count())]
    item = next((r for r in rows if r.text().splitlines()[0] == text), None)
    assert item is not None, f"no row {text!r} in {[r.text() for r in rows]}"
    listing.scrollToItem(item)
    qtbot.mouseClick(listing.viewport(), LEFT, pos=listing.visualItemRect(item).center())


def listed(page) -> list[str]:
    return [page.list.item(i).text().splitlines()[0] for i in range(page.list.count())]


# ---- page helpers -------------------------------------------------------------------------------------
def open_page(qtbot, window):
    page = window.show_page("connectors")
    qtbot.waitUntil(lambda: not page.list_loading.active, timeout=30_000)
    return page


def choose(qtbot, page, type_title: str, role: str) -> None:
    pick(qtbot, page.type_combo, type_title)
    pick(qtbot, page.role_combo, role)


def text_field(page, path: str) -> QLineEdit:
    return page.form.field(path).text


def add_list_item(qtbot, page, path: str) -> None:
    editor = page.form.field(path)
    before = len(editor.rows)
    page.form_area.ensureWidgetVisible(editor.add_button)
    click(qtbot, editor.add_button)
    assert len(editor.rows) == before + 1
    qtbot.waitUntil(editor.rows[-1][0].isVisible, timeout=30_000)  # Qt shows a new row on the next pass


def run_check(qtbot, page, timeout=30000) -> tuple[str, str]:
    """Click Test connection: the badge says "Testing…" at once, then the result."""
    click(qtbot, page.test_button)
    assert page.badge.property("kind") == "busy" and page.badge.text() == "Testing…"
    assert not page.test_button.isEnabled()  # no second test while one runs
    qtbot.waitUntil(lambda: page.badge.property("kind") in ("ok", "error"), timeout=timeout)
    assert page.badge.isVisible() and page.test_button.isEnabled()
    return page.badge.property("kind"), page.badge.text()


def save(qtbot, page) -> None:
    click(qtbot, page.save_button)
    qtbot.waitUntil(lambda: not page.loading.active and not page.list_loading.active, timeout=30_000)


def assert_one_line_error(text: str) -> None:
    assert text.startswith("✕ ") and "\n" not in text and "Traceback" not in text, text


# ---- tests --------------------------------------------------------------------------------------------
def test_empty_state_then_save_and_test(qtbot, window):
    page = open_page(qtbot, window)
    assert page.left_stack.currentWidget() is page.empty
    assert page.empty.button.text() == "New connector"
    click(qtbot, page.empty.button)
    assert not page.delete_button.isVisible()  # a new connector has nothing to delete yet
    choose(qtbot, page, "Tag historian", "destination")
    qtbot.keyClicks(page.name, "plant_historian")
    kind, text = run_check(qtbot, page)
    assert kind == "ok" and text.startswith("✓ Connected")
    assert page.unsaved.isVisible() and page.has_unsaved_changes()
    click(qtbot, page.save_button)
    assert page.loading.active  # saving shows its overlay until the engine answers
    qtbot.waitUntil(lambda: listed(page) == ["plant_historian"], timeout=30_000)
    assert page.left_stack.currentWidget() is page.list
    assert page.engine.connectors.get("plant_historian")["role"] == "destination"
    assert not page.unsaved.isVisible() and not page.has_unsaved_changes()
    assert page.delete_button.isVisible()


def test_failure_shows_a_refused_port_and_a_bad_endpoint(qtbot, window):
    page = open_page(qtbot, window)
    choose(qtbot, page, "OPC UA", "source")
    port = closed_port()
    qtbot.keyClicks(text_field(page, "endpoint"), f"opc.tcp://127.0.0.1:{port}")
    add_list_item(qtbot, page, "nodes")
    qtbot.keyClicks(text_field(page, "nodes.0"), "ns=2;s=Turbine01.Power")
    kind, text = run_check(qtbot, page)
    assert kind == "error"
    assert_one_line_error(text)
    assert f"127.0.0.1:{port}" in text and "refused" in text

    type_over(qtbot, text_field(page, "endpoint"), "http://127.0.0.1:4840")
    assert not page.badge.isVisible()  # the last result was for the old endpoint
    kind, text = run_check(qtbot, page)
    assert kind == "error"
    assert_one_line_error(text)
    assert text == "✕ endpoint: the endpoint must start with opc.tcp:// (e.g. opc.tcp://127.0.0.1:4840)"


def test_modbus_success_against_the_simulator_then_failure(qtbot, window):
    from protocols.modbus.simulator import ModbusSimulator

    page = open_page(qtbot, window)
    choose(qtbot, page, "Modbus TCP/RTU", "source")
    qtbot.keyClicks(page.name, "revenue_meters")
    add_list_item(qtbot, page, "devices")
    device = page.form.field("devices.0")
    qtbot.keyClicks(device.fields["name"].text, "meter1")
    add_list_item(qtbot, page, "devices.0.tags")
    tag = page.form.field("devices.0.tags.0")
    qtbot.keyClicks(tag.fields["name"].text, "power_kw")
    pick(qtbot, tag.fields["type"].combo, "float32")
    with ModbusSimulator(meters=1) as sim:
        type_over(qtbot, device.fields["port"].spin, str(sim.port))
        kind, text = run_check(qtbot, page, timeout=30_000)
        assert kind == "ok", text
        config = page.form.value()
        assert config["devices"][0]["port"] == sim.port
        assert config["devices"][0]["tags"] == [{"name": "power_kw", "address": 0, "type": "float32"}]
    port = closed_port()
    type_over(qtbot, device.fields["port"].spin, str(port))
    kind, text = run_check(qtbot, page, timeout=30_000)
    assert kind == "error"
    assert_one_line_error(text)
    assert f"cannot connect to 127.0.0.1:{port}" in text


def test_opcua_browse_pick_test_and_save(qtbot, window, artifacts):
    from protocols.opcua.simulator import OpcUaSimulator

    opcua_browse_classmethod(None)
    page = open_page(qtbot, window)
    with OpcUaSimulator(turbines=2, interval_s=0.5) as sim:
        choose(qtbot, page, "OPC UA", "source")
        qtbot.keyClicks(page.name, "windfarm")
        qtbot.keyClicks(text_field(page, "endpoint"), sim.endpoint)
        click(qtbot, page.browse_button)
        tree = page.browser.tree
        assert page.browser.status.text() == "Loading…"
        qtbot.waitUntil(lambda: tree.topLevelItemCount() > 0, timeout=30000)

        def expand(item) -> None:  # a double click opens a branch, as in any tree
            tree.scrollToItem(item)
            rect = tree.visualItemRect(item)
            qtbot.mouseClick(tree.viewport(), LEFT, pos=rect.center())
            qtbot.mouseDClick(tree.viewport(), LEFT, pos=rect.center())

        top = [tree.topLevelItem(i) for i in range(tree.topLevelItemCount())]
        farm = next(item for item in top if "WindFarm" in item.text(0))
        expand(farm)
        qtbot.waitUntil(lambda: farm.childCount() == 2 and farm.child(0).text(1) != "", timeout=30000)
        turbine = farm.child(0)
        expand(turbine)
        qtbot.waitUntil(lambda: turbine.childCount() > 1, timeout=30000)
        picked = [turbine.child(0).text(1), turbine.child(1).text(1)]
        for i in range(2):  # select the tag's name and press Space: its box is ticked
            rect = tree.visualRect(tree.indexFromItem(turbine.child(i), 0))
            qtbot.mouseClick(tree.viewport(), LEFT, pos=rect.center())
            qtbot.keyClick(tree, Qt.Key.Key_Space)
            assert turbine.child(i).checkState(0) == Qt.CheckState.Checked
        page.browser.grab().save(str(artifacts / "connectors_browser.png"))
        add = next(b for b in page.browser.findChildren(QPushButton) if b.text() == "Add checked nodes")
        click(qtbot, add)
        assert not page.browser.isVisible()
        assert page.form.value()["nodes"] == picked
        assert page.unsaved.isVisible()
        kind, text = run_check(qtbot, page)
        assert kind == "ok", text
        save(qtbot, page)
        qtbot.waitUntil(lambda: listed(page) == ["windfarm"], timeout=30_000)
        for toast in list(window.toasts.toasts):  # the screenshot shows the page, not the toasts
            toast.dismiss()
        qtbot.wait(50)
        window.grab().save(str(artifacts / "connectors.png"))
        saved = page.engine.connectors.get("windfarm")["config"]
        assert saved["nodes"] == picked and saved["endpoint"] == sim.endpoint


def test_browse_needs_an_endpoint(qtbot, window):
    page = open_page(qtbot, window)
    choose(qtbot, page, "OPC UA", "source")
    click(qtbot, page.browse_button)
    assert page.browser is None
    assert page.problems.isVisible()
    assert page.problems.text() == "Cannot browse: endpoint: enter the server's endpoint"
    assert page.form.editor.error_labels["endpoint"].isVisible()


def test_save_marks_the_wrong_fields_and_keeps_nothing(qtbot, window):
    page = open_page(qtbot, window)
    choose(qtbot, page, "OPC UA", "source")
    click(qtbot, page.save_button)
    assert page.problems.text() == "Not saved: Give the connector a name"
    qtbot.keyClicks(page.name, "plant")
    qtbot.keyClicks(text_field(page, "endpoint"), "plc-01:4840")
    click(qtbot, page.save_button)
    error = page.form.editor.error_labels["endpoint"]
    assert error.isVisible() and "opc.tcp://" in error.text()
    assert page.problems.text().startswith("Not saved: endpoint: the endpoint must start with opc.tcp://")
    qtbot.wait(100)
    assert page.engine.connectors.list() == [] and page.has_unsaved_changes()

    # a password typed in clear (the Secret key turned off) is refused on its field
    password = page.form.field("password")
    page.form_area.ensureWidgetVisible(password.mode)
    click(qtbot, password.mode)
    qtbot.keyClicks(password.text, "hunter2")
    click(qtbot, page.save_button)
    assert page.form.editor.error_labels["password"].isVisible()
    assert "password: a secret in clear" in page.problems.text()
    click(qtbot, password.mode)  # back to a secret reference, left empty
    assert page.form.value()["password"] is None

    type_over(qtbot, text_field(page, "endpoint"), "opc.tcp://plc-01:4840")
    click(qtbot, page.save_button)  # a problem of the whole config is listed, not put on a field
    assert page.problems.text() == "Not saved: give `nodes` or `browse_root` (or both)"
    assert not error.isVisible()
    add_list_item(qtbot, page, "nodes")
    qtbot.keyClicks(text_field(page, "nodes.0"), "ns=2;s=Line1.Speed")
    save(qtbot, page)
    assert not page.problems.isVisible() and not error.isVisible()
    assert page.engine.connectors.get("plant")["config"] == {
        "endpoint": "opc.tcp://plc-01:4840",
        "nodes": ["ns=2;s=Line1.Speed"],
        "password": None,
    }


def new_duckdb_destination(qtbot, page, name: str, table: str) -> None:
    click(qtbot, page.findChild(QPushButton, "new_connector"))
    choose(qtbot, page, "DuckDB", "destination")
    qtbot.keyClicks(page.name, name)
    qtbot.keyClicks(text_field(page, "table"), table)
    save(qtbot, page)


def test_edit_rename_replace_unsaved_and_delete(qtbot, window):
    page = open_page(qtbot, window)
    new_duckdb_destination(qtbot, page, "line_a", "a")
    new_duckdb_destination(qtbot, page, "line_b", "b")
    assert listed(page) == ["line_a", "line_b"]

    # open a saved one: its settings come back; an edit is marked unsaved
    click_row(qtbot, page.list, "line_a")
    assert page.name.text() == "line_a" and text_field(page, "table").text() == "a"
    assert not page.unsaved.isVisible()
    type_over(qtbot, text_field(page, "table"), "a2")
    assert page.unsaved.isVisible() and window.unsaved_pages() == ["connectors"]

    # leaving for another connector asks; Cancel keeps the edit and the selection
    click_in_modal("ConfirmReject")
    click_row(qtbot, page.list, "line_b")
    assert page.name.text() == "line_a" and text_field(page, "table").text() == "a2"
    assert page.list.currentItem().text().startswith("line_a")
    save(qtbot, page)
    assert page.engine.connectors.get("line_a")["config"] == {"table": "a2"}
    assert not page.has_unsaved_changes()

    # saving under a new name renames: the old entry goes
    type_over(qtbot, page.name, "line_a_east")
    assert page.unsaved.isVisible()
    save(qtbot, page)
    qtbot.waitUntil(lambda: listed(page) == ["line_a_east", "line_b"], timeout=30_000)
    assert page.engine.connectors.get("line_a") is None
    assert page.engine.connectors.get("line_a_east")["config"] == {"table": "a2"}
    assert any("Renamed connector 'line_a' to 'line_a_east'" in t.text for t in window.toasts.toasts)

    # saving over another connector's name asks first; Cancel changes nothing
    type_over(qtbot, page.name, "line_b")
    click_in_modal("ConfirmReject")
    click(qtbot, page.save_button)
    qtbot.wait(100)
    assert page.engine.connectors.get("line_b")["config"] == {"table": "b"}
    assert listed(page) == ["line_a_east", "line_b"]

    # New connector with edits pending asks; Discard drops them
    click_in_modal("ConfirmAccept")
    click(qtbot, page.findChild(QPushButton, "new_connector"))
    assert page.name.text() == "" and page.current is None and not page.has_unsaved_changes()
    assert page.engine.connectors.get("line_a_east") is not None

    # another connector picked with edits pending: Discard drops them and opens it
    click_row(qtbot, page.list, "line_b")
    type_over(qtbot, text_field(page, "table"), "b2")
    click_in_modal("ConfirmAccept")
    click_row(qtbot, page.list, "line_a_east")
    assert page.name.text() == "line_a_east" and text_field(page, "table").text() == "a2"
    assert not page.has_unsaved_changes()
    assert page.engine.connectors.get("line_b")["config"] == {"table": "b"}

    # delete asks; Cancel keeps it, Delete removes it
    click_row(qtbot, page.list, "line_b")
    click_in_modal("ConfirmReject")
    click(qtbot, page.delete_button)
    assert page.engine.connectors.get("line_b") is not None
    click_in_modal("ConfirmAccept")
    click(qtbot, page.delete_button)
    qtbot.waitUntil(lambda: listed(page) == ["line_a_east"], timeout=30_000)
    assert page.engine.connectors.get("line_b") is None
    assert page.name.text() == "" and not page.delete_button.isVisible()


def test_secret_field_offers_stored_names(qtbot, window):
    window.engine.workspace.metadata.note_secret_name("plc_password")
    page = open_page(qtbot, window)
    qtbot.waitUntil(lambda: "plc_password" in page.secret_cache, timeout=30_000)
    choose(qtbot, page, "OPC UA", "source")
    secret = page.form.field("password")
    assert secret.picker.isVisible() and not secret.text.isVisible()  # a password is a secret reference
    page.form_area.ensureWidgetVisible(secret.picker)
    pick(qtbot, secret.picker, "plc_password")
    assert page.form.value()["password"] == {"secret": "plc_password"}


def _keep(artifacts, name):
    src = artifacts / f"{name}.png"
    if src.exists():
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, DOCS / f"{name}.png")
