"""Runs: the history (status, pipeline, start, duration, rows in/out/rejected) with filters by
status, pipeline and time; a run's detail (node statistics, log, rejected records); re-run.

Every read goes through the engine's pool (`engine.call`) and comes back through the bridge.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ui.pages.base import Page
from ui.widgets.empty_state import EmptyState
from ui.widgets.frame_table import FrameTable
from ui.widgets.loading import LoadingOverlay

STATUSES = ("success", "warning", "failed", "cancelled", "running", "retrying")
RANGES = {"Any time": None, "Last hour": 1, "Last 24 hours": 24, "Last 7 days": 24 * 7}
COLUMNS = ("Status", "Pipeline", "Started", "Duration", "Rows in", "Rows out", "Rejected", "Trigger")
NODE_COLUMNS = ("Node", "Kind", "Status", "Rows in", "Rows out", "Rejected", "Time (s)")
STATUS_COLOURS = {
    "success": QColor(46, 160, 67),
    "warning": QColor(210, 150, 0),
    "failed": QColor(215, 58, 73),
    "cancelled": QColor(130, 130, 130),
    "running": QColor(40, 120, 220),
    "retrying": QColor(40, 120, 220),
}
ALL = "All"


def _local(ts: str | None) -> str:
    if not ts:
        return ""
    moment = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    if seconds < 60:
        return f"{seconds:.2f} s"
    return str(timedelta(seconds=round(seconds)))


def _item(value: Any, numeric: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem("" if value is None else str(value))
    if numeric:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


def _table(headers: tuple[str, ...]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setAlternatingRowColors(True)
    table.verticalHeader().hide()
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    return table


class RunsPage(Page):
    title = "Runs"
    icon_name = "runs"

    def __init__(self, window):
        super().__init__(window)
        self.records: list[dict[str, Any]] = []
        self.detail: dict[str, Any] | None = None
        self._want_run: str | None = None  # select this run once the list arrives
        self._loading = 0
        self._generation = 0
        self._refresh_later = QTimer(self)
        self._refresh_later.setSingleShot(True)
        self._refresh_later.setInterval(300)
        self._refresh_later.timeout.connect(self.refresh)

        # filters
        self.status_filter = QComboBox()
        self.status_filter.addItems([ALL, *STATUSES])
        self.pipeline_filter = QComboBox()
        self.pipeline_filter.addItem(ALL)
        self.pipeline_filter.setMinimumWidth(220)
        self.time_filter = QComboBox()
        self.time_filter.addItems(list(RANGES))
        for box in (self.status_filter, self.pipeline_filter, self.time_filter):
            box.currentIndexChanged.connect(self.refresh)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.rerun_button = QPushButton("Re-run")
        self.rerun_button.setObjectName("PrimaryButton")
        self.rerun_button.setEnabled(False)
        self.rerun_button.clicked.connect(self.rerun_selected)
        bar = QHBoxLayout()
        for label, box in (("Status", self.status_filter), ("Pipeline", self.pipeline_filter)):
            bar.addWidget(QLabel(label))
            bar.addWidget(box)
        bar.addWidget(QLabel("Started"))
        bar.addWidget(self.time_filter)
        bar.addStretch(1)
        bar.addWidget(self.refresh_button)
        bar.addWidget(self.rerun_button)

        # history + detail
        self.table = _table(COLUMNS)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.summary = QLabel("Select a run to see its nodes, log and rejected records")
        self.summary.setObjectName("RunSummary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.nodes_table = _table(NODE_COLUMNS)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setObjectName("RunLog")
        self.rejects_table = FrameTable()
        self.detail_tabs = QTabWidget()
        self.detail_tabs.addTab(self.nodes_table, "Nodes")
        self.detail_tabs.addTab(self.log_view, "Log")
        self.detail_tabs.addTab(self.rejects_table, "Rejected")
        detail = QWidget()
        column = QVBoxLayout(detail)
        column.setContentsMargins(0, 6, 0, 0)
        column.addWidget(self.summary)
        column.addWidget(self.detail_tabs, 1)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(detail)
        splitter.setSizes([320, 380])

        # empty states: nothing ever ran / nothing matches the filters
        self.no_runs = EmptyState(
            "No runs yet. Run a pipeline from the editor (F5) and it shows up here.",
            "Open pipelines",
            lambda: self.main_window.show_page("pipelines"),
        )
        self.no_match = EmptyState("No runs match these filters.", "Clear filters", self.clear_filters)
        self.stack = QStackedWidget()
        for widget in (splitter, self.no_runs, self.no_match):
            self.stack.addWidget(widget)
        self.content = splitter

        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.stack, 1)
        self.overlay = LoadingOverlay(self.stack, "Loading runs…")
        self.detail_overlay = LoadingOverlay(self.detail_tabs, "Loading run…")
        self.bridge.event.connect(self._on_event)

    # ---- page --------------------------------------------------------------------------------
    def on_show(self) -> None:
        self.refresh()

    def _on_event(self, event: dict) -> None:
        if event.get("event") in ("run_started", "run_finished") and self.isVisible():
            self._refresh_later.start()  # coalesce bursts (many runs finishing together)

    # ---- history -----------------------------------------------------------------------------
    def filters(self) -> dict[str, Any]:
        status = self.status_filter.currentText()
        pipeline = self.pipeline_filter.currentText()
        hours = RANGES[self.time_filter.currentText()]
        return {
            "status": None if status == ALL else status,
            "pipeline": None if pipeline == ALL else pipeline,
            "since": datetime.now(UTC) - timedelta(hours=hours) if hours else None,
        }

    def clear_filters(self) -> None:
        for box in (self.status_filter, self.pipeline_filter, self.time_filter):
            box.blockSignals(True)
            box.setCurrentIndex(0)
            box.blockSignals(False)
        self.refresh()

    def refresh(self) -> None:
        filters = self.filters()
        engine = self.engine
        self._loading += 1
        self._generation += 1
        generation = self._generation
        self.overlay.start("Loading runs…")
        future = engine.call(lambda: (engine.runs(**filters), engine.pipeline_names()))
        self.bridge.call(future, lambda result: self._show_runs(result, generation), self._load_failed)

    def _load_failed(self, error: BaseException) -> None:
        self._loading_done()
        self.toast("error", f"Runs could not be read: {error}")

    def _loading_done(self) -> None:
        self._loading = max(0, self._loading - 1)
        if not self._loading:
            self.overlay.stop()

    def _show_runs(self, result, generation: int) -> None:
        records, pipelines = result
        self._loading_done()
        if generation != self._generation:
            return  # the pool answered an older query after a newer one: the newer one wins
        self._set_pipelines(pipelines)
        keep = self._want_run or self.selected_run_id()
        self.records = records
        self.table.blockSignals(True)
        self.table.setRowCount(len(records))
        for row, r in enumerate(records):
            status = _item(r["status"])
            status.setForeground(STATUS_COLOURS.get(r["status"], QColor(120, 120, 120)))
            status.setToolTip(r.get("error") or r["status"])
            status.setData(Qt.ItemDataRole.UserRole, r["run_id"])
            cells = [
                status,
                _item(r["pipeline"]),
                _item(_local(r.get("started_at"))),
                _item(_duration(r.get("duration_s")), True),
                _item(r.get("rows_in"), True),
                _item(r.get("rows_out"), True),
                _item(r.get("rows_rejected"), True),
                _item(r.get("trigger")),
            ]
            for col, cell in enumerate(cells):
                self.table.setItem(row, col, cell)
        self.table.blockSignals(False)
        if records:
            self.stack.setCurrentWidget(self.content)
        else:
            filtered = any(self.filters().values())
            self.stack.setCurrentWidget(self.no_match if filtered else self.no_runs)
        ids = [r["run_id"] for r in records]
        if keep in ids:
            self._want_run = None
            self.table.selectRow(ids.index(keep))
            if self.detail is None or self.detail["record"]["run_id"] != keep:
                self._selection_changed()
        elif records and self.selected_run_id() is None:
            self.table.selectRow(0)
        if not records:
            self._show_detail(None)

    def _set_pipelines(self, names: list[str]) -> None:
        current = self.pipeline_filter.currentText()
        if [self.pipeline_filter.itemText(i) for i in range(1, self.pipeline_filter.count())] == names:
            return
        self.pipeline_filter.blockSignals(True)
        self.pipeline_filter.clear()
        self.pipeline_filter.addItems([ALL, *names])
        self.pipeline_filter.setCurrentText(current if current in names else ALL)
        self.pipeline_filter.blockSignals(False)

    def selected_run_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)

    def show_run(self, run_id: str) -> None:
        """Select `run_id` (clearing filters that would hide it) and show its detail."""
        self._want_run = run_id
        self.clear_filters()

    # ---- detail ------------------------------------------------------------------------------
    def _selection_changed(self) -> None:
        run_id = self.selected_run_id()
        self.rerun_button.setEnabled(run_id is not None)
        if run_id is None:
            return
        self.detail_overlay.start("Loading run…")
        future = self.engine.call(lambda: self.engine.run_detail(run_id))
        self.bridge.call(future, self._show_detail, self._detail_failed)

    def _detail_failed(self, error: BaseException) -> None:
        self.detail_overlay.stop()
        self.toast("error", str(error))

    def _show_detail(self, detail: dict[str, Any] | None) -> None:
        self.detail_overlay.stop()
        if detail is not None and detail["record"]["run_id"] != self.selected_run_id():
            return  # the selection moved on while this one loaded
        self.detail = detail
        if detail is None:
            self.summary.setText("")
            self.nodes_table.setRowCount(0)
            self.log_view.clear()
            self.rejects_table.set_frame(pl.DataFrame())
            return
        r = detail["record"]
        text = (
            f"<b>{r['pipeline']}</b> · run {r['run_id']} · version {r.get('version')} · {r['status']}"
            f" · {_duration(r.get('duration_s'))}"
        )
        if r.get("error"):
            text += f"<br><span style='color:#d73a49'>{r['error']}</span>"
        self.summary.setText(text)
        nodes = detail["nodes"]
        self.nodes_table.setRowCount(len(nodes))
        for row, n in enumerate(nodes):
            cells = [
                _item(n["node_id"]),
                _item(n.get("kind")),
                _item(n.get("status")),
                _item(n.get("rows_in"), True),
                _item(n.get("rows_out"), True),
                _item(n.get("rows_rejected"), True),
                _item(f"{n.get('duration_s') or 0:.3f}", True),
            ]
            cells[2].setForeground(STATUS_COLOURS.get(n.get("status"), QColor(120, 120, 120)))
            for col, cell in enumerate(cells):
                self.nodes_table.setItem(row, col, cell)
        lines = [
            f"{_local(line['ts'])}  {line['level'].upper():7}"
            + (f" [{line['node_id']}]" if line.get("node_id") else "")
            + f"  {line['message']}"
            for line in detail["logs"]
        ]
        self.log_view.setPlainText("\n".join(lines))
        rejects = detail["rejects"]
        self.rejects_table.set_frame(
            rejects.select([c for c in rejects.columns if c not in ("run_id", "pipeline")])
        )
        self.detail_tabs.setTabText(2, f"Rejected ({rejects.height})")

    # ---- re-run ------------------------------------------------------------------------------
    def rerun_selected(self) -> None:
        run_id = self.selected_run_id()
        if run_id is None:
            return
        job = self.engine.rerun(run_id)
        self.rerun_button.setEnabled(False)
        self.toast("info", f"Re-running {run_id}…")
        self.bridge.call(job, self._rerun_done, self._rerun_failed)

    def _rerun_done(self, record: dict[str, Any]) -> None:
        self.rerun_button.setEnabled(True)
        kind = {"success": "success", "warning": "warning", "failed": "error"}.get(record["status"], "info")
        self.toast(kind, f"Re-run {record['status']}: {record['rows_out']} rows out")
        self.show_run(record["run_id"])

    def _rerun_failed(self, error: BaseException) -> None:
        self.rerun_button.setEnabled(True)
        self.toast("error", f"Re-run failed: {error}")

    def shutdown(self) -> None:
        self._refresh_later.stop()
