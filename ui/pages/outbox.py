"""Store & forward: the outbox of every remote destination, as in Ignition's store-and-forward
status page, and the quarantine of records the upstream refused for good.

Destinations: per pipeline and destination, the link state (coloured), pending records and bytes,
the oldest pending record's age, and the counters (appended, forwarded, dropped, quarantined): the
figures of `aggregator outbox status` and `/metrics`. Quarantine: the refused entries with their
reason; Retry puts them back in the outbox, Delete (asks first) drops them for good, Export JSON
writes the records through a save dialog.

Everything is read through `engine.outbox` (EngineAPI) on the engine's pool, every few seconds
while the page is shown; the answers come back through the bridge.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ui.errors import one_line
from ui.pages.base import Page
from ui.preferences import Preferences
from ui.widgets.empty_state import EmptyState
from ui.widgets.loading import LoadingOverlay

REFRESH_MS = 3000
GOOD, WAIT, BAD, IDLE = "#2e8b57", "#c98a00", "#c83c3c", "#8a919c"
LINK_COLOURS = {"up": GOOD, "connecting": WAIT, "idle": IDLE, "stopped": IDLE, "down": BAD, "corrupt": BAD}
LINK_TEXT = {
    "up": "up",
    "connecting": "connecting…",
    "idle": "idle",
    "stopped": "stopped",
    "down": "down",
    "corrupt": "corrupt",
}
STATUS_COLUMNS = (
    ("pipeline", "Pipeline"),
    ("destination", "Destination"),
    ("link_state", "Link"),
    ("pending_records", "Pending"),
    ("pending_bytes", "Pending size"),
    ("oldest_pending_age_s", "Oldest pending"),
    ("appended_records", "Appended"),
    ("forwarded_records", "Forwarded"),
    ("dropped_records", "Dropped"),
    ("quarantined_records", "Quarantined"),
)
QUARANTINE_COLUMNS = ("Entry", "Pipeline", "Destination", "Quarantined at", "Records", "Tries", "Reason")
ALL = "All destinations"
LEGEND = (
    "Pending: accepted into the outbox (on disk, fsynced), not yet acknowledged by the upstream. "
    "Appended: every record ever accepted. Forwarded: acknowledged by the upstream. "
    "Dropped: removed by the byte cap (drop_oldest), each drop written as a gap record. "
    "Quarantined: refused for good by the upstream; see the Quarantine tab to retry, export or delete them. "
    "Link: up, connecting, down (the forwarder retries with backoff), idle or stopped (no forwarder runs: "
    "records wait for the pipeline to run again). Hover a link for its last error."
)


def _bytes(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _records(n: int) -> str:
    return f"{n:,} record" + ("" if n == 1 else "s")


def _count(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _item(text: str, numeric: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if numeric:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


def _table(headers: tuple[str, ...], multi: bool = False) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(
        QAbstractItemView.SelectionMode.ExtendedSelection
        if multi
        else QAbstractItemView.SelectionMode.NoSelection
    )
    table.setAlternatingRowColors(True)
    table.verticalHeader().hide()
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    return table


def _read(outbox) -> dict[str, Any]:
    """One read of everything the page shows (on the engine's pool)."""
    return {"status": outbox.status(), "quarantine": outbox.quarantine()}


def _groups(entries: list[dict[str, Any]]) -> dict[tuple[str, str], list[int]]:
    out: dict[tuple[str, str], list[int]] = defaultdict(list)
    for e in entries:
        out[(e["pipeline"], e["destination"])].append(int(e["id"]))
    return dict(out)


class OutboxPage(Page):
    title = "Store & forward"
    icon_name = "outbox"

    def __init__(self, window):
        super().__init__(window)
        self.prefs = Preferences.of(window)
        self.status_rows: list[dict[str, Any]] = []
        self.entries: list[dict[str, Any]] = []
        self.loaded = False
        self._reading = False
        self._again = False
        self._shut_down = False
        self._export_dir: Path | None = None

        heading = QLabel("Store & forward")
        heading.setObjectName("PageTitle")
        self.summary = QLabel("Reading the outboxes…")
        self.summary.setObjectName("OutboxSummary")
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.updated = QLabel("")
        self.updated.setObjectName("OutboxUpdated")
        self.updated.setStyleSheet(f"color: {IDLE}")
        self.updated.setMinimumWidth(self.updated.fontMetrics().horizontalAdvance("updated 00:00:00") + 8)
        self.updated.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        top = QHBoxLayout()
        top.addWidget(heading)
        top.addSpacing(16)
        top.addWidget(self.summary, 1)
        top.addWidget(self.updated)
        top.addWidget(self.refresh_button)

        # destinations
        self.status_table = _table(tuple(h for _, h in STATUS_COLUMNS))
        self.status_table.setObjectName("OutboxStatusTable")
        self.status_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        legend = QLabel(LEGEND)
        legend.setObjectName("OutboxLegend")
        legend.setWordWrap(True)
        legend.setStyleSheet(f"color: {IDLE}; padding: 4px 2px")
        destinations = QWidget()
        dest_column = QVBoxLayout(destinations)
        dest_column.setContentsMargins(0, 6, 0, 0)
        dest_column.addWidget(self.status_table, 1)
        dest_column.addWidget(legend)
        self.no_outbox = EmptyState(
            "No outbox yet. A remote destination (postgresql, sparkplug_b, mqtt, nats, webhook) with "
            "delivery: store_and_forward keeps one; it shows up here with its first records."
        )
        self.status_stack = QStackedWidget()
        self.status_stack.addWidget(destinations)
        self.status_stack.addWidget(self.no_outbox)

        # quarantine
        self.destination_filter = QComboBox()
        self.destination_filter.setObjectName("QuarantineFilter")
        self.destination_filter.addItem(ALL)
        self.destination_filter.setMinimumContentsLength(24)
        self.destination_filter.currentIndexChanged.connect(self._show_entries)
        self.retry_button = QPushButton("Retry")
        self.retry_button.setObjectName("PrimaryButton")
        self.retry_button.setToolTip("Put the selected records back in the outbox: they are delivered again")
        self.retry_button.clicked.connect(self.retry_selected)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setObjectName("DangerButton")
        self.delete_button.setToolTip("Delete the selected records for good (asks first)")
        self.delete_button.clicked.connect(self.delete_selected)
        self.export_button = QPushButton("Export JSON…")
        self.export_button.setToolTip(
            "Write the selected records (all shown when none is selected) to a JSON file"
        )
        self.export_button.clicked.connect(self.export_dialog)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Show"))
        bar.addWidget(self.destination_filter)
        bar.addStretch(1)
        bar.addWidget(self.export_button)
        bar.addWidget(self.delete_button)
        bar.addWidget(self.retry_button)
        self.quarantine_table = _table(QUARANTINE_COLUMNS, multi=True)
        self.quarantine_table.setObjectName("QuarantineTable")
        self.quarantine_table.setWordWrap(False)
        self.quarantine_table.itemSelectionChanged.connect(self._update_buttons)
        self.no_quarantine = EmptyState(
            "The quarantine is empty: no record was refused for good by an upstream."
        )
        self.quarantine_stack = QStackedWidget()
        self.quarantine_stack.addWidget(self.quarantine_table)
        self.quarantine_stack.addWidget(self.no_quarantine)
        quarantine = QWidget()
        column = QVBoxLayout(quarantine)
        column.setContentsMargins(0, 6, 0, 0)
        column.addLayout(bar)
        column.addWidget(self.quarantine_stack, 1)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.status_stack, "Destinations")
        self.tabs.addTab(quarantine, "Quarantine")
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.tabs, 1)
        self.overlay = LoadingOverlay(self.tabs, "Reading the outboxes…")

        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        self._update_buttons()
        self.refresh()

    # ---- page --------------------------------------------------------------------------------
    def on_show(self) -> None:
        if self.loaded:  # the first read is under way since the page was made
            self.refresh()

    def shutdown(self) -> None:
        self._shut_down = True
        self.timer.stop()

    def _tick(self) -> None:
        if self.isVisible():
            self.refresh()

    # ---- reading -----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the figures and the quarantine in the background (one read at a time)."""
        if self._shut_down:
            return
        if self._reading:
            self._again = True  # an action changed something while a read was out: read again after it
            return
        self._reading, self._again = True, False
        if not self.loaded:
            self.overlay.start("Reading the outboxes…")
        outbox = self.engine.outbox
        self.bridge.call(self.engine.call(_read, outbox), self._show, self._failed)

    def _failed(self, exc: BaseException) -> None:
        self._reading = False
        self.overlay.stop()
        self.summary.setText(
            f"<span style='color:{BAD}'>The outboxes could not be read: {html.escape(one_line(exc))}</span>"
        )

    def _show(self, result: dict[str, Any]) -> None:
        self._reading = False
        self.overlay.stop()
        self.loaded = True
        if self._again:
            QTimer.singleShot(0, self, self.refresh)
        self.status_rows = result["status"]
        self.entries = result["quarantine"]
        self.updated.setText(f"updated {self.prefs.format_time(datetime.now(UTC), '%H:%M:%S')}")
        self._show_status()
        self._set_filter_items()
        self._show_entries()

    def _show_status(self) -> None:
        rows = self.status_rows
        pending = sum(r.get("pending_records") or 0 for r in rows)
        down = sum(1 for r in rows if r.get("link_state") in ("down", "corrupt"))
        held = len(self.entries)
        parts = [f"{len(rows)} destination{'s' if len(rows) != 1 else ''}", f"{pending:,} records pending"]
        if down:
            parts.append(f"<span style='color:{BAD}'>link down on {down}</span>")
        if held:
            parts.append(f"<span style='color:{WAIT}'>{held} in quarantine</span>")
        self.summary.setText(" · ".join(parts))
        table = self.status_table
        table.setRowCount(len(rows))
        bold = QFont()
        bold.setBold(True)
        for row, r in enumerate(rows):
            for col, (key, _) in enumerate(STATUS_COLUMNS):
                value = r.get(key)
                if key == "link_state":
                    state = str(value or "idle")
                    item = _item(f"● {LINK_TEXT.get(state, state)}")
                    item.setForeground(QColor(LINK_COLOURS.get(state, IDLE)))
                    item.setFont(bold)
                    detail = r.get("link_detail")
                    item.setToolTip(f"{state}: {detail}" if detail else state)
                elif key in ("pipeline", "destination"):
                    item = _item(str(value))
                elif key == "pending_bytes":
                    item = _item(_bytes(value), True)
                elif key == "oldest_pending_age_s":
                    item = _item(_age(value), True)
                else:
                    item = _item(_count(value), True)
                    if key in ("dropped_records", "quarantined_records") and value:
                        item.setForeground(QColor(BAD if key == "dropped_records" else WAIT))
                item.setData(Qt.ItemDataRole.UserRole, value)
                table.setItem(row, col, item)
        self.status_stack.setCurrentIndex(0 if rows else 1)
        self.tabs.setTabText(1, f"Quarantine ({held})" if held else "Quarantine")

    def _set_filter_items(self) -> None:
        names = sorted({f"{e['pipeline']}/{e['destination']}" for e in self.entries})
        current = self.destination_filter.currentText()
        if [self.destination_filter.itemText(i) for i in range(1, self.destination_filter.count())] == names:
            return
        self.destination_filter.blockSignals(True)
        self.destination_filter.clear()
        self.destination_filter.addItems([ALL, *names])
        self.destination_filter.setCurrentText(current if current in names else ALL)
        self.destination_filter.blockSignals(False)

    def shown_entries(self) -> list[dict[str, Any]]:
        chosen = self.destination_filter.currentText()
        if chosen == ALL:
            return list(self.entries)
        return [e for e in self.entries if f"{e['pipeline']}/{e['destination']}" == chosen]

    def _show_entries(self) -> None:
        keep = {e["id"] for e in self.selected_entries()}
        entries = self.shown_entries()
        table = self.quarantine_table
        table.blockSignals(True)
        table.clearSelection()
        table.setRowCount(len(entries))
        for row, e in enumerate(entries):
            cells = [
                _item(str(e["id"]), True),
                _item(e["pipeline"]),
                _item(e["destination"]),
                _item(self.prefs.format_time(e.get("created_at"))),
                _item(_count(e.get("records")), True),
                _item(str(e.get("tries")), True),
                _item(e.get("reason") or ""),
            ]
            cells[0].setData(Qt.ItemDataRole.UserRole, e)
            cells[-1].setToolTip(e.get("reason") or "")
            for col, cell in enumerate(cells):
                table.setItem(row, col, cell)
        selection = table.selectionModel()
        for row, e in enumerate(entries):
            if e["id"] in keep:
                selection.select(
                    table.model().index(row, 0),
                    selection.SelectionFlag.Select | selection.SelectionFlag.Rows,
                )
        table.blockSignals(False)
        self.quarantine_stack.setCurrentWidget(self.quarantine_table if entries else self.no_quarantine)
        self._update_buttons()

    def selected_entries(self) -> list[dict[str, Any]]:
        rows = sorted({i.row() for i in self.quarantine_table.selectionModel().selectedRows()})
        out = []
        for row in rows:
            item = self.quarantine_table.item(row, 0)
            if item is not None:
                out.append(item.data(Qt.ItemDataRole.UserRole))
        return out

    def _update_buttons(self) -> None:
        selected = bool(self.selected_entries())
        self.retry_button.setEnabled(selected)
        self.delete_button.setEnabled(selected)
        self.export_button.setEnabled(bool(self.shown_entries()))

    # ---- actions -----------------------------------------------------------------------------
    def retry_selected(self) -> None:
        entries = self.selected_entries()
        if not entries:
            return
        outbox = self.engine.outbox

        def retry() -> int:
            return sum(outbox.quarantine_retry(p, d, ids) for (p, d), ids in _groups(entries).items())

        self._act(retry, lambda n: f"{_records(n)} put back in the outbox", "Retry failed")

    def delete_selected(self) -> None:
        entries = self.selected_entries()
        if not entries:
            return
        records = sum(e.get("records") or 0 for e in entries)
        text = (
            f"Delete {records:,} quarantined records ({len(entries)} entries) for good? "
            "They will not be delivered. Export them first to keep a copy."
        )
        if not self.confirm("Delete quarantined records", text):
            return
        outbox = self.engine.outbox

        def delete() -> int:
            return sum(outbox.quarantine_delete(p, d, ids) for (p, d), ids in _groups(entries).items())

        self._act(delete, lambda n: f"{_records(n)} deleted from the quarantine", "Delete failed")

    def export_dialog(self) -> None:
        entries = self.selected_entries() or self.shown_entries()
        if not entries:
            return
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        default = str((self._export_dir or Path.home()) / f"quarantine-{stamp}.json")
        path, _ = QFileDialog.getSaveFileName(self, "Export quarantined records", default, "JSON (*.json)")
        if not path:
            return
        self._export_dir = Path(path).parent
        self.export(entries, path)

    def export(self, entries: list[dict[str, Any]], path: str) -> None:
        outbox = self.engine.outbox

        def write() -> int:
            records: list[dict[str, Any]] = []
            for (p, d), ids in _groups(entries).items():
                for record in outbox.quarantine_records(p, d, ids):
                    records.append({"pipeline": p, "destination": d, **record})
            tmp = Path(path).with_name(Path(path).name + ".tmp")
            tmp.write_text(json.dumps(records, indent=2, default=str) + "\n", encoding="utf-8")
            tmp.replace(path)
            return len(records)

        self._act(write, lambda n: f"{_records(n)} exported to {path}", "Export failed", reread=False)

    def _act(self, fn, said, failure: str, reread: bool = True) -> None:
        buttons = (self.retry_button, self.delete_button, self.export_button)
        for b in buttons:
            b.setEnabled(False)
        self.overlay.start("Working…")

        def ok(n: int) -> None:
            self.overlay.stop()
            self.toast("success", said(n))
            self._update_buttons()
            if reread:
                self.refresh()

        def failed(exc: BaseException) -> None:
            self.overlay.stop()
            self.toast("error", f"{failure}: {one_line(exc)}")
            self._update_buttons()
            self.refresh()

        self.bridge.call(self.engine.call(fn), ok, failed)
