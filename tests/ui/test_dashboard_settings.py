"""The Dashboard and the Settings page, driven as a user does, on a real engine:

- the cards count real runs, and clicking one opens the runs behind it; a run in the activity list
  opens on the Runs page; the health panel shows a real OPC UA stream's session going from
  subscribed to lost when the simulator goes away; the quick actions run the demo and open pages;
- the settings typed and picked on the page are written to the TOML file and take effect at once:
  the theme, the time zone of the Runs page and the Dashboard, the editor's preview size; a bad
  value is refused with one clear line under its field; environment overrides cannot be edited.
"""

from __future__ import annotations

import tomllib
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QFileDialog, QLineEdit

from app.settings import SettingsStore
from tests.pipelines import csv_into_duckdb, opcua_stream
from tests.ui.conftest import opcua_simulator
from tests.ui.gestures import pick, type_over
from ui.pages.runs import TODAY

LEFT = Qt.MouseButton.LeftButton


@pytest.fixture
def store(tmp_path) -> SettingsStore:
    return SettingsStore(tmp_path / "config" / "settings.toml", env={})


@pytest.fixture
def open_window(qtbot, engine):
    """open_window(store=None): the main window as `aggregator gui` builds it (app/gui.py passes the
    settings store as `settings`), opened after the test has put its runs in the data dir."""
    from ui import theme
    from ui.main_window import MainWindow

    windows = []

    def make(store: SettingsStore | None = None):
        theme.apply(QApplication.instance(), "light")
        win = MainWindow(engine, settings=store)
        win.resize(1280, 800)
        win.show()
        qtbot.waitExposed(win)
        windows.append(win)
        return win

    yield make
    for win in windows:
        win._closing_confirmed = True
        win.close()
        win.deleteLater()
    theme.apply(QApplication.instance(), "light")


def run_now(engine, doc, **kwargs) -> dict:
    return engine.runs.start(doc, **kwargs).result(timeout=30)


def click_sidebar(qtbot, window, name: str) -> None:
    from ui.main_window import PAGE_NAMES

    item = window.sidebar.item(PAGE_NAMES.index(name))
    qtbot.mouseClick(window.sidebar.viewport(), LEFT, pos=window.sidebar.visualItemRect(item).center())
    assert window.current_page_name() == name


def activity_texts(page) -> list[str]:
    """Each row of the activity list, its cells joined by " | "."""
    tree = page.activity
    items = [tree.topLevelItem(i) for i in range(tree.topLevelItemCount())]
    return [" | ".join(item.text(c) for c in range(tree.columnCount())) for item in items]


def dismiss_toasts(window) -> None:
    for toast in list(window.toasts.toasts):
        toast.dismiss()


# ---- dashboard ----------------------------------------------------------------------------------
def test_dashboard_cards_count_real_runs_and_open_what_is_behind_them(qtbot, engine, open_window, tmp_path):
    doc = csv_into_duckdb(tmp_path, 10, name="orders", table="t")
    for _ in range(3):
        assert run_now(engine, doc, base_dir=tmp_path)["status"] == "success"
    broken = {**doc, "name": "broken"}
    broken["nodes"] = [
        {**doc["nodes"][0], "config": {"path": str(tmp_path / "missing.csv")}},
        doc["nodes"][1],
    ]
    failed = run_now(engine, broken, base_dir=tmp_path)
    assert failed["status"] == "failed"

    window = open_window()
    page = window.pages["dashboard"]
    # the three cards come from one refresh, but wait on all of them together, never one then check the rest
    cards = ("runs_today", "rows_today", "failures_today")
    qtbot.waitUntil(
        lambda: tuple(page.cards[c].value.text() for c in cards) == ("4", "30", "1"), timeout=30_000
    )
    assert page.cards["active_streams"].value.text() == "0"
    assert page.activity_stack.currentWidget() is page.activity
    texts = activity_texts(page)
    assert sum("orders" in t for t in texts) == 3 and "failed" in texts[0] and "broken" in texts[0]
    assert "Engine: ready" in page.health.text() and "free of" in page.health.text()
    assert page.sources_stack.currentWidget() is page.no_sources  # no stream: a call to action instead

    # "Failures today" opens the Runs page on today's failed runs
    qtbot.mouseClick(page.cards["failures_today"], LEFT)
    runs = window.pages["runs"]
    assert window.current_page_name() == "runs"
    qtbot.waitUntil(lambda: [r["run_id"] for r in runs.records] == [failed["run_id"]], timeout=30_000)
    assert (runs.status_filter.currentText(), runs.time_filter.currentText()) == ("failed", TODAY)

    # a run in the activity list opens on the Runs page (filters cleared so it shows)
    click_sidebar(qtbot, window, "dashboard")
    item = page.activity.topLevelItem(2)
    run_id = item.data(0, Qt.ItemDataRole.UserRole)
    qtbot.waitUntil(lambda: page._loading == 0)  # the list as it is now (the page reads it on show)
    where = page.activity.visualItemRect(item).center()
    qtbot.mouseClick(page.activity.viewport(), LEFT, pos=where)  # a double click: press, release, then
    qtbot.mouseDClick(page.activity.viewport(), LEFT, pos=where)  # the double-click event (Qt6 views)
    assert window.current_page_name() == "runs"
    qtbot.waitUntil(
        lambda: runs.detail is not None and runs.detail["record"]["run_id"] == run_id, timeout=30_000
    )
    assert runs.status_filter.currentText() == "All" and len(runs.records) == 4


