"""Dashboard cards count real runs and show live source states; settings round-trip to TOML and
the theme applies at once."""

from __future__ import annotations

import tomllib

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QComboBox, QSpinBox


def test_dashboard_counts_real_runs(qtbot, window, artifacts, tmp_path):
    from engine.runner import run_pipeline
    from engine.spec.validate import validate
    from tests.pipelines import csv_into_duckdb

    spec = csv_into_duckdb(tmp_path, 10, name="orders", table="t")
    for _ in range(3):
        run_pipeline(validate(spec), window.engine.workspace, base_dir=tmp_path)
    page = window.show_page("dashboard")
    window.engine.emit({"event": "source_state", "source": "turbines", "state": "subscribed", "detail": None})
    window.engine.emit({"event": "alarm", "message": "Turbine01.Power above 3000"})
    page.refresh()  # the dashboard is the first page: it showed before these runs (a timer refreshes it)
    qtbot.waitUntil(lambda: page.cards["runs_today"].value.text() == "3", timeout=10000)
    page.refresh()
    qtbot.waitUntil(lambda: "turbines: subscribed" in page.health.text(), timeout=5000)
    assert page.cards["rows_today"].value.text() == "30"
    assert page.cards["failures_today"].value.text() == "0"
    assert "Disk free" in page.health.text()
    texts = [page.activity.item(i).text() for i in range(page.activity.count())]
    assert any("Turbine01.Power" in t for t in texts) and sum("orders" in t for t in texts) == 3
    window.grab().save(str(artifacts / "dashboard.png"))


def test_settings_round_trip_and_theme(qtbot, window, artifacts, tmp_path):
    from app.settings import SettingsStore

    store = SettingsStore(tmp_path / "settings.toml", env={})
    window.settings_store = store
    page = window.show_page("settings")
    qtbot.waitUntil(lambda: page.pending_loads == 0, timeout=5000)
    form = page.form
    theme = form.field("theme").findChild(QComboBox)
    theme.setCurrentText("dark")
    rows = form.field("preview_rows").findChild(QSpinBox)
    rows.clear()
    qtbot.keyClicks(rows, "500")
    assert page.has_unsaved_changes()
    qtbot.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.status.text() == "Saved", timeout=5000)
    saved = tomllib.loads(store.path.read_text())
    assert saved["theme"] == "dark" and saved["preview_rows"] == 500 and saved["schema_version"] == 1
    assert QApplication.instance().property("theme") == "dark"
    assert form.value()["theme"] == "dark"
    window.grab().save(str(artifacts / "settings.png"))
    # a second page reads the file back into the form
    assert store.load().preview_rows == 500
