"""Data page as a user drives it (clicks in the list, tabs and page buttons, typing SQL, combo popups, the
save dialog): the empty states, the paged preview, the SQL console's table and chart, one-line errors
and refused writes, and exports to CSV, Parquet and Excel that read back equal, written atomically."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyqtgraph as pg
from polars.testing import assert_frame_equal
from PySide6.QtCore import Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QComboBox, QFileDialog, QLineEdit, QPushButton

from tests.ui.gestures import click, pick
from tests.ui.test_connectors import click_row

DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"
LEFT = Qt.MouseButton.LeftButton
START = datetime(2024, 5, 1, tzinfo=UTC)


def fill_historian(engine, rows=450):
    cur = engine.workspace.historian.cursor()
    frame = pl.DataFrame(
        {
            "id": range(rows),
            "ts": [START + timedelta(minutes=i) for i in range(rows)],
            "power_kw": [1000 + (i % 50) * 10.5 for i in range(rows)],
            "wind_ms": [4 + (i % 20) * 0.5 for i in range(rows)],
            "turbine": [f"T{i % 3}" for i in range(rows)],
        }
    )
    cur.register("f", frame.to_arrow())
    cur.execute("CREATE TABLE readings AS SELECT * FROM f")
    cur.execute("CREATE VIEW strong AS SELECT * FROM readings WHERE power_kw > 1400")
    cur.close()


def open_page(qtbot, window, objects: int):
    page = window.show_page("data")
    qtbot.waitUntil(lambda: not page.list_loading.active and page.objects.count() == objects, timeout=30_000)
    return page


def click_tab(qtbot, page, title: str) -> None:
    bar = page.tabs.tabBar()
    index = next(i for i in range(bar.count()) if bar.tabText(i) == title)
    qtbot.mouseClick(bar, LEFT, pos=bar.tabRect(index).center())
    assert page.tabs.currentIndex() == index


def run_query(qtbot, page, sql: str, shortcut: bool = False) -> None:
    """Type the statement over what the console holds, then click Run (or press Ctrl+Enter)."""
    click_tab(qtbot, page, "SQL console")
    page.sql.setFocus()
    qtbot.keyClick(page.sql, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(page.sql, sql)
    if shortcut:
        qtbot.keyClick(page.sql, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    else:
        click(qtbot, page.run_button)
    assert page.loading.active and page.sql_status.text() == "Running…"
    qtbot.waitUntil(lambda: not page.loading.active, timeout=30_000)


def answer_save_dialog(path: Path, filter_steps: int = 0) -> None:
    """Once the save dialog is up: move its file-type box down `filter_steps` items with the arrow
    key, type `path` into its name field and press Enter, as a user does."""

    def attempt() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QFileDialog):
            QTimer.singleShot(20, attempt)
            return
        types = dialog.findChild(QComboBox, "fileTypeCombo")
        types.setFocus()
        for _ in range(filter_steps):
            QTest.keyClick(types, Qt.Key.Key_Down)
        name = dialog.findChild(QLineEdit, "fileNameEdit")
        name.setFocus()
        name.selectAll()
        QTest.keyClicks(name, str(path))

        def press_enter() -> None:
            """Enter, again a moment later if the dialog is still up (its path completer can take
            the first one); keys go to the completer's list while it is up, as a keyboard's do."""
            if QApplication.activeModalWidget() is not dialog:  # closed (and deleted), or asking
                return
            QTest.keyClick(QApplication.activePopupWidget() or name, Qt.Key.Key_Return)
            QTimer.singleShot(100, press_enter)

        QTimer.singleShot(50, press_enter)

    QTimer.singleShot(0, attempt)


def export_through_dialog(qtbot, page, button: QPushButton, path: Path, filter_steps: int = 0) -> None:
    answer_save_dialog(path, filter_steps)
    click(qtbot, button)  # the dialog runs (and is answered) inside this click
    qtbot.waitUntil(lambda: not page.loading.active, timeout=30_000)


def read_back(path: Path) -> pl.DataFrame:
    if path.suffix == ".xlsx":
        return pl.read_excel(path)
    if path.suffix == ".csv":
        return pl.read_csv(path, try_parse_dates=True)
    return pl.read_parquet(path)


def curves(page) -> dict[str, list[float]]:
    return {item.name(): list(item.getData()[1]) for item in page.chart.getPlotItem().listDataItems()}


# ---- tests --------------------------------------------------------------------------------------------
def test_empty_states_and_their_calls_to_action(qtbot, window):
    page = open_page(qtbot, window, 0)
    assert page.left.currentWidget() is page.empty
    assert page.preview_stack.currentWidget() is page.preview_empty
    assert not page.export_object_button.isEnabled() and not page.next_button.isEnabled()
    click(qtbot, page.preview_empty.button)  # "Open SQL console"
    assert page.tabs.currentIndex() == 1
    assert page.chart_stack.currentWidget() is page.chart_empty and not page.export_button.isEnabled()
    assert page.result_stack.currentWidget() is page.result_empty
    click(qtbot, page.run_button)  # nothing typed: a hint, no query
    assert page.sql_status.text() == "Type a SELECT statement first" and not page.loading.active
    click(qtbot, page.empty.button)  # "Open pipelines"
    assert window.current_page_name() == "pipelines"


def test_preview_pages_with_the_buttons(qtbot, window):
    fill_historian(window.engine)
    page = open_page(qtbot, window, 2)
    click_row(qtbot, page.objects, "readings")
    assert page.loading.active  # the page loads in the background behind an overlay
    qtbot.waitUntil(lambda: not page.loading.active, timeout=30_000)
    assert page.preview_stack.currentWidget() is page.preview_table
    assert page.page_label.text() == "rows 1–200 of 450"
    assert page.preview_table.frame()["id"].to_list() == list(range(200))
    assert not page.prev_button.isEnabled() and page.next_button.isEnabled()

    def step(button, label, first):
        click(qtbot, button)
        qtbot.waitUntil(lambda: not page.loading.active, timeout=30_000)
        assert page.page_label.text() == label
        assert page.preview_table.frame()["id"][0] == first

    step(page.next_button, "rows 201–400 of 450", 200)
    step(page.next_button, "rows 401–450 of 450", 400)
    assert page.preview_table.frame().height == 50 and not page.next_button.isEnabled()
    step(page.prev_button, "rows 201–400 of 450", 200)

    click(qtbot, page.refresh_button)  # a refresh keeps the table being looked at
    qtbot.waitUntil(lambda: not page.list_loading.active, timeout=30_000)
    assert page.objects.currentItem().text().startswith("readings")
    assert page.page_label.text() == "rows 201–400 of 450"

    click_row(qtbot, page.objects, "strong")
    qtbot.waitUntil(lambda: not page.loading.active, timeout=30_000)
    assert page.page_label.text() == "rows 1–99 of 99"
    assert page.preview_table.frame()["power_kw"].min() > 1400


def test_sql_console_table_and_chart(qtbot, window, artifacts):
    fill_historian(window.engine)
    page = open_page(qtbot, window, 2)
    run_query(
        qtbot,
        page,
        "SELECT id, ts, power_kw, wind_ms, turbine FROM readings WHERE id < 60 ORDER BY id",
        shortcut=True,
    )
    assert page.sql_status.text() == "60 rows" and page.result_stack.currentWidget() is page.result_table
    assert page.sql.placeholderText().startswith("SELECT * FROM readings LIMIT 100")
    assert page.result_table.frame().columns == ["id", "ts", "power_kw", "wind_ms", "turbine"]
    expected = window.engine.data.sql("SELECT * FROM readings WHERE id < 60 ORDER BY id")["frame"]

    # a trend: time across, every numeric column drawn, on a date axis
    assert page.chart_stack.currentWidget() is page.chart
    assert page.chart_x.currentText() == "ts" and page.chart_column.currentText() == "All numeric columns"
    assert isinstance(page.chart.getPlotItem().getAxis("bottom"), pg.DateAxisItem)
    drawn = curves(page)
    assert sorted(drawn) == ["id", "power_kw", "wind_ms"]
    assert drawn["power_kw"] == expected["power_kw"].to_list()
    x = page.chart.getPlotItem().listDataItems()[0].getData()[0]
    assert x[0] == START.timestamp() and x[1] - x[0] == 60

    pick(qtbot, page.chart_column, "power_kw")
    assert list(curves(page)) == ["power_kw"]
    pick(qtbot, page.chart_x, "Row number")
    assert not isinstance(page.chart.getPlotItem().getAxis("bottom"), pg.DateAxisItem)
    pick(qtbot, page.chart_kind, "bar")
    bars = [i for i in page.chart.getPlotItem().items if isinstance(i, pg.BarGraphItem)]
    assert len(bars) == 1 and list(bars[0].opts["height"]) == expected["power_kw"].to_list()
    pick(qtbot, page.chart_column, "All numeric columns")
    assert len([i for i in page.chart.getPlotItem().items if isinstance(i, pg.BarGraphItem)]) == 3
    pick(qtbot, page.chart_kind, "line")
    pick(qtbot, page.chart_x, "ts")
    pick(qtbot, page.chart_column, "power_kw")
    assert isinstance(page.chart.getPlotItem().getAxis("bottom"), pg.DateAxisItem)
    assert page.chart_stack.currentWidget() is page.chart and list(curves(page)) == ["power_kw"]
    window.grab().save(str(artifacts / "data.png"))

    run_query(qtbot, page, "SELECT DISTINCT turbine FROM readings ORDER BY 1")
    assert page.sql_status.text() == "3 rows"
    assert page.chart_stack.currentWidget() is page.chart_empty
    assert page.chart_empty.label.text() == "The result has no numeric column to chart."
    assert not page.chart_column.isEnabled()


def test_errors_are_one_line_and_writes_are_refused(qtbot, window):
    fill_historian(window.engine, rows=5)
    page = open_page(qtbot, window, 2)
    cases = {
        "SELEC id FROM readings": 'Parser Error: syntax error at or near "SELEC"',
        "SELECT * FROM nowhere": "Table with name nowhere does not exist",
        "DROP TABLE readings": "DROP statements are not allowed here",
        "DELETE FROM readings": "DELETE statements are not allowed here",
        "EXPLAIN ANALYZE DELETE FROM readings": "EXPLAIN of DELETE is not allowed here",
        "SELECT 1; DROP TABLE readings": "one statement at a time (got 2)",
    }
    for sql, message in cases.items():
        run_query(qtbot, page, sql)
        status = page.sql_status.text()
        assert status.startswith("✕ SQL console: ") and message in status, status
        assert "\n" not in status and "Traceback" not in status
        assert page.sql_status.property("kind") == "error"
        assert page.run_button.isEnabled()
    # a statement that slips a write inside a SELECT is run in a transaction that is rolled back
    run_query(qtbot, page, "WITH gone AS (DELETE FROM readings RETURNING *) SELECT count(*) AS n FROM gone")
    run_query(qtbot, page, "SELECT count(*) AS n FROM readings")
    assert page.sql_status.text() == "1 row" and page.result["n"].to_list() == [5]


def test_exports_through_the_save_dialog(qtbot, window, tmp_path):
    tmp_path = tmp_path / "exports"  # (the engine's data dir is tmp_path / "data")
    tmp_path.mkdir()
    fill_historian(window.engine)
    page = open_page(qtbot, window, 2)
    run_query(qtbot, page, "SELECT id, ts, power_kw, turbine FROM readings WHERE id < 60 ORDER BY id")
    for suffix in ("csv", "parquet", "xlsx"):
        target = tmp_path / f"result.{suffix}"
        export_through_dialog(qtbot, page, page.export_button, target)
        assert target.exists()
        back = read_back(target)
        want = page.result
        if suffix != "parquet":  # CSV and Excel keep no time zone: the same instants, in UTC
            want = want.with_columns(pl.col("ts").dt.replace_time_zone(None))
            back = back.with_columns(pl.col("ts").cast(pl.Datetime("us")))
        assert_frame_equal(back, want)
        assert any(f"Exported to {target}" in t.text for t in window.toasts.toasts)

    # the whole view, with Parquet picked in the dialog and the name typed without a suffix
    click_row(qtbot, page.objects, "strong")
    qtbot.waitUntil(lambda: not page.loading.active, timeout=30_000)
    export_through_dialog(qtbot, page, page.export_object_button, tmp_path / "strong", filter_steps=1)
    whole = pl.read_parquet(tmp_path / "strong.parquet")
    assert whole.height == 99 and whole["power_kw"].min() > 1400
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "result.csv",
        "result.parquet",
        "result.xlsx",
        "strong.parquet",
    ]  # no temporary file left behind

    # a failed export says why in one line and leaves no file, whole or partial
    run_query(qtbot, page, "SELECT [1, 2] AS pair")
    assert page.sql_status.text() == "1 row"
    export_through_dialog(qtbot, page, page.export_button, tmp_path / "pairs.csv")
    errors = [t.text for t in window.toasts.toasts if t.kind == "error"]
    assert len(errors) == 1 and errors[0].startswith(f"Export failed: export to {tmp_path / 'pairs.csv'}: ")
    assert "nested data" in errors[0] and "\n" not in errors[0]
    assert len(list(tmp_path.iterdir())) == 4


def keep_screenshot(artifacts):
    DOCS.mkdir(parents=True, exist_ok=True)
    shutil.copy(artifacts / "data.png", DOCS / "data.png")
