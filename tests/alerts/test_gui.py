"""The desktop app's alerts, driven as a user would (offscreen Qt): a failing run raises the rule's
alert, the status bar's badge shows it, a click opens the list, the user selects the alert, writes
a note and clicks Acknowledge; the store says who and the note. A screenshot goes to tests/artifacts."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from PySide6.QtCore import Qt

from tests.pipelines import csv_into_duckdb
from tests.ui.conftest import (  # noqa: F401 (fixtures)
    _collect_on_the_qt_thread,
    _protocols_registered,
    artifacts,
    engine,
    window,
)

pytest.importorskip("pytestqt")


def test_badge_list_and_acknowledge(qtbot, window, engine, tmp_path, artifacts):  # noqa: F811
    assert not window.alerts_badge.isVisible()  # no alerts: no badge
    doc = csv_into_duckdb(tmp_path, 3, name="line1", table="t")
    doc["nodes"][0]["config"]["path"] = str(tmp_path / "missing.csv")
    doc["error_handling"] = {"alerts": [{"condition": "pipeline failed", "severity": "critical"}]}
    record = engine.runs.start(doc).result(60)
    assert record["status"] == "failed"

    badge = window.alerts_badge
    qtbot.waitUntil(lambda: badge.isVisible() and badge.text() == "⚠ 1 alert", timeout=10_000)
    assert badge.property("severity") == "critical"
    qtbot.mouseClick(badge, Qt.MouseButton.LeftButton)
    dialog = badge.dialog
    assert dialog is not None
    qtbot.waitExposed(dialog)
    assert dialog.table.rowCount() == 1 and dialog.table.item(0, 4).text() == "line1"
    assert not dialog.ack_button.isEnabled()  # nothing selected yet
    rect = dialog.table.visualItemRect(dialog.table.item(0, 0))
    qtbot.mouseClick(dialog.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert dialog.ack_button.isEnabled()
    qtbot.keyClicks(dialog.note, "pump 3 swapped")
    dialog.grab().save(str(artifacts / "alerts_list.png"))
    qtbot.mouseClick(dialog.ack_button, Qt.MouseButton.LeftButton)

    qtbot.waitUntil(
        lambda: dialog.table.rowCount() == 1 and "acknowledged" in dialog.table.item(0, 2).text(),
        timeout=10_000,
    )
    [alert] = engine.alerts.list()
    assert (alert["state"], alert["ack_note"]) == ("acknowledged", "pump 3 swapped") and alert[
        "acknowledged_by"
    ]
    assert not dialog.ack_button.isEnabled()  # acknowledged already
    window.grab().save(str(artifacts / "alerts_window.png"))