@pytest.fixture
def opcua_sim():
    with opcua_simulator(1, 3) as sim:  # its own: the test stops it to see the session lost
        yield sim


def test_dashboard_health_shows_a_streams_source_session_state(
    qtbot, engine, open_window, opcua_sim, tmp_path, artifacts
):
    demo = engine.pipelines.install_demo()  # some history for the screenshot
    run_now(engine, demo["document"], spec_path=demo["spec_path"])
    run_now(engine, csv_into_duckdb(tmp_path, 10, name="orders", table="t"), base_dir=tmp_path)
    window = open_window()
    page = window.pages["dashboard"]
    qtbot.waitUntil(lambda: page.loaded, timeout=30_000)
    doc = opcua_stream(
        opcua_sim, name="Wind farm stream", reconnect={"initial_delay_s": 5.0, "max_delay_s": 5.0}
    )
    job = engine.runs.start_stream(doc)  # as the editor's F5 does (tests/ui/test_runs.py drives that)
    try:
        qtbot.waitUntil(
            lambda: page.source_states() == {"Wind farm stream / plc": "subscribed"}, timeout=30_000
        )
        assert page.cards["active_streams"].value.text() == "1"
        assert page.sources_stack.currentWidget() is page.sources
        shown = page.sources.item(0)
        assert shown.text().startswith("●  Wind farm stream / plc: subscribed (3 nodes on opc.tcp://")
        assert shown.foreground().color().name() == "#2ea043"
        dismiss_toasts(window)
        window.grab().save(str(artifacts / "dashboard.png"))

        opcua_sim.go_down()  # the PLC goes away: the session is lost (and retried in 5 s)
        qtbot.waitUntil(
            lambda: page.source_states().get("Wind farm stream / plc") in ("lost", "reconnecting"),
            timeout=30_000,
        )
        assert page.sources.item(0).foreground().color().name() in ("#d73a49", "#d29600")
    finally:
        engine.runs.stop(job.id)
    qtbot.waitUntil(lambda: page.sources_stack.currentWidget() is page.no_sources, timeout=30_000)
    qtbot.waitUntil(lambda: page.cards["active_streams"].value.text() == "0", timeout=30_000)


def test_dashboard_quick_actions(qtbot, engine, open_window, artifacts):
    window = open_window()
    page = window.pages["dashboard"]
    qtbot.waitUntil(lambda: page.loaded, timeout=30_000)
    # nothing ran yet: the activity list offers the demo
    assert page.activity_stack.currentWidget() is page.no_activity
    window.grab().save(str(artifacts / "dashboard_empty.png"))
    qtbot.mouseClick(page.no_activity.button, LEFT)
    assert not page.demo_button.isEnabled() and page.demo_button.text() == "Running the demo…"  # loading
    qtbot.waitUntil(lambda: page.demo_job is None, timeout=30_000)
    assert page.demo_button.isEnabled() and page.demo_button.text() == "Run the demo"
    # the run is counted from its start and its rows at its finish: wait for both on the cards
    qtbot.waitUntil(
        lambda: (page.cards["runs_today"].value.text(), page.cards["rows_today"].value.text()) == ("1", "15"),
        timeout=30_000,
    )
    assert (engine.data_dir / "demo" / "ecommerce" / "unified_orders.json").exists()
    assert "E-commerce order unification" in activity_texts(page)[0]
    toast = page.last_toast
    assert toast.kind == "warning" and "15 rows in, 12 out, 3 rejected" in toast.text
    toast.label.linkActivated.emit("run")  # the user clicks "Open run"
    runs = window.pages["runs"]
    qtbot.waitUntil(lambda: runs.detail is not None, timeout=30_000)
    assert runs.detail["record"]["trigger"] == "demo"

    for key, name in (("open", "pipelines"), ("new", "editor")):
        click_sidebar(qtbot, window, "dashboard")
        qtbot.mouseClick(page.actions[key], LEFT)
        assert window.current_page_name() == name
    editor = window.pages["editor"]
    assert editor.path is None and editor.document.to_dict()["nodes"] == []


