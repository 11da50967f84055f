"""The shell as a user meets it: sidebar and shortcuts, status bar, toasts, confirmations,
the bridge between engine threads and the Qt thread, themes, the Pipelines page."""

from __future__ import annotations

import json
import threading
import time

import polars as pl
import pytest
from PySide6.QtCore import Qt, QThread, QTimer
from PySide6.QtWidgets import QApplication, QPushButton

from engine.api.events import Alarm
from tests.ui.gestures import click_in_modal
from ui import main_window as shell
from ui.pages.base import Page
from ui.widgets.empty_state import EmptyState


def click_sidebar(qtbot, window, row: int) -> None:
    rect = window.sidebar.visualItemRect(window.sidebar.item(row))
    qtbot.mouseClick(window.sidebar.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def assert_page_or_error(window, name: str) -> None:
    page = window.pages[name]
    assert window.stack.currentWidget() is page
    if isinstance(page, EmptyState):  # another helper's page not there yet: the error is named
        assert name in window.page_errors
        assert window.page_errors[name].split(":")[0] in page.label.text()
    else:
        assert isinstance(page, Page), type(page)


def test_window_opens_with_sidebar_and_status_bar(window):
    assert window.windowTitle() == "Data Aggregator"
    titles = [window.sidebar.item(i).text().split(maxsplit=1)[-1] for i in range(window.sidebar.count())]
    assert titles == [
        "Dashboard", "Pipelines", "Editor", "Live", "Runs", "Connectors", "Data", "Store & forward", "Settings",
        "Users", "Audit",
    ]  # fmt: skip
    assert window.current_page_name() == "dashboard"
    assert window.engine_label.text().startswith("Engine: ready")
    assert window.jobs_label.text() == "No jobs running"


def test_every_sidebar_entry_shows_its_page(qtbot, window):
    for row, entry in enumerate(shell.PAGES):
        click_sidebar(qtbot, window, row)
        assert window.current_page_name() == entry.name
        assert_page_or_error(window, entry.name)


def test_ctrl_digits_switch_pages(qtbot, window):
    for i, entry in reversed(list(enumerate(shell.PAGES[:9], start=1))):  # Ctrl+1..9: the first nine
        qtbot.keyClick(window, getattr(Qt.Key, f"Key_{i}"), Qt.KeyboardModifier.ControlModifier)
        assert window.current_page_name() == entry.name
        assert window.sidebar.currentRow() == i - 1
        assert_page_or_error(window, entry.name)


def test_a_page_that_fails_to_import_shows_an_empty_state_naming_the_error(qtbot, engine, monkeypatch):
    broken = shell.PageEntry("runs", "Runs", "▶", "ui.pages.no_such_module", "RunsPage")
    pages = tuple(broken if p.name == "runs" else p for p in shell.PAGES)
    monkeypatch.setattr(shell, "PAGES", pages)
    window = shell.MainWindow(engine)
    qtbot.addWidget(window)
    page = window.show_page("runs")
    assert isinstance(page, EmptyState)
    assert "ModuleNotFoundError" in page.label.text()
    assert "ui.pages.no_such_module" in page.label.text()
    qtbot.mouseClick(page.button, Qt.MouseButton.LeftButton)  # its call to action leads away
    assert window.current_page_name() == "dashboard"
    window.shutdown()


def test_toasts_stack_bottom_right_and_disappear(qtbot, window):
    host = window.toasts.host
    # No event loop runs between the toasts and the checks of their layout (it is done at once), so
    # no timer can fire before them however slow the machine; the second outlives the first by
    # 1.2 s, so that a loaded machine still finds it when the first has gone.
    first = window.toast("success", "Saved pipeline", timeout_ms=400)
    second = window.toast("error", "Connection refused: 127.0.0.1:4840", timeout_ms=1600)
    third = window.toast("info", "Preview ready", timeout_ms=1800)
    toasts = [first, second, third]
    assert all(t.isVisible() for t in toasts)
    assert [t.property("kind") for t in toasts] == ["success", "error", "info"]
    # newest lowest, older ones above it, none overlapping, all at the right edge
    assert first.geometry().bottom() < second.geometry().top()
    assert second.geometry().bottom() < third.geometry().top()
    assert third.geometry().bottom() <= host.height()
    assert all(abs(t.geometry().right() - (host.width() - window.toasts.MARGIN - 1)) <= 1 for t in toasts)
    qtbot.waitUntil(lambda: first not in window.toasts.toasts, timeout=30_000)
    assert window.toasts.toasts == [second, third]
    assert third.geometry().bottom() <= host.height()  # the rest stayed stacked from the bottom
    qtbot.waitUntil(lambda: not window.toasts.toasts, timeout=30_000)


def test_jobs_indicator_counts_real_engine_jobs(qtbot, window, engine):
    release = threading.Event()
    jobs = [engine.submit("test", lambda cancel: release.wait(5)) for _ in range(2)]
    qtbot.waitUntil(lambda: "2 jobs running" in window.jobs_label.text(), timeout=30_000)
    release.set()
    assert all(job.result(5) for job in jobs)
    qtbot.waitUntil(lambda: window.jobs_label.text() == "No jobs running", timeout=30_000)
    assert window.running_jobs == set()


def test_bridge_delivers_engine_events_and_results_on_the_qt_thread(qtbot, window, engine):
    gui_thread = QApplication.instance().thread()
    seen: list[tuple[dict, bool]] = []
    window.bridge.event.connect(lambda e: seen.append((e, QThread.currentThread() is gui_thread)))
    alarm = Alarm(alarm="rows_dropped", node="t1", rows=3)
    worker = threading.Thread(target=lambda: engine.emit(alarm))
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: any(e.get("event") == "alarm" for e, _ in seen), timeout=30_000)
    assert all(on_gui for _, on_gui in seen)
    # the views get the record in its wire shape
    assert next(e for e, _ in seen if e.get("event") == "alarm") == alarm.to_dict()

    results: list[tuple[str, object, bool]] = []

    def on_ok(value):
        results.append(("ok", value, QThread.currentThread() is gui_thread))

    def on_error(exc):
        results.append(("error", exc, QThread.currentThread() is gui_thread))

    # call() does not wait for the work: the work cannot end before call() has returned (no timing:
    # a loaded machine may take long over either); a call() that waited would get False, not 42
    release = threading.Event()
    window.bridge.call(engine.call(lambda: release.wait(30) and 42), on_ok)
    window.bridge.call(engine.submit("fail", lambda cancel: 1 / 0), on_ok, on_error)
    release.set()
    qtbot.waitUntil(lambda: len(results) == 2, timeout=30_000)
    assert sorted(r[0] for r in results) == ["error", "ok"]
    assert ("ok", 42, True) in results
    error = next(r for r in results if r[0] == "error")
    assert isinstance(error[1], ZeroDivisionError) and error[2]


