"""Runs: the history (status, pipeline, start, duration, rows in/out/rejected) with filters by
status, pipeline and time (a preset range or a From/To pick); a run's detail (node statistics, log,
rejected records); re-run, which can be stopped (a real_time pipeline's re-run streams until then).

Times are shown in the time zone of the settings (`Preferences`). Every read goes through the
engine's pool (`engine.call`) and comes back through the bridge.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from PySide6.QtCore import QDateTime, Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDateTimeEdit,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.api import RunFilter
from engine.statuses import UNFINISHED
from ui.errors import one_line
from ui.pages.base import Page
from ui.preferences import Preferences
from ui.widgets.empty_state import EmptyState
from ui.widgets.frame_table import FrameTable
from ui.widgets.loading import LoadingOverlay

STATUSES = ("success", "warning", "failed", "cancelled", "interrupted", "running", "retrying")
TODAY = "Today"
BETWEEN = "Between…"
# hours back from now; TODAY starts at midnight in the shown time zone; BETWEEN shows From/To pickers
RANGES: dict[str, float | None] = {
    "Any time": None,
    TODAY: None,
    "Last hour": 1,
    "Last 24 hours": 24,
    "Last 7 days": 24 * 7,
    BETWEEN: None,
}
COLUMNS = ("Status", "Pipeline", "Started", "Duration", "Rows in", "Rows out", "Rejected", "Trigger")
NODE_COLUMNS = ("Node", "Kind", "Status", "Rows in", "Rows out", "Rejected", "Time (s)")
STATUS_COLOURS = {
    "success": QColor(46, 160, 67),
    "warning": QColor(210, 150, 0),
    "failed": QColor(215, 58, 73),
    "cancelled": QColor(130, 130, 130),
    "interrupted": QColor(190, 80, 30),  # its process ended without finishing it (killed, crashed)
    "running": QColor(40, 120, 220),
    "retrying": QColor(40, 120, 220),
}
ALL = "All"
PICK_FORMAT = "yyyy-MM-dd HH:mm"
RANGE_DEBOUNCE_MS = 400  # typing a date changes it once a digit: query once the user pauses


def _duration(seconds: float | None, status: str) -> str:
    if seconds is None:  # still going, or ended without a duration (interrupted: its end is unknown)
        return "…" if status in UNFINISHED else "—"
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


def _stacked(*widgets: QWidget) -> QStackedWidget:
    stack = QStackedWidget()
    for widget in widgets:
        stack.addWidget(widget)
    return stack


class RunsPage(Page):
    title = "Runs"
    icon_name = "runs"

    def __init__(self, window):
        super().__init__(window)
        self.prefs = Preferences.of(window)
        self.records: list[dict[str, Any]] = []
        self.detail: dict[str, Any] | None = None
        self.rerun_job = None
        self._want_run: str | None = None  # select this run once the list arrives
        self._loading = 0
        self._generation = 0
        self._refresh_later = QTimer(self)
        self._refresh_later.setSingleShot(True)
        self._refresh_later.setInterval(300)
        self._refresh_later.timeout.connect(self.refresh)

        # filters
        self.status_filter = QComboBox()
        self.status_filter.setObjectName("StatusFilter")
        self.status_filter.addItems([ALL, *STATUSES])
        self.pipeline_filter = QComboBox()
        self.pipeline_filter.setObjectName("PipelineFilter")
        self.pipeline_filter.addItem(ALL)
        # a long pipeline name must not push the From/To pickers off a 1280-pixel window
        self.pipeline_filter.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.pipeline_filter.setMinimumContentsLength(18)
        self.time_filter = QComboBox()
        self.time_filter.setObjectName("TimeFilter")
        self.time_filter.addItems(list(RANGES))
        for box in (self.status_filter, self.pipeline_filter):
            box.currentIndexChanged.connect(self.refresh)
        self.time_filter.currentIndexChanged.connect(self._range_changed)
        self.from_edit = self._picker("RangeFrom")
        self.to_edit = self._picker("RangeTo")
        self._range_later = QTimer(self)
        self._range_later.setSingleShot(True)
        self._range_later.setInterval(RANGE_DEBOUNCE_MS)
        self._range_later.timeout.connect(self.refresh)
        self.range_box = QWidget()
        range_row = QHBoxLayout(self.range_box)
        range_row.setContentsMargins(0, 0, 0, 0)
        range_row.addWidget(QLabel("from"))
        range_row.addWidget(self.from_edit)
        range_row.addWidget(QLabel("to"))
        range_row.addWidget(self.to_edit)
        self.range_box.hide()
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.rerun_button = QPushButton("Re-run")
        self.rerun_button.setObjectName("PrimaryButton")
        self.rerun_button.setToolTip(
            "Run the same pipeline version again (a real_time one streams until stopped)"
        )
        self.rerun_button.setEnabled(False)
        self.rerun_button.clicked.connect(self._rerun_clicked)
        bar = QHBoxLayout()
        for label, box in (("Status", self.status_filter), ("Pipeline", self.pipeline_filter)):
            bar.addWidget(QLabel(label))
            bar.addWidget(box)
        bar.addWidget(QLabel("Started"))
        bar.addWidget(self.time_filter)
        bar.addWidget(self.range_box)
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
        # a long error (a path has no space to wrap at) must not widen the window: it is clipped,
        # and the whole text stays in the tooltip and the log
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.open_button = QPushButton("Open pipeline")
        self.open_button.setToolTip("Open the run's pipeline file in the editor")
        self.open_button.clicked.connect(self.open_pipeline)
        self.open_button.setEnabled(False)
        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        head.addWidget(self.summary, 1)
        head.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignTop)
        self.nodes_table = _table(NODE_COLUMNS)
        self.no_nodes = EmptyState("No node ran in this run.", "Open pipeline", self.open_pipeline)
        self.nodes_stack = _stacked(self.nodes_table, self.no_nodes)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setObjectName("RunLog")
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.rejects_table = FrameTable()
        self.no_rejects = EmptyState(
            "No records were rejected in this run.", "Open pipeline", self.open_pipeline
        )
        self.rejects_stack = _stacked(self.rejects_table, self.no_rejects)
        self.detail_tabs = QTabWidget()
        self.detail_tabs.addTab(self.nodes_stack, "Nodes")
        self.detail_tabs.addTab(self.log_view, "Log")
        self.detail_tabs.addTab(self.rejects_stack, "Rejected")
        detail = QWidget()
        column = QVBoxLayout(detail)
        column.setContentsMargins(0, 6, 0, 0)
        column.addLayout(head)
        column.addWidget(self.detail_tabs, 1)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(detail)
        splitter.setSizes([300, 400])

        # empty states: nothing ever ran / nothing matches the filters
        self.no_runs = EmptyState(
            "No runs yet. Run a pipeline from the editor (F5) and it shows up here.",
            "Open pipelines",
            lambda: self.main_window.show_page("pipelines"),
        )
        self.no_match = EmptyState("No runs match these filters.", "Clear filters", self.clear_filters)
        self.stack = _stacked(splitter, self.no_runs, self.no_match)
        self.content = splitter

        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.stack, 1)
        self.overlay = LoadingOverlay(self.stack, "Loading runs…")
        self.detail_overlay = LoadingOverlay(self.detail_tabs, "Loading run…")
        self.bridge.event.connect(self._on_event)
        self.prefs.changed.connect(self._zone_changed)
        self._set_zone_header()

    def _picker(self, name: str) -> QDateTimeEdit:
        edit = QDateTimeEdit()
        edit.setObjectName(name)
        edit.setCalendarPopup(True)
        edit.setDisplayFormat(PICK_FORMAT)
        edit.dateTimeChanged.connect(lambda _dt: self._range_later.start())
        return edit

    # ---- page --------------------------------------------------------------------------------
    def on_show(self) -> None:
        self.refresh()

    def _on_event(self, event: dict) -> None:
        if event.get("event") in ("run_started", "run_finished") and self.isVisible():
            self._refresh_later.start()  # coalesce bursts (many runs finishing together)

    def _set_zone_header(self) -> None:
        item = self.table.horizontalHeaderItem(COLUMNS.index("Started"))
        item.setText(f"Started ({self.prefs.zone_name})")

    def _zone_changed(self, _values: dict) -> None:
        self._set_zone_header()
        if self.records:
            self.refresh()  # every time on the page is shown again in the new zone

    # ---- history -----------------------------------------------------------------------------
    def _now(self) -> datetime:
        return datetime.now(UTC).astimezone(self.prefs.zone)

    def _picked(self, edit: QDateTimeEdit) -> datetime:
        """The edit's wall time, read in the shown time zone."""
        naive = edit.dateTime().toPython().replace(second=0, microsecond=0)
        if self.prefs.zone is None:
            return naive.astimezone()  # the computer's zone
        return naive.replace(tzinfo=self.prefs.zone)

    def filters(self) -> dict[str, Any]:
        status = self.status_filter.currentText()
        pipeline = self.pipeline_filter.currentText()
        span = self.time_filter.currentText()
        since = until = None
        if span == TODAY:
            since = self._now().replace(hour=0, minute=0, second=0, microsecond=0)
        elif span == BETWEEN:
            since, until = self._picked(self.from_edit), self._picked(self.to_edit)
        elif RANGES.get(span):
            since = datetime.now(UTC) - timedelta(hours=RANGES[span])
        return {
            "status": None if status == ALL else status,
            "pipeline": None if pipeline == ALL else pipeline,
            "since": since,
            "until": until,
        }

    def _range_changed(self) -> None:
        between = self.time_filter.currentText() == BETWEEN
        if between and not self.range_box.isVisible():
            now = self._now().replace(second=0, microsecond=0, tzinfo=None)
            for edit, moment in ((self.from_edit, now - timedelta(days=1)), (self.to_edit, now)):
                edit.blockSignals(True)
                edit.setDateTime(QDateTime(moment.date(), moment.time()))
                edit.blockSignals(False)
        self.range_box.setVisible(between)
        self.refresh()

    def set_time_range(self, name: str) -> None:
        """Show runs started in one of RANGES (the Dashboard's "Runs today" card uses TODAY)."""
        self.time_filter.setCurrentText(name)

    def clear_filters(self) -> None:
        for box in (self.status_filter, self.pipeline_filter, self.time_filter):
            box.blockSignals(True)
            box.setCurrentIndex(0)
            box.blockSignals(False)
        self.range_box.hide()
        self.refresh()

    def refresh(self) -> None:
        self._range_later.stop()
        filters = self.filters()
        engine = self.engine
        self._loading += 1
        self._generation += 1
        generation = self._generation
        self.overlay.start("Loading runs…")
        future = engine.call(engine.runs.overview, RunFilter(**filters))
        self.bridge.call(future, lambda result: self._show_runs(result, generation), self._load_failed)

    def _load_failed(self, error: BaseException) -> None:
        self._loading_done()
        self.toast("error", f"Runs could not be read: {one_line(error)}")

    def _loading_done(self) -> None:
        self._loading = max(0, self._loading - 1)
        if not self._loading:
            self.overlay.stop()

    def _show_runs(self, result, generation: int) -> None:
        records, pipelines = result["runs"], result["pipelines"]
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
                _item(self.prefs.format_time(r.get("started_at"))),
                _item(_duration(r.get("duration_s"), r["status"]), True),
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
            filtered = any(value is not None for value in self.filters().values())
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

    def show_filtered(self, status: str | None = None, time_range: str | None = None) -> None:
        """The history with these filters (the others cleared): the Dashboard's cards open it so."""
        for box, value in (
            (self.status_filter, status),
            (self.pipeline_filter, None),
            (self.time_filter, time_range),
        ):
            box.blockSignals(True)
            box.setCurrentIndex(max(0, box.findText(value)) if value else 0)
            box.blockSignals(False)
        self.range_box.hide()
        self.refresh()

    # ---- detail ------------------------------------------------------------------------------
    def _selection_changed(self) -> None:
        run_id = self.selected_run_id()
        self._update_rerun_button()
        if run_id is None:
            return
        self.detail_overlay.start("Loading run…")
        future = self.engine.call(self.engine.runs.detail, run_id)
        self.bridge.call(future, self._show_detail, self._detail_failed)

    def _detail_failed(self, error: BaseException) -> None:
        self.detail_overlay.stop()
        self.toast("error", one_line(error))

    def _show_detail(self, detail: dict[str, Any] | None) -> None:
        self.detail_overlay.stop()
        if detail is not None and detail["record"]["run_id"] != self.selected_run_id():
            return  # the selection moved on while this one loaded
        self.detail = detail
        if detail is None:
            self.summary.setText("")
            self.open_button.setEnabled(False)
            self.nodes_table.setRowCount(0)
            self.log_view.clear()
            self.rejects_table.set_frame(pl.DataFrame())
            self.detail_tabs.setTabText(2, "Rejected")
            return
        r = detail["record"]
        text = (
            f"<b>{html.escape(r['pipeline'])}</b> · run {html.escape(r['run_id'])} · version {r.get('version')}"
            f" · {html.escape(r['status'])} · started {self.prefs.format_time(r.get('started_at'))}"
            f" · {_duration(r.get('duration_s'), r['status'])}"
        )
        if r.get("error"):
            text += f"<br><span style='color:#d73a49'>{html.escape(r['error'])}</span>"
        self.summary.setText(text)
        self.summary.setToolTip(r.get("error") or "")
        can_open = bool(r.get("spec_path"))
        self.open_button.setEnabled(can_open)
        for empty in (self.no_nodes, self.no_rejects):
            empty.button.setVisible(can_open)
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
        self.nodes_stack.setCurrentWidget(self.nodes_table if nodes else self.no_nodes)
        self.no_nodes.set_text("No node ran in this run" + (f": {r['error']}" if r.get("error") else "."))
        lines = [
            f"{self.prefs.format_time(line['ts'])}  {line['level'].upper():7}"
            + (f" [{line['node_id']}]" if line.get("node_id") else "")
            + f"  {line['message']}"
            for line in detail["logs"]
        ]
        self.log_view.setPlainText("\n".join(lines) if lines else "(this run wrote no log lines)")
        rejects = detail["rejects"]
        self.rejects_table.set_frame(
            rejects.select([c for c in rejects.columns if c not in ("run_id", "pipeline")])
        )
        self.rejects_stack.setCurrentWidget(self.rejects_table if rejects.height else self.no_rejects)
        self.detail_tabs.setTabText(2, f"Rejected ({rejects.height})")

    def open_pipeline(self) -> None:
        """Open the shown run's pipeline file in the editor (to fix what failed or rejected)."""
        path = (self.detail or {}).get("record", {}).get("spec_path")
        if not path:
            self.toast("info", "This run has no pipeline file (it ran from an unsaved editor)")
            return
        self.main_window.open_pipeline(Path(path))

    # ---- re-run ------------------------------------------------------------------------------
    def _update_rerun_button(self) -> None:
        if self.rerun_job is not None:
            self.rerun_button.setText("Stop re-run")
            self.rerun_button.setEnabled(True)
        else:
            self.rerun_button.setText("Re-run")
            self.rerun_button.setEnabled(self.selected_run_id() is not None)

    def _rerun_clicked(self) -> None:
        if self.rerun_job is not None:
            self.stop_rerun()
        else:
            self.rerun_selected()

    def rerun_selected(self) -> None:
        run_id = self.selected_run_id()
        if run_id is None or self.rerun_job is not None:
            return
        pipeline = next((r["pipeline"] for r in self.records if r["run_id"] == run_id), run_id)
        job = self.engine.runs.rerun(run_id)
        self.rerun_job = job
        self._update_rerun_button()
        self.toast("info", f"Re-running {pipeline}…")
        self.bridge.call(
            job, lambda record: self._rerun_done(job, record), lambda e: self._rerun_failed(job, e)
        )

    def stop_rerun(self) -> None:
        if self.rerun_job is None:
            return
        self.rerun_job.cancel()
        self.rerun_button.setEnabled(False)
        self.rerun_button.setText("Stopping…")

    def _rerun_done(self, job, record: dict[str, Any]) -> None:
        if job is self.rerun_job:
            self.rerun_job = None
        self._update_rerun_button()
        kind = {"success": "success", "warning": "warning", "failed": "error"}.get(record["status"], "info")
        self.toast(kind, f"Re-run {record['status']}: {record['rows_out']:,} rows out")
        self.show_run(record["run_id"])

    def _rerun_failed(self, job, error: BaseException) -> None:
        if job is self.rerun_job:
            self.rerun_job = None
        self._update_rerun_button()
        self.toast("error", f"Re-run failed: {one_line(error)}")

    def shutdown(self) -> None:
        self._refresh_later.stop()
        self._range_later.stop()
        if self.rerun_job is not None:
            self.rerun_job.cancel()