# ---- settings -----------------------------------------------------------------------------------
def loaded_settings_page(qtbot, window):
    click_sidebar(qtbot, window, "settings")
    page = window.pages["settings"]
    assert page.overlay.active and page.pending_loads == 1  # read in the background, once
    qtbot.waitUntil(lambda: page.pending_loads == 0 and not page.overlay.active, timeout=30_000)
    return page


def test_settings_are_written_to_toml_and_take_effect(qtbot, engine, open_window, store, tmp_path, artifacts):
    doc = csv_into_duckdb(tmp_path, 1000, name="thousand", table="t")
    record = run_now(engine, doc, base_dir=tmp_path)
    window = open_window(store)
    page = loaded_settings_page(qtbot, window)
    assert (page.theme.currentText(), page.time_zone.currentText(), page.preview_rows.value()) == (
        "Light", "local", 200,
    )  # fmt: skip
    assert not page.has_unsaved_changes() and not store.path.exists()

    pick(qtbot, page.theme, "Dark")
    type_over(qtbot, page.time_zone.lineEdit(), "Asia/Tokyo")
    type_over(qtbot, page.preview_rows, "500")
    new_dir = tmp_path / "elsewhere"
    type_over(qtbot, page.data_dir, str(new_dir))
    assert page.status.text() == "Unsaved changes" and page.has_unsaved_changes()
    qtbot.mouseClick(page.save_button, LEFT)
    assert page.save_button.text() == "Saving…" and not page.save_button.isEnabled()  # loading state
    qtbot.waitUntil(lambda: page.status.text().startswith("Saved"), timeout=30_000)

    saved = tomllib.loads(store.path.read_text())
    assert saved == {
        "schema_version": 1, "data_dir": str(new_dir), "theme": "dark", "time_zone": "Asia/Tokyo",
        "preview_rows": 500,
    }  # fmt: skip
    assert not page.has_unsaved_changes()
    # the theme applies at once; the data directory from the next start (the toast says so)
    assert QApplication.instance().property("theme") == "dark"
    assert QApplication.instance().palette().window().color().name() == "#1e2127"
    assert "next start" in window.toasts.toasts[-1].text and str(engine.data_dir) in page.data_dir_hint.text()
    dismiss_toasts(window)
    window.grab().save(str(artifacts / "settings.png"))

    # the time zone: the Runs page and the Dashboard show times in Asia/Tokyo
    tokyo = datetime.fromisoformat(record["started_at"].replace("Z", "+00:00")).astimezone(
        ZoneInfo("Asia/Tokyo")
    )
    click_sidebar(qtbot, window, "runs")
    runs = window.pages["runs"]
    qtbot.waitUntil(lambda: runs.table.rowCount() == 1, timeout=30_000)
    assert runs.table.horizontalHeaderItem(2).text() == "Started (Asia/Tokyo)"
    assert runs.table.item(0, 2).text() == tokyo.strftime("%Y-%m-%d %H:%M:%S")
    click_sidebar(qtbot, window, "dashboard")
    dashboard = window.pages["dashboard"]
    qtbot.waitUntil(
        lambda: tokyo.strftime("%Y-%m-%d %H:%M:%S") in activity_texts(dashboard)[0], timeout=30_000
    )

    # the preview size: the editor's preview of a 1000-row source shows 500 rows
    click_sidebar(qtbot, window, "editor")
    editor = window.pages["editor"]
    assert editor.preview.limit == 500
    editor.load_document({**doc, "layout": {"src": [0, 0], "dst": [300, 0]}})
    with qtbot.waitSignal(editor.preview.finished, timeout=30_000):
        editor.select_node("src")  # selecting a node previews it (tests/ui/test_editor.py clicks it)
    assert editor.preview.rows_table.frame().height == 500

    # a new window reads the file back
    assert store.load().time_zone == "Asia/Tokyo"


