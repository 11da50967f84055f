"""Data page: the historian's tables and views with a paged preview, a read-only SQL console with a
table and a chart of the result, and export to CSV, Parquet and Excel (written by the engine).

Every DuckDB or disk access runs on the engine (`call`/`submit`); this page only shows results. An
error is one line in the console's status (never a traceback), and a write statement is refused by
the engine before it runs: the console reads, pipelines write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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

from ui.errors import one_line
from ui.pages.base import Page
from ui.widgets.empty_state import EmptyState
from ui.widgets.frame_table import FrameTable
from ui.widgets.loading import LoadingOverlay

PAGE_ROWS = 200
SQL_ROW_LIMIT = 10_000
# The save dialog's filters, and the suffix each one adds to a name typed without one.
EXPORT_FILTERS = {"CSV (*.csv)": ".csv", "Parquet (*.parquet)": ".parquet", "Excel (*.xlsx)": ".xlsx"}
ROW_NUMBER = "Row number"
ALL_NUMERIC = "All numeric columns"
CURVE_COLOURS = ("#3b82f6", "#ef4444", "#10b981", "#f59e0b", "#8b5cf6", "#ec4899", "#14b8a6", "#64748b")


def export_path(path: str, chosen_filter: str) -> str:
    """The path typed in the save dialog, with the chosen format's suffix when it has no known one
    (typing `readings` with "Parquet" chosen writes `readings.parquet`, not a CSV named oddly)."""
    if not path or Path(path).suffix.lower() in EXPORT_FILTERS.values():
        return path
    return path + EXPORT_FILTERS.get(chosen_filter, ".csv")


class DataPage(Page):
    title = "Data"
    icon_name = "data"

    def __init__(self, window):
        super().__init__(window)
        self.object_name: str | None = None
        self.offset = 0
        self.total = 0
        self.result = pl.DataFrame()
        self.has_result = False
        self.export_dir = Path.home()

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

        # preview tab: a hint until a table is picked, then the table and its page buttons
        self.preview_table = FrameTable()
        self.preview_empty = EmptyState(
            "Pick a table or view on the left to page through its rows,\nor query them in the SQL console.",
            "Open SQL console",
            lambda: self.tabs.setCurrentIndex(1),
        )
        self.preview_stack = QStackedWidget()
        self.preview_stack.addWidget(self.preview_empty)
        self.preview_stack.addWidget(self.preview_table)
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
        preview_layout.addWidget(self.preview_stack, 1)
        preview_layout.addLayout(nav)

        # SQL tab
        self.sql = QPlainTextEdit()
        self.sql.setPlaceholderText("SELECT * FROM tags LIMIT 100   (read-only; Ctrl+Enter runs)")
        self.sql.setMaximumHeight(110)
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("PrimaryButton")
        self.run_button.setToolTip("Run the query (Ctrl+Enter). The console is read-only.")
        self.run_button.clicked.connect(self.run_sql)
        self.sql_status = QLabel()
        self.sql_status.setObjectName("sql_status")
        self.sql_status.setWordWrap(True)
        self.sql_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.export_button = QPushButton("Export result…")
        self.export_button.clicked.connect(self.export_result_dialog)
        self.result_table = FrameTable()
        self.result_empty = EmptyState(
            "Write a query above and press Run (Ctrl+Enter): its rows show here.\n"
            "The console only reads; pipelines write."
        )
        self.result_stack = QStackedWidget()
        self.result_stack.addWidget(self.result_empty)
        self.result_stack.addWidget(self.result_table)
        self.chart_x = QComboBox()
        self.chart_x.setToolTip("the chart's horizontal axis")
        self.chart_column = QComboBox()
        self.chart_column.setToolTip("the numeric column(s) drawn")
        self.chart_column.setMinimumContentsLength(12)
        self.chart_kind = QComboBox()
        self.chart_kind.addItems(["line", "bar"])
        for combo in (self.chart_x, self.chart_column, self.chart_kind):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
            combo.currentIndexChanged.connect(self.draw_chart)
        import pyqtgraph as pg

        # Two plots, one with a date axis for a time X: pyqtgraph cannot swap a plot's axis cleanly.
        self.number_chart = pg.PlotWidget()
        self.time_chart = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem()})
        self.chart = self.number_chart  # the one shown
        self.chart_empty = EmptyState("Run a query: its numeric columns are charted here.")
        self.chart_stack = QStackedWidget()
        self.chart_stack.addWidget(self.chart_empty)
        for plot in (self.number_chart, self.time_chart):
            plot.setMinimumHeight(160)
            plot.showGrid(x=True, y=True, alpha=0.3)
            plot.addLegend(offset=(10, 10))
            self.chart_stack.addWidget(plot)
        bar = QHBoxLayout()
        bar.addWidget(self.run_button)
        bar.addWidget(self.sql_status, 1)
        chart_bar = QHBoxLayout()
        chart_bar.addWidget(QLabel("Chart"))
        chart_bar.addWidget(self.chart_column)
        chart_bar.addWidget(QLabel("against"))
        chart_bar.addWidget(self.chart_x)
        chart_bar.addWidget(QLabel("as"))
        chart_bar.addWidget(self.chart_kind)
        chart_bar.addStretch(1)
        chart_bar.addWidget(self.export_button)
        results = QSplitter(Qt.Orientation.Vertical)
        results.addWidget(self.result_stack)
        results.addWidget(self.chart_stack)
        console = QWidget()
        console_layout = QVBoxLayout(console)
        console_layout.addWidget(self.sql)
        console_layout.addLayout(bar)
        console_layout.addWidget(results, 1)
        console_layout.addLayout(chart_bar)

        self.tabs = QTabWidget()
        self.tabs.addTab(preview, "Preview")
        self.tabs.addTab(console, "SQL console")
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(QLabel("<b>Tables and views</b>"))
        left_layout.addWidget(self.left, 1)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        left_layout.addWidget(self.refresh_button)
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
        self._update_chart_controls()
        self.refresh()

    def on_show(self) -> None:
        self.refresh()

    # ---- objects and preview -----------------------------------------------------------------
    def refresh(self) -> None:
        self.list_loading.start("Loading tables…")
        self.bridge.call(self.engine.call(self.engine.data.objects), self._show_objects, self._list_failed)

    def _show_objects(self, objects: list[dict[str, Any]]) -> None:
        self.list_loading.stop()
        self.objects.blockSignals(True)
        self.objects.clear()
        for o in objects:
            rows = f" · ~{o['rows']:,} rows" if o["rows"] is not None else ""
            item = QListWidgetItem(f"{o['name']}\n{o['kind']}{rows}")
            item.setData(Qt.ItemDataRole.UserRole, o["name"])
            self.objects.addItem(item)
            if o["name"] == self.object_name:  # a refresh keeps the table being looked at selected
                self.objects.setCurrentItem(item)
        self.objects.blockSignals(False)
        self.left.setCurrentWidget(self.objects if objects else self.empty)
        example = objects[0]["name"] if objects else "tags"  # a query that would run here
        self.sql.setPlaceholderText(f"SELECT * FROM {example} LIMIT 100   (read-only; Ctrl+Enter runs)")

    def _list_failed(self, exc: BaseException) -> None:
        self.list_loading.stop()
        self.toast("error", one_line(exc))

    def preview(self, name: str, offset: int = 0) -> None:
        self.object_name, self.offset = name, offset
        self.tabs.setCurrentIndex(0)
        self.loading.start(f"Loading {name}…")
        future = self.engine.call(self.engine.data.preview_object, name, offset, PAGE_ROWS)
        self.bridge.call(future, self._show_page, self._preview_failed)

    def _show_page(self, page: dict[str, Any]) -> None:
        self.loading.stop()
        self.total = page["total"]
        self.preview_table.set_frame(page["frame"])
        self.preview_stack.setCurrentWidget(self.preview_table)
        self._update_nav()

    def _preview_failed(self, exc: BaseException) -> None:
        self.loading.stop()
        self.toast("error", one_line(exc))
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

    # ---- SQL console ---------------------------------------------------------------------------
    def run_sql(self) -> None:
        sql = self.sql.toPlainText().strip()
        if not sql:
            self._status("error", "Type a SELECT statement first")
            self.sql.setFocus()
            return
        self.loading.start("Running query…")
        self.run_button.setEnabled(False)
        self._status("busy", "Running…")
        future = self.engine.call(self.engine.data.sql, sql, SQL_ROW_LIMIT)
        self.bridge.call(future, self._show_result, self._sql_failed)

    def _status(self, kind: str, text: str) -> None:
        colour = {"error": "#c62828", "busy": "#757575"}.get(kind, "")
        self.sql_status.setProperty("kind", kind)
        self.sql_status.setStyleSheet(f"color:{colour};" if colour else "")
        self.sql_status.setText(text)

    def _sql_failed(self, exc: BaseException) -> None:
        self.loading.stop()
        self.run_button.setEnabled(True)
        self._status("error", f"✕ {one_line(exc)}")

    def _show_result(self, result: dict[str, Any]) -> None:
        self.loading.stop()
        self.run_button.setEnabled(True)
        self.result = result["frame"]
        self.has_result = True
        self.result_table.set_frame(self.result)
        self.result_stack.setCurrentWidget(self.result_table)
        more = f" (first {SQL_ROW_LIMIT:,}; more not shown)" if result["truncated"] else ""
        noun = "row" if result["rows"] == 1 else "rows"
        self._status("ok", f"{result['rows']:,} {noun}{more}")
        self._update_chart_controls()

    def numeric_columns(self) -> list[str]:
        return [c for c, t in self.result.schema.items() if t.is_numeric()]

    def _update_chart_controls(self) -> None:
        """Offer the result's columns: Y is every numeric column (or one), X the row number or a
        time or numeric column; a time column, when there is one, is the X a trend wants."""
        numeric = self.numeric_columns()
        temporal = [c for c, t in self.result.schema.items() if t.is_temporal()]
        for combo in (self.chart_x, self.chart_column):
            combo.blockSignals(True)
            combo.clear()
        self.chart_x.addItems([ROW_NUMBER, *temporal, *numeric])
        self.chart_x.setCurrentIndex(1 if temporal else 0)
        self.chart_column.addItems([ALL_NUMERIC, *numeric] if numeric else [])
        for combo in (self.chart_x, self.chart_column):
            combo.blockSignals(False)
        for widget in (self.chart_x, self.chart_column, self.chart_kind):
            widget.setEnabled(bool(numeric))
        self.export_button.setEnabled(self.has_result)
        self.draw_chart()

    def charted_columns(self) -> list[str]:
        """The Y columns drawn now: the one picked, or every numeric column but the X one."""
        picked = self.chart_column.currentText()
        if picked and picked != ALL_NUMERIC:
            return [picked] if picked in self.result.columns else []
        return [c for c in self.numeric_columns() if c != self.chart_x.currentText()]

    def draw_chart(self) -> None:
        import pyqtgraph as pg

        for plot in (self.number_chart, self.time_chart):
            plot.clear()
        columns = self.charted_columns() if self.has_result else []
        if not columns:
            self.chart_empty.set_text(
                "The result has no numeric column to chart."
                if self.has_result
                else "Run a query: its numeric columns are charted here."
            )
            self.chart_stack.setCurrentWidget(self.chart_empty)
            return
        x_name = self.chart_x.currentText()
        is_time = x_name in self.result.columns and self.result.schema[x_name].is_temporal()
        self.chart = self.time_chart if is_time else self.number_chart
        self.chart_stack.setCurrentWidget(self.chart)
        plot = self.chart.getPlotItem()
        plot.setLabel("bottom", x_name if x_name != ROW_NUMBER else "row")
        plot.setLabel("left", columns[0] if len(columns) == 1 else "value")
        if x_name in self.result.columns:
            series = self.result[x_name]
            if is_time:
                series = series.cast(pl.Datetime("us")).dt.epoch("us") / 1e6
            x = series.cast(pl.Float64).fill_null(float("nan")).to_numpy()
        else:
            x = np.arange(self.result.height, dtype=float)
        bar = self.chart_kind.currentText() == "bar"
        steps = np.diff(np.sort(x[np.isfinite(x)]))
        step = float(steps[steps > 0].min()) if (steps > 0).any() else 1.0
        width = 0.8 * step / len(columns)
        for i, column in enumerate(columns):
            colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
            y = self.result[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()
            if bar:  # side by side within each x step
                offset = (i - (len(columns) - 1) / 2) * width
                item = pg.BarGraphItem(x=x + offset, height=y, width=width, brush=colour, name=column)
                self.chart.addItem(item)
            else:
                self.chart.plot(x, y, pen=pg.mkPen(colour, width=2), name=column, connect="finite")
        self.chart.enableAutoRange()

    # ---- export --------------------------------------------------------------------------------
    def _ask_path(self, stem: str) -> str:
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export", str(self.export_dir / f"{stem}.csv"), ";;".join(EXPORT_FILTERS)
        )
        if path:
            self.export_dir = Path(path).parent
        return export_path(path, chosen)

    def export_result_dialog(self) -> None:
        if self.has_result and (path := self._ask_path("query")):
            self.export_result(path)

    def export_object_dialog(self) -> None:
        if self.object_name and (path := self._ask_path(self.object_name.replace(".", "_"))):
            self.export_object(path)

    def export_result(self, path: str) -> None:
        frame = self.result
        self._export(self.engine.data.export_frame(frame, path))

    def export_object(self, path: str) -> None:
        name = self.object_name
        self._export(self.engine.data.export_object(name, path))

    def _export(self, job) -> None:
        self.loading.start("Exporting…")
        self.bridge.call(job, self._exported, self._export_failed)

    def _exported(self, path) -> None:
        self.loading.stop()
        self.toast("success", f"Exported to {path}")

    def _export_failed(self, exc: BaseException) -> None:
        self.loading.stop()
        self.toast("error", f"Export failed: {one_line(exc)}")
