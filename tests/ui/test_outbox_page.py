"""The Store & forward page, driven as a user does: the figures of each destination's outbox (link
state coloured), the quarantine with its reasons, Export JSON through the save dialog, Retry, and
Delete after a confirmation.

A third test attaches the window to a real `aggregator serve` (as `aggregator gui --attach`).

The data directory is seeded through the real outbox (tests/outbox/test_outbox_http.py
`seed_outbox`: a SQLite upstream that refused two records for good and then went down). In the
GUI's engine, line1/central keeps forwarding against the down upstream (red), and line2/historian
delivers to an upstream that is up (green).
"""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from engine.outbox.config import RemoteSinkConfig
from engine.outbox.manager import manager_for
from engine.outbox.sinks import remote_sink
from tests.outbox.conftest import commit, make_ctx, tags
from tests.outbox.test_outbox_http import seed_outbox
from tests.outbox.upstream import Upstream, UpstreamTarget
from tests.ui.gestures import click, click_in_modal
from tests.ui.test_dashboard_settings import click_sidebar
from tests.ui.test_data import answer_save_dialog
from tests.waiting import wait_for

LEFT = Qt.MouseButton.LeftButton


class _Historian:
    """A second remote destination whose upstream is up."""

    connector_type = "fake_upstream"
    upstream: Upstream | None = None

    @classmethod
    def make_target(cls, config, ctx, name):
        assert cls.upstream is not None
        return UpstreamTarget(cls.upstream, name)


@pytest.fixture
def engine(tmp_path):
    from engine.api import LocalEngine

    data = tmp_path / "data"
    central = seed_outbox(data, tmp_path / "central.sqlite")
    central.retry_after = 0.5  # the down link is retried twice a second while the test runs
    _Historian.upstream = Upstream(tmp_path / "historian.sqlite")
    engine = LocalEngine(data)
    manager = manager_for(data)
    commit(manager, tags(3, start=20))  # line1/central: its forwarder runs again, into a down link
    sink = remote_sink(_Historian, RemoteSinkConfig(), make_ctx(manager, pipeline="line2"), "historian")
    sink.open()
    sink.write(tags(6, start=0))
    sink.close()
    wait_for(lambda: _Historian.upstream.count() == 6, what="historian delivered")
    yield engine
    engine.close()
    manager.close()


def cell(table, row: int, col: int) -> str:
    return table.item(row, col).text()


def row_of(page, pipeline: str) -> int:
    t = page.status_table
    return next(r for r in range(t.rowCount()) if cell(t, r, 0) == pipeline)


