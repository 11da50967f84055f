"""Data page: the historian's tables and views with a paged preview, a read-only SQL console with a
table and a chart of the result, and export to CSV, Parquet and Excel (written by the engine)."""

from __future__ import annotations

from typing import Any

import polars as pl
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ui.pages.base import Page
from ui.widgets.empty_state import EmptyState
from ui.widgets.frame_table import FrameTable
from ui.widgets.loading import LoadingOverlay

PAGE_ROWS = 200
SQL_ROW_LIMIT = 10_000


class DataPage(Page):
    title = "Data"
    icon_name = "data"

    def __init__(self, window):
        super().__init__(window)
        self.object_name: str | None = None
        self.offset = 0
        self.total = 0
        self.result = pl.DataFrame()

        self.objects = QListWidget()
        self.objects.currentItemChanged.connect(
            lambda item, _p: item and self.preview(item.data(Qt.ItemDataRole.UserRole))
        )
        self.empty = EmptyState(
            "The historian has no tables yet. Run a pipeline that writes to it.",
            "Open pipelines",
            lambda: self.main_window.show_page("pipelines"),
        )
        self.left = QStackedWidget()
        self.left.addWidget(self.empty)
        self.left.addWidget(self.objects)

        # preview tab
        self.preview_table = FrameTable()
        self.page_label = QLabel()
        self.prev_button, self.next_button = QPushButton("◀ Previous"), QPushButton("Next ▶")
        self.prev_button.clicked.connect(lambda: self._page(-1))
        self.next_button.clicked.connect(lambda: self._page(1))
        self.export_object_button = QPushButton("Export table…")
        self.export_object_button.clicked.connect(self.export_object_dialog)
        nav = QHBoxLayout()
        for w in (self.prev_button, self.next_button, self.page_label):
            nav.addWidget(w)
        nav.addStretch(1)
        nav.addWidget(self.export_object_button)
        preview = QWidget()
        preview_layout = QVBoxLayout(preview)
        preview_layout.addWidget(self.preview_table, 1)
        preview_layout.addLayout(nav)

        # SQL tab
        self.sql = QPlainTextEdit()
        self.sql.setPlaceholderText("SELECT * FROM tags LIMIT 100   (read-only; Ctrl+Enter runs)")
        self.sql.setMaximumHeight(110)
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("PrimaryButton")
        self.run_button.clicked.connect(self.run_sql)
        self.sql_status = QLabel()
        self.sql_status.setWordWrap(True)
        self.export_button = QPushButton("Export result…")
        self.export_button.clicked.connect(self.export_result_dialog)
        self.result_table = FrameTable()
        self.chart_column = QComboBox()
        self.chart_kind = QComboBox()
        self.chart_kind.addItems(["line", "bar"])
        self.chart_column.currentIndexChanged.connect(self.draw_chart)
        self.chart_kind.currentIndexChanged.connect(self.draw_chart)
        import pyqtgraph as pg

        self.chart = pg.PlotWidget()
        self.chart.setMinimumHeight(160)
        self.chart.showGrid(x=True, y=True, alpha=0.3)
        bar = QHBoxLayout()
        bar.addWidget(self.run_button)
        bar.addWidget(self.sql_status, 1)
        bar.addWidget(QLabel("Chart"))
        bar.addWidget(self.chart_column)
        bar.addWidget(self.chart_kind)
        bar.addWidget(self.export_button)
        results = QSplitter(Qt.Orientation.Vertical)
        results.addWidget(self.result_table)
        results.addWidget(self.chart)
        console = QWidget()
        console_layout = QVBoxLayout(console)
        console_layout.addWidget(self.sql)
        console_layout.addLayout(bar)
        console_layout.addWidget(results, 1)

        self.tabs = QTabWidget()
        self.tabs.addTab(preview, "Preview")
        self.tabs.addTab(console, "SQL console")
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(QLabel("<b>Tables and views</b>"))
        left_layout.addWidget(self.left, 1)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        left_layout.addWidget(refresh)
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(self.tabs)
        splitter.setSizes([240, 760])
        QVBoxLayout(self).addWidget(splitter)
        self.loading = LoadingOverlay(self.tabs)
        self.list_loading = LoadingOverlay(left)
        from PySide6.QtGui import QKeySequence, QShortcut

        QShortcut(QKeySequence("Ctrl+Return"), self.sql, self.run_sql)
        self._update_nav()
        self.refresh()

    def on_show(self) -> None:
        self.refresh()

    # ---- objects and preview -----------------------------------------------------------------
    def refresh(self) -> None:
        self.list_loading.start("Loading tables…")
        self.bridge.call(self.engine.call(self.engine.data_objects), self._show_objects, self._failed)

    def _show_objects(self, objects: list[dict[str, Any]]) -> None:
        self.list_loading.stop()
        self.objects.blockSignals(True)
        self.objects.clear()
        for o in objects:
            rows = f" · ~{o['rows']:,} rows" if o["rows"] is not None else ""
            item = QListWidgetItem(f"{o['name']}\n{o['kind']}{rows}")
            item.setData(Qt.ItemDataRole.UserRole, o["name"])
            self.objects.addItem(item)
        self.objects.blockSignals(False)
        self.left.setCurrentWidget(self.objects if objects else self.empty)

    def preview(self, name: str, offset: int = 0) -> None:
        self.object_name, self.offset = name, offset
        self.tabs.setCurrentIndex(0)
        self.loading.start(f"Loading {name}…")
        future = self.engine.call(lambda: self.engine.preview_object(name, offset, PAGE_ROWS))
        self.bridge.call(future, self._show_page, self._failed)

    def _show_page(self, page: dict[str, Any]) -> None:
        self.loading.stop()
        self.total = page["total"]
        self.preview_table.set_frame(page["frame"])
        self._update_nav()

    def _page(self, step: int) -> None:
        if self.object_name:
            self.preview(self.object_name, max(0, self.offset + step * PAGE_ROWS))

    def _update_nav(self) -> None:
        shown = self.preview_table.frame().height if self.object_name else 0
        first = self.offset + 1 if shown else 0
        self.page_label.setText(
            f"rows {first:,}–{self.offset + shown:,} of {self.total:,}" if self.object_name else ""
        )
        self.prev_button.setEnabled(self.offset > 0)
        self.next_button.setEnabled(self.offset + shown < self.total)
        self.export_object_button.setEnabled(self.object_name is not None)

    def _failed(self, exc: BaseException) -> None:
        self.loading.stop()
        self.list_loading.stop()
        self.sql_status.setText(f"✕ {exc}")
        self.toast("error", str(exc))

    # ---- SQL console ---------------------------------------------------------------------------
    def run_sql(self) -> None:
        sql = self.sql.toPlainText().strip()
        if not sql:
            return
        self.loading.start("Running query…")
        self.sql_status.setText("Running…")
        future = self.engine.call(lambda: self.engine.run_sql(sql, SQL_ROW_LIMIT))
        self.bridge.call(future, self._show_result, self._failed)

    def _show_result(self, result: dict[str, Any]) -> None:
        self.loading.stop()
        self.result = result["frame"]
        self.result_table.set_frame(self.result)
        more = f" (first {SQL_ROW_LIMIT:,}; more not shown)" if result["truncated"] else ""
        self.sql_status.setText(f"{result['rows']:,} rows{more}")
        numeric = [c for c, t in self.result.schema.items() if t.is_numeric()]
        self.chart_column.blockSignals(True)
        self.chart_column.clear()
        self.chart_column.addItems(numeric)
        self.chart_column.blockSignals(False)
        self.draw_chart()

    def draw_chart(self) -> None:
        import pyqtgraph as pg

        self.chart.clear()
        column = self.chart_column.currentText()
        if not column or column not in self.result.columns:
            return
        y = self.result[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        x = list(range(len(y)))
        if self.chart_kind.currentText() == "bar":
            self.chart.addItem(pg.BarGraphItem(x=x, height=y, width=0.8, brush="#3b82f6"))
        else:
            self.chart.plot(x, y, pen=pg.mkPen("#3b82f6", width=2))
        self.chart.setLabel("left", column)

    # ---- export --------------------------------------------------------------------------------
    def _ask_path(self, stem: str) -> str:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export", f"{stem}.csv", "CSV (*.csv);;Parquet (*.parquet);;Excel (*.xlsx)"
        )
        return path

    def export_result_dialog(self) -> None:
        path = self._ask_path("query")
        if path:
            self.export_result(path)

    def export_object_dialog(self) -> None:
        if self.object_name and (path := self._ask_path(self.object_name)):
            self.export_object(path)

    def export_result(self, path: str) -> None:
        frame = self.result
        self._export(lambda: self.engine.export_frame(frame, path))

    def export_object(self, path: str) -> None:
        name = self.object_name
        self._export(lambda: self.engine.export_object(name, path))

    def _export(self, work) -> None:
        self.loading.start("Exporting…")
        self.bridge.call(self.engine.submit("export", lambda _cancel: work()), self._exported, self._failed)

    def _exported(self, path) -> None:
        self.loading.stop()
        self.toast("success", f"Exported to {path}")