def test_the_gui_process_hands_the_gil_over_quickly(window):
    """Engine threads running Python give the GIL back to the Qt thread after the switch
    interval; the window's bridge sets it to 1 ms (the default 5 ms stalled chart refreshes)."""
    import sys

    from ui.bridge import GUI_SWITCH_INTERVAL_S

    assert window.bridge is not None
    assert sys.getswitchinterval() <= GUI_SWITCH_INTERVAL_S


def test_the_window_has_the_engine_warm_up_once_it_is_shown(qtbot, tmp_path):
    """The first run must not import (and compile) the run machinery while holding the GIL: the
    window asks the engine to import it in the background, once, shortly after it opens."""
    from engine.api import LocalEngine
    from ui.main_window import WARM_UP_DELAY_MS, MainWindow

    class Recording(LocalEngine):
        warmed: list = []

        def warm_up(self):
            future = super().warm_up()
            self.warmed.append(future)
            return future

    engine = Recording(tmp_path / "data")
    win = MainWindow(engine)
    try:
        win.show()
        assert engine.warmed == []  # not while the window is being built
        qtbot.waitUntil(lambda: len(engine.warmed) == 1, timeout=WARM_UP_DELAY_MS + 3000)
        assert engine.warmed[0].result(60) > 0
        qtbot.wait(WARM_UP_DELAY_MS)
        assert len(engine.warmed) == 1
    finally:
        win._closing_confirmed = True
        win.close()
        win.deleteLater()
        engine.close()