def click_cell(qtbot, table, row: int, col: int = 1, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    rect = table.visualRect(table.model().index(row, col))
    qtbot.mouseClick(table.viewport(), LEFT, modifier, rect.center())


def figures(page, pipeline: str) -> dict[str, str]:
    from ui.pages.outbox import STATUS_COLUMNS

    row = row_of(page, pipeline)
    return {key: cell(page.status_table, row, col) for col, (key, _) in enumerate(STATUS_COLUMNS)}


def test_store_and_forward_page(qtbot, window, tmp_path, artifacts):
    from ui.pages.outbox import BAD, GOOD

    click_sidebar(qtbot, window, "outbox")
    page = window.page("outbox")
    qtbot.waitUntil(lambda: page.loaded and page.status_table.rowCount() == 2, timeout=30_000)
    # the live figures arrive with the page's own polling (every few seconds, off the GUI thread)
    qtbot.waitUntil(lambda: figures(page, "line1")["link_state"] == "● down", timeout=30_000)
    central, historian = figures(page, "line1"), figures(page, "line2")
    assert central["destination"] == "central" and central["pending_records"] == "8"
    assert (central["appended_records"], central["forwarded_records"], central["quarantined_records"]) == (
        "17",
        "7",
        "2",
    )
    assert central["dropped_records"] == "0" and central["oldest_pending_age_s"].endswith(("s", "min"))
    assert historian["link_state"] == "● up" and historian["forwarded_records"] == "6"
    assert historian["pending_records"] == "0" and historian["oldest_pending_age_s"] == "—"
    link = page.status_table.item(row_of(page, "line1"), 2)
    assert link.foreground().color() == QColor(BAD) and "connection" in link.toolTip()
    assert page.status_table.item(row_of(page, "line2"), 2).foreground().color() == QColor(GOOD)
    assert "link down on 1" in page.summary.text() and "2 in quarantine" in page.summary.text()
    assert page.tabs.tabText(1) == "Quarantine (2)"
    window.grab().save(str(artifacts / "store_and_forward.png"))

    # the quarantine: each entry with its reason
    page.tabs.tabBar().setFocus()
    qtbot.mouseClick(page.tabs.tabBar(), LEFT, pos=page.tabs.tabBar().tabRect(1).center())
    table = page.quarantine_table
    assert table.isVisible() and table.rowCount() == 2
    assert all("value refused" in cell(table, r, 6) for r in range(2))
    assert [cell(table, r, 1) + "/" + cell(table, r, 2) for r in range(2)] == ["line1/central"] * 2
    assert not page.retry_button.isEnabled() and not page.delete_button.isEnabled()
    window.grab().save(str(artifacts / "store_and_forward_quarantine.png"))

    # Export JSON (nothing selected: every entry shown) through the save dialog
    out = tmp_path / "exported.json"
    answer_save_dialog(out)
    click(qtbot, page.export_button)
    qtbot.waitUntil(out.exists, timeout=30_000)
    records = json.loads(out.read_text())
    assert [(r["tag"], r["value"], r["pipeline"]) for r in records] == [
        ("t0", 4.0, "line1"),
        ("t1", 9.0, "line1"),
    ]
    assert all("value refused" in r["quarantine_reason"] for r in records)

    # Retry the first entry: it goes back to the outbox (pending 8 -> 9), one entry left
    first, second = (table.item(r, 0).data(Qt.ItemDataRole.UserRole)["id"] for r in range(2))
    click_cell(qtbot, table, 0)
    assert [e["id"] for e in page.selected_entries()] == [first]
    click(qtbot, page.retry_button)
    qtbot.waitUntil(lambda: table.rowCount() == 1, timeout=30_000)
    assert table.item(0, 0).data(Qt.ItemDataRole.UserRole)["id"] == second
    qtbot.waitUntil(lambda: figures(page, "line1")["pending_records"] == "9", timeout=30_000)

    # Delete asks first: Cancel keeps the entry, Delete removes it
    click_cell(qtbot, table, 0)
    click_in_modal("ConfirmReject")
    click(qtbot, page.delete_button)
    assert window.engine.outbox.quarantine() != []
    click_cell(qtbot, table, 0)
    click_in_modal("ConfirmAccept")
    click(qtbot, page.delete_button)
    qtbot.waitUntil(lambda: page.quarantine_stack.currentWidget() is page.no_quarantine, timeout=30_000)
    assert window.engine.outbox.quarantine() == [] and page.tabs.tabText(1) == "Quarantine"
    assert not page.export_button.isEnabled()
    window.grab().save(str(artifacts / "store_and_forward_quarantine_empty.png"))


def test_no_outbox_yet(qtbot, tmp_path):
    """A data directory without remote destinations: the page says what an outbox is for."""
    from PySide6.QtWidgets import QApplication

    from engine.api import LocalEngine
    from ui import theme
    from ui.main_window import MainWindow

    theme.apply(QApplication.instance(), "light")
    with LocalEngine(tmp_path / "empty") as engine:
        win = MainWindow(engine)
        win.show()
        qtbot.waitExposed(win)
        try:
            click_sidebar(qtbot, win, "outbox")
            page = win.page("outbox")
            qtbot.waitUntil(lambda: page.loaded, timeout=30_000)
            assert page.status_stack.currentWidget() is page.no_outbox
            assert "No outbox yet" in page.no_outbox.label.text() and page.summary.text().startswith(
                "0 destinations"
            )
        finally:
            win._closing_confirmed = True
            win.close()
            win.deleteLater()


def test_attached_to_a_service(qtbot, tmp_path):
    """`aggregator gui --attach`: the page shows the service's outboxes through its HTTP routes."""
    from PySide6.QtWidgets import QApplication

    from app.gui import open_engine
    from engine.service import token as api_token
    from tests.service.conftest import spawn
    from ui import theme
    from ui.main_window import MainWindow

    data = tmp_path / "data"
    seed_outbox(data, tmp_path / "central.sqlite")
    service = spawn(data, tmp_path / "serve.out")
    try:
        service.wait_ready()
        engine = open_engine(None, attach=service.url, token=api_token.ensure(data))
        theme.apply(QApplication.instance(), "light")
        win = MainWindow(engine)
        win.show()
        qtbot.waitExposed(win)
        try:
            click_sidebar(qtbot, win, "outbox")
            page = win.page("outbox")
            qtbot.waitUntil(lambda: page.loaded and page.status_table.rowCount() == 1, timeout=30_000)
            central = figures(page, "line1")
            assert (
                central["pending_records"],
                central["appended_records"],
                central["quarantined_records"],
            ) == (
                "5",
                "14",
                "2",
            )
            assert central["link_state"] == "● stopped"  # the service does not know the pipeline
            qtbot.mouseClick(page.tabs.tabBar(), LEFT, pos=page.tabs.tabBar().tabRect(1).center())
            assert page.quarantine_table.rowCount() == 2
            click_cell(qtbot, page.quarantine_table, 1)
            click(qtbot, page.retry_button)
            qtbot.waitUntil(lambda: page.quarantine_table.rowCount() == 1, timeout=30_000)
            qtbot.waitUntil(lambda: figures(page, "line1")["pending_records"] == "6", timeout=30_000)
        finally:
            win._closing_confirmed = True
            win.close()
            win.deleteLater()
            engine.close()
    finally:
        try:
            service.stop()
        finally:
            if service.proc.poll() is None:
                service.proc.kill()
                service.proc.wait(10)