def test_a_bad_setting_is_refused_with_one_clear_line(qtbot, engine, open_window, store, tmp_path):
    window = open_window(store)
    page = loaded_settings_page(qtbot, window)

    type_over(qtbot, page.time_zone.lineEdit(), "Mars/Olympus")
    qtbot.mouseClick(page.save_button, LEFT)
    qtbot.waitUntil(lambda: page.status.text().startswith("✕"), timeout=30_000)
    error = page.errors["time_zone"]
    assert error.isVisible() and error.text().startswith("unknown time zone 'Mars/Olympus'")
    assert page.status.text() == (
        "✕ Not saved: Time zone: unknown time zone 'Mars/Olympus' (an IANA name such as Europe/Berlin, or 'local')"
    )
    assert "Traceback" not in window.toasts.toasts[-1].text and "\n" not in window.toasts.toasts[-1].text
    assert not store.path.exists() and page.has_unsaved_changes()

    # the folder picker puts a folder in the field; a file where a folder belongs is refused
    type_over(qtbot, page.time_zone.lineEdit(), "Europe/Berlin")
    folder = tmp_path / "plant data"
    folder.mkdir()
    qtbot.mouseClick(page.browse_button, LEFT)
    dialog = page.findChild(QFileDialog, "DataDirDialog")
    qtbot.waitUntil(dialog.isVisible, timeout=30_000)
    name = dialog.findChild(QLineEdit, "fileNameEdit")
    # the path is pasted (typed, each "/" lets the dialog's completer pick a folder of its own)
    QApplication.clipboard().setText(str(folder))
    name.setFocus()
    qtbot.keyClick(name, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(name, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(name, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: page.data_dir.text() == str(folder), timeout=30_000)
    assert page.status.text() == "Unsaved changes"

    a_file = tmp_path / "not_a_folder.txt"
    a_file.write_text("x")
    type_over(qtbot, page.data_dir, str(a_file))
    qtbot.mouseClick(page.save_button, LEFT)
    qtbot.waitUntil(lambda: page.errors["data_dir"].isVisible(), timeout=30_000)
    assert page.errors["data_dir"].text() == f"{a_file} is a file, not a folder"
    assert not page.errors["time_zone"].isVisible() and not store.path.exists()

    type_over(qtbot, page.data_dir, str(folder))
    qtbot.mouseClick(page.save_button, LEFT)
    qtbot.waitUntil(lambda: page.status.text().startswith("Saved"), timeout=30_000)
    saved = tomllib.loads(store.path.read_text())
    assert (saved["data_dir"], saved["time_zone"]) == (str(folder), "Europe/Berlin")
    assert not page.errors["data_dir"].isVisible()


def test_settings_set_by_the_environment_are_not_editable(qtbot, engine, open_window, tmp_path):
    store = SettingsStore(tmp_path / "settings.toml", env={"AGGREGATOR_THEME": "dark"})
    store.path.write_text('theme = "light"\npreview_rows = 300\n')
    window = open_window(store)
    page = loaded_settings_page(qtbot, window)
    assert page.theme.currentText() == "Dark" and not page.theme.isEnabled()
    assert "theme" in page.status.text() and page.preview_rows.value() == 300
    type_over(qtbot, page.preview_rows, "250")
    qtbot.mouseClick(page.save_button, LEFT)
    qtbot.waitUntil(lambda: page.status.text().startswith("Saved"), timeout=30_000)
    saved = tomllib.loads(store.path.read_text())
    assert (saved["theme"], saved["preview_rows"]) == ("light", 250)  # the file keeps its own theme


def test_settings_page_without_a_settings_file(qtbot, window):
    page = window.show_page("settings")
    assert not page.available and not page.has_unsaved_changes()
    empty = page.findChild(type(window.pages["dashboard"].no_activity))
    qtbot.mouseClick(empty.button, LEFT)
    assert window.current_page_name() == "dashboard"


def test_preferences_give_the_editor_its_preview_size_when_it_is_created(qtbot, engine, open_window, store):
    store.save({"preview_rows": 42, "time_zone": "UTC"})
    window = open_window(store)
    prefs = window.pages["dashboard"].prefs
    qtbot.waitUntil(lambda: prefs.loaded, timeout=30_000)
    assert prefs.format_time("2026-01-01T12:00:00.000000Z") == "2026-01-01 12:00:00"
    click_sidebar(qtbot, window, "editor")
    assert window.pages["editor"].preview.limit == 42
