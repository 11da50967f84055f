"""Data page: tables and views listed, paged preview, SQL console with table and chart, exports."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
from PySide6.QtCore import Qt

DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"


def fill_historian(engine, rows=450):
    cur = engine.workspace.historian.cursor()
    frame = pl.DataFrame(
        {
            "id": range(rows),
            "power_kw": [1000 + (i % 50) * 10.5 for i in range(rows)],
            "turbine": [f"T{i % 3}" for i in range(rows)],
        }
    )
    cur.register("f", frame.to_arrow())
    cur.execute("CREATE TABLE readings AS SELECT * FROM f")
    cur.execute("CREATE VIEW strong AS SELECT * FROM readings WHERE power_kw > 1400")
    cur.close()


def test_empty_state_without_tables(qtbot, window):
    page = window.show_page("data")
    qtbot.waitUntil(lambda: not page.list_loading.active, timeout=5000)
    assert page.left.currentWidget() is page.empty


def test_preview_sql_chart_and_export(qtbot, window, artifacts, tmp_path):
    fill_historian(window.engine)
    page = window.show_page("data")
    qtbot.waitUntil(lambda: page.objects.count() == 2, timeout=5000)
    page.objects.setCurrentRow(
        [page.objects.item(i).data(Qt.ItemDataRole.UserRole) for i in range(2)].index("readings")
    )
    qtbot.waitUntil(lambda: page.total == 450, timeout=5000)
    assert page.preview_table.frame().height == 200 and "1–200 of 450" in page.page_label.text()
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.offset == 200 and page.preview_table.frame()["id"][0] == 200, timeout=5000)

    page.tabs.setCurrentIndex(1)
    qtbot.keyClicks(page.sql, "SELECT id, power_kw FROM readings WHERE id < 60 ORDER BY id")
    qtbot.mouseClick(page.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.result.height == 60, timeout=5000)
    assert page.result_table.frame().columns == ["id", "power_kw"]
    assert page.chart_column.currentText() == "id"
    page.chart_column.setCurrentText("power_kw")
    assert page.chart.getPlotItem().listDataItems()
    page.chart_kind.setCurrentText("bar")
    assert page.chart.getPlotItem().items
    window.grab().save(str(artifacts / "data.png"))

    for suffix in ("csv", "parquet", "xlsx"):
        target = tmp_path / f"result.{suffix}"
        page.export_result(str(target))
        qtbot.waitUntil(target.exists, timeout=10000)
        back = pl.read_excel(target) if suffix == "xlsx" else getattr(pl, f"read_{suffix}")(target)
        assert back["id"].to_list() == list(range(60))
    whole = tmp_path / "strong.parquet"
    page.object_name = "strong"
    page.export_object(str(whole))
    qtbot.waitUntil(whole.exists, timeout=10000)
    assert pl.read_parquet(whole)["power_kw"].min() > 1400


def test_writes_are_refused(qtbot, window):
    fill_historian(window.engine, rows=5)
    page = window.show_page("data")
    page.tabs.setCurrentIndex(1)
    page.sql.setPlainText("DROP TABLE readings")
    qtbot.mouseClick(page.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "not allowed" in page.sql_status.text(), timeout=5000)
    assert window.engine.run_sql("SELECT count(*) AS n FROM readings")["frame"]["n"][0] == 5


def keep_screenshot(artifacts):
    DOCS.mkdir(parents=True, exist_ok=True)
    shutil.copy(artifacts / "data.png", DOCS / "data.png")