@pytest.mark.parametrize(("button", "expected"), [("ConfirmAccept", True), ("ConfirmReject", False)])
def test_confirm_dialog_accept_and_reject(window, button, expected):
    click_in_modal(button)
    assert window.confirm("Delete pipeline", "Delete “orders”?") is expected


def test_closing_with_unsaved_changes_asks_first(qtbot, window, monkeypatch):
    page = window.show_page("pipelines")
    monkeypatch.setattr(page, "has_unsaved_changes", lambda: True)
    click_in_modal("ConfirmReject")
    window.close()
    assert window.isVisible()  # rejected: the window stays
    click_in_modal("ConfirmAccept")
    window.close()
    assert not window.isVisible()


def test_themes_apply_and_unknown_is_refused(window):
    from ui import theme

    app = QApplication.instance()
    theme.apply(app, "dark")
    assert theme.current(app) == "dark"
    assert app.palette().window().color().lightness() < 80
    theme.apply(app, "light")
    assert app.palette().window().color().lightness() > 200
    with pytest.raises(ValueError, match="allowed are light, dark"):
        theme.apply(app, "pink")


@pytest.mark.parametrize("theme_name", ["light", "dark"])
@pytest.mark.parametrize("role", ["PrimaryButton", "DangerButton"])
def test_a_disabled_coloured_button_looks_disabled(qtbot, window, theme_name, role):
    """A Delete or Save button that cannot be pressed must not look as if it could."""
    from ui import theme

    theme.apply(QApplication.instance(), theme_name)
    try:
        button = QPushButton("Delete", window)
        button.setObjectName(role)
        button.resize(120, 32)
        button.show()

        def fill_colour():
            image = button.grab().toImage()
            return image.pixelColor(6, image.height() // 2)

        enabled = fill_colour()
        button.setEnabled(False)
        disabled = fill_colour()
        assert disabled.hsvSaturation() < enabled.hsvSaturation() * 0.7, (enabled.name(), disabled.name())
    finally:
        theme.apply(QApplication.instance(), "light")


def test_screenshot_of_the_shell(qtbot, window, artifacts):
    window.resize(1100, 680)
    window.show_page("pipelines")
    window.toast("success", "Pipeline “orders” saved", timeout_ms=0)
    window.toast("warning", "Source “turbines” reconnecting (attempt 3)", timeout_ms=0)
    qtbot.wait(200)
    path = artifacts / "shell.png"
    assert window.grab().save(str(path))
    assert path.stat().st_size > 10_000

    from ui import theme

    theme.apply(QApplication.instance(), "dark")
    window.show_page("settings")
    window.show_page("pipelines")
    qtbot.wait(100)
    dark = artifacts / "shell_dark.png"
    assert window.grab().save(str(dark))
    image = window.grab().toImage()
    assert image.pixelColor(5, image.height() // 2).lightness() < 80  # the sidebar went dark
    theme.apply(QApplication.instance(), "light")


def write_spec(path, name):
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": name,
        "nodes": [
            {"id": "src", "kind": "source", "connector_type": "file", "config": {"path": "in.csv"}},
            {
                "id": "out",
                "kind": "destination",
                "connector_type": "file",
                "config": {"path": "o.csv"},
                "inputs": ["src"],
            },
        ],
    }
    path.write_text(json.dumps(doc), encoding="utf-8")


def pipelines_page(qtbot, window):
    page = window.show_page("pipelines")
    qtbot.waitUntil(lambda: not page.loading.active and bool(page.files), timeout=30_000)
    return page


def test_pipelines_page_empty_state_then_lists_and_opens(qtbot, window, engine, monkeypatch):
    opened = []
    monkeypatch.setattr(window, "open_pipeline", opened.append)
    page = pipelines_page(qtbot, window)
    assert page.mine_stack.currentWidget() is page.mine_empty  # nothing of the user's yet
    assert page.mine_empty.button.text() == "New pipeline"
    shipped = [page.shipped.topLevelItem(i).text(2) for i in range(page.shipped.topLevelItemCount())]
    assert "wind_farm.json" in shipped and "ecommerce_orders.json" in shipped

    write_spec(engine.data_dir / "pipelines" / "orders.json", "Orders cleanup")
    qtbot.mouseClick(page.refresh_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.mine.topLevelItemCount() == 1, timeout=30_000)
    assert page.mine_stack.currentWidget() is page.mine
    item = page.mine.topLevelItem(0)
    assert item.text(0) == "Orders cleanup"
    rect = page.mine.visualItemRect(item)
    # a double click is a press, a release and then the double-click event (Qt6 item views)
    qtbot.mouseClick(page.mine.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(page.mine.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert opened == [engine.data_dir / "pipelines" / "orders.json"]

    qtbot.keyClicks(page.search, "wind")
    assert page.mine.topLevelItemCount() == 0
    assert page.shipped.topLevelItemCount() == 1


def test_pipelines_page_shows_mode_last_run_and_broken_files(qtbot, window, engine):
    spec = engine.data_dir / "pipelines" / "orders.json"
    write_spec(spec, "Orders cleanup")
    (spec.parent / "in.csv").write_text("id,qty\n1,2\n2,5\n", encoding="utf-8")
    (spec.parent / "broken.json").write_text('{"name": "half', encoding="utf-8")
    page = pipelines_page(qtbot, window)
    rows = {page.mine.topLevelItem(i).text(1): page.mine.topLevelItem(i) for i in range(2)}
    assert rows["orders.json"].text(2) == "manual" and rows["orders.json"].text(3) == "never"
    assert rows["broken.json"].text(5).startswith("⚠ ") and "broken.json" in rows["broken.json"].text(5)

    record = engine.runs.start(json.loads(spec.read_text()), spec_path=spec).result(30)
    assert record["status"] == "success"
    qtbot.mouseClick(page.refresh_button, Qt.MouseButton.LeftButton)

    def orders_row():
        return next(
            page.mine.topLevelItem(i)
            for i in range(page.mine.topLevelItemCount())
            if page.mine.topLevelItem(i).text(1) == "orders.json"
        )

    qtbot.waitUntil(lambda: orders_row().text(3) != "never", timeout=30_000)
    assert orders_row().text(3).startswith("✓ success · " + record["started_at"][:10])


def test_pipelines_page_delete_asks_and_shipped_ones_cannot_be_deleted(qtbot, window, engine):
    target = engine.data_dir / "pipelines" / "old.json"
    write_spec(target, "Old pipeline")
    page = pipelines_page(qtbot, window)
    page.shipped.setCurrentItem(page.shipped.topLevelItem(0))
    assert page.open_button.isEnabled() and not page.delete_button.isEnabled()
    page.mine.setCurrentItem(page.mine.topLevelItem(0))
    assert page.delete_button.isEnabled() and not page.shipped.selectedItems()

    click_in_modal("ConfirmReject")
    qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
    assert target.exists()

    click_in_modal("ConfirmAccept")
    qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: not target.exists() and page.mine_stack.currentWidget() is page.mine_empty, timeout=30_000
    )
    assert any("Deleted old.json" in t.text for t in window.toasts.toasts)


def test_frame_table_shows_names_types_and_loads_rows_in_chunks(qtbot):
    from ui.widgets.frame_table import CHUNK_ROWS, FrameTable

    table = FrameTable()
    qtbot.addWidget(table)
    frame = pl.DataFrame({"id": range(1200), "tag": ["a", None] * 600, "value": [0.5] * 1200})
    table.set_frame(frame)
    model = table.model()
    header = [model.headerData(i, Qt.Orientation.Horizontal) for i in range(3)]
    assert header == ["id\nInt64", "tag\nString", "value\nFloat64"]
    assert model.rowCount() == CHUNK_ROWS
    assert model.data(model.index(1, 1)) == "null"
    assert model.data(model.index(3, 2)) == "0.5"
    while model.canFetchMore():
        model.fetchMore()
    assert model.rowCount() == 1200
    assert table.frame() is frame


def test_loading_overlay_covers_its_parent(qtbot, window):
    from ui.widgets.loading import LoadingOverlay

    host = window.stack
    overlay = LoadingOverlay(host)
    overlay.start("Running preview…")
    assert overlay.isVisible() and overlay.geometry() == host.rect() and overlay.active
    overlay.stop()
    assert not overlay.isVisible() and not overlay.active


def test_event_loop_probe_sees_a_blocked_loop(qtbot):
    from ui.probe import EventLoopProbe

    probe = EventLoopProbe(interval_ms=10).start()
    qtbot.wait(150)
    QTimer.singleShot(0, lambda: time.sleep(0.15))  # block the loop on purpose
    qtbot.wait(150)
    report = probe.stop()
    assert report["ticks"] >= 5
    assert probe.max_gap_ms >= 140
    assert report["over_50ms"] >= 1
    assert set(report) >= {"max_gap_ms", "max_blocked_ms", "p99_gap_ms", "seconds"}


def test_a_burst_of_engine_events_is_delivered_in_order_in_slices(qtbot, window, engine, monkeypatch):
    """20,000 events queued at once reach the page in order, a time-budgeted slice per turn of the
    event loop (the rest re-posted), so a burst cannot hold the loop until it is all delivered."""
    from ui import bridge

    monkeypatch.setattr(bridge, "DRAIN_BUDGET_S", 0.001)
    received: list[int] = []
    window.bridge.event.connect(lambda e: received.append(e["n"]) if e.get("event") == "burst" else None)
    count = 20_000
    sender = threading.Thread(target=lambda: [engine.emit({"event": "burst", "n": n}) for n in range(count)])
    sender.start()
    sender.join()
    # One turn of the loop: one slice, never the whole burst. (The slice may go to what was queued
    # before the burst, the window's own results and events, on a slow machine all of it.)
    QApplication.processEvents()
    assert len(received) < count
    qtbot.waitUntil(lambda: len(received) == count, timeout=30_000)
    assert received == list(range(count))


def test_a_result_never_overtakes_the_events_emitted_before_it(qtbot, window, engine, monkeypatch):
    """A run's last node_progress events come before its record: a drain cut short by its budget
    must not let the result's callback run first (the editor then showed a finished node still
    running, its late status dropped), however slow the Qt thread is."""
    from ui import bridge

    monkeypatch.setattr(bridge, "DRAIN_BUDGET_S", 0.0)  # one event per slice: the slowest Qt thread
    received: list[int] = []
    window.bridge.event.connect(lambda e: received.append(e["n"]) if e.get("event") == "burst" else None)
    count = 2_000

    def work() -> str:
        for n in range(count):
            engine.emit({"event": "burst", "n": n})
        return "done"

    delivered_at_result: list[tuple[str, int]] = []
    window.bridge.call(engine.call(work), lambda value: delivered_at_result.append((value, len(received))))
    qtbot.waitUntil(lambda: bool(delivered_at_result), timeout=30_000)
    assert delivered_at_result == [("done", count)]
    assert received == list(range(count))


def test_run_gui_reads_settings_opens_the_window_and_closes_the_engine(tmp_path):
    """`aggregator gui`'s start-up, whole, in a process of its own: its QApplication.exec() and
    quit() must not touch this test process's application (a quit app runs no more event loops)."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    settings = tmp_path / "settings.toml"
    settings.write_text('theme = "dark"\n', encoding="utf-8")
    env = {**os.environ, "AGGREGATOR_SETTINGS": str(settings), "QT_QPA_PLATFORM": "offscreen"}
    env.pop("AGGREGATOR_THEME", None)
    code = textwrap.dedent(
        f"""
        import json
        from PySide6.QtCore import QTimer
        from PySide6.QtWidgets import QApplication
        from app.gui import run_gui
        from ui import theme

        app = QApplication([])
        seen = {{}}

        def close_when_up():
            windows = [w for w in app.topLevelWidgets() if type(w).__name__ == "MainWindow" and w.isVisible()]
            if not windows:
                QTimer.singleShot(50, close_when_up)
                return
            window = windows[0]
            seen.update(theme=theme.current(app), data_dir=str(window.engine.data_dir),
                        settings=str(window.settings.path))
            seen["engine"] = window.engine
            window.close()  # the last window: exec() returns

        QTimer.singleShot(0, close_when_up)
        code = run_gui(data_dir={str(tmp_path / "data")!r})
        engine = seen.pop("engine")
        print(json.dumps({{**seen, "exit": code, "engine_state": engine.state}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "theme": "dark",
        "data_dir": str(tmp_path / "data"),
        "settings": str(settings),
        "exit": 0,
        "engine_state": "stopped",
    }
