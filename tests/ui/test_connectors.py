"""Connectors page as a user drives it: empty state, a form per type, Test connection against the
historian (success), a closed port (failure with the error text) and a live OPC UA simulator, the
tag browser picking nodes, save and delete."""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit

from tests.engine.test_api_connectors_data import closed_port, opcua_browse_classmethod

DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"


def open_page(qtbot, window):
    page = window.show_page("connectors")
    qtbot.waitUntil(lambda: not page.list_loading.active, timeout=5000)
    return page


def choose(page, connector_type, role):
    page.type_combo.setCurrentIndex(page.type_combo.findData(connector_type))
    page.role_combo.setCurrentIndex(page.role_combo.findData(role))


def badge_settles(qtbot, page, timeout=30000):
    qtbot.waitUntil(lambda: page.badge.property("kind") in ("ok", "error"), timeout=timeout)
    return page.badge.property("kind"), page.badge.text()


def test_empty_state_then_save_and_test(qtbot, window, artifacts):
    page = open_page(qtbot, window)
    assert page.left_stack.currentWidget() is page.empty
    qtbot.mouseClick(page.empty.button, Qt.MouseButton.LeftButton)
    choose(page, "historian", "destination")
    qtbot.keyClicks(page.name, "plant_historian")
    qtbot.mouseClick(page.test_button, Qt.MouseButton.LeftButton)
    kind, text = badge_settles(qtbot, page)
    assert kind == "ok" and "Connected" in text
    qtbot.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.list.count() == 1, timeout=5000)
    assert page.left_stack.currentWidget() is page.list
    assert page.engine.get_connector("plant_historian")["role"] == "destination"


def test_failure_shows_the_error_text(qtbot, window):
    page = open_page(qtbot, window)
    choose(page, "opc_ua", "source")
    port = closed_port()
    endpoint = page.form.field("endpoint").findChild(QLineEdit)
    qtbot.keyClicks(endpoint, f"opc.tcp://127.0.0.1:{port}")
    page.form.set_value({**page.form.value(), "nodes": ["ns=2;s=Turbine01.Power"]})
    qtbot.mouseClick(page.test_button, Qt.MouseButton.LeftButton)
    kind, text = badge_settles(qtbot, page)
    assert kind == "error" and str(port) in text


def test_opcua_success_browse_pick_save_delete(qtbot, window, artifacts, monkeypatch):
    from protocols.opcua.simulator import OpcUaSimulator

    opcua_browse_classmethod(monkeypatch)
    page = open_page(qtbot, window)
    with OpcUaSimulator(turbines=2, interval_s=0.5) as sim:
        choose(page, "opc_ua", "source")
        qtbot.keyClicks(page.name, "windfarm")
        qtbot.keyClicks(page.form.field("endpoint").findChild(QLineEdit), sim.endpoint)
        assert page.browse_button.isVisible()
        qtbot.mouseClick(page.browse_button, Qt.MouseButton.LeftButton)
        tree = page.browser.tree
        qtbot.waitUntil(lambda: tree.topLevelItemCount() > 0, timeout=30000)
        farm = next(
            tree.topLevelItem(i)
            for i in range(tree.topLevelItemCount())
            if "WindFarm" in tree.topLevelItem(i).text(0)
        )
        farm.setExpanded(True)
        qtbot.waitUntil(lambda: farm.childCount() == 2 and farm.child(0).text(1) != "", timeout=30000)
        turbine = farm.child(0)
        turbine.setExpanded(True)
        qtbot.waitUntil(lambda: turbine.childCount() > 1, timeout=30000)
        picked = [turbine.child(0).text(1), turbine.child(1).text(1)]
        for i in range(2):
            turbine.child(i).setCheckState(0, Qt.CheckState.Checked)
        page.browser.grab().save(str(artifacts / "connectors_browser.png"))
        page.browser.accept()
        assert page.form.value()["nodes"] == picked
        qtbot.mouseClick(page.test_button, Qt.MouseButton.LeftButton)
        kind, text = badge_settles(qtbot, page)
        assert kind == "ok", text
        qtbot.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: page.list.count() == 1, timeout=5000)
        window.grab().save(str(artifacts / "connectors.png"))
        assert page.engine.get_connector("windfarm")["config"]["nodes"] == picked

    asked = []
    monkeypatch.setattr(window, "confirm", lambda *a, **k: asked.append(a) or True)
    qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.left_stack.currentWidget() is page.empty, timeout=5000)
    assert asked and page.engine.list_connectors() == []


def test_secret_field_offers_stored_names(qtbot, window):
    window.engine.workspace.metadata.note_secret_name("plc_password")
    page = open_page(qtbot, window)
    qtbot.waitUntil(lambda: "plc_password" in page.secret_cache, timeout=5000)
    choose(page, "opc_ua", "source")
    secret = page.form.field("password")
    secret.refresh_names()
    assert secret.picker.findText("plc_password") >= 0
    secret.picker.setCurrentText("plc_password")
    assert page.form.value()["password"] == {"secret": "plc_password"}


def _keep(artifacts, name):
    src = artifacts / f"{name}.png"
    if src.exists():
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, DOCS / f"{name}.png")
