"""Alerts in the desktop app: a badge in the status bar with the number of open alerts (coloured
by the worst severity), and, on a click, a list of them with an Acknowledge button and a note.

Both read `engine.alerts` (engine/api/alerts.py, or the service's /alerts over a RemoteEngine) off
the GUI thread through the bridge, on every `alert` event and every few seconds.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

REFRESH_MS = 5000
RANK = {"info": 0, "warning": 1, "critical": 2}
COLOURS = {"info": "#2f6fb3", "warning": "#b7791f", "critical": "#c53030"}
COLUMNS = ("ID", "Severity", "State", "Raised", "Pipeline", "Subject", "Message")


class AlertsBadge(QPushButton):
    """`⚠ N alerts` in the status bar (hidden while there are none); a click opens the list."""

    def __init__(self, window: Any):
        super().__init__()
        self.setObjectName("AlertsBadge")
        self.setFlat(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.main_window = window
        self.engine, self.bridge = window.engine, window.bridge
        self.alerts: list[dict[str, Any]] = []
        self.dialog: AlertsDialog | None = None
        self._busy = False
        self.clicked.connect(self.open_list)
        self.bridge.event.connect(self._on_event)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        self.show_alerts([])
        self.refresh()

    def _on_event(self, event: dict) -> None:
        if event.get("event") == "alert":
            self.refresh()

    def refresh(self) -> None:
        alerts_api = getattr(self.engine, "alerts", None)
        if alerts_api is None or self._busy:
            return
        self._busy = True

        def got(rows: list[dict[str, Any]]) -> None:
            self._busy = False
            self.show_alerts(rows)

        def failed(exc: BaseException) -> None:
            self._busy = False

        self.bridge.call(self.engine.call(alerts_api.list, True), got, failed)

    def show_alerts(self, rows: list[dict[str, Any]]) -> None:
        self.alerts = list(rows)
        count = len(self.alerts)
        unacked = sum(1 for a in self.alerts if a.get("state") == "active")
        self.setVisible(count > 0)
        worst = max(
            (a.get("severity", "info") for a in self.alerts), key=lambda s: RANK.get(s, 0), default="info"
        )
        noun = "alert" if count == 1 else "alerts"
        self.setText(f"⚠ {count} {noun}" + (f" ({unacked} new)" if unacked and unacked != count else ""))
        self.setToolTip("Open alerts: click to see and acknowledge them")
        self.setProperty("severity", worst)
        self.setStyleSheet(
            f"QPushButton#AlertsBadge {{ color: white; background: {COLOURS.get(worst, '#555')};"
            " border-radius: 8px; padding: 1px 10px; font-weight: 600; }"
        )
        if self.dialog is not None:
            self.dialog.show_alerts(self.alerts)

    def open_list(self) -> AlertsDialog:
        if self.dialog is None:
            self.dialog = AlertsDialog(self)
        self.dialog.show_alerts(self.alerts)
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog

    def shutdown(self) -> None:
        self._timer.stop()
        if self.dialog is not None:
            self.dialog.close()


class AlertsDialog(QDialog):
    """The open alerts, newest first; select one, write a note, Acknowledge."""

    def __init__(self, badge: AlertsBadge):
        super().__init__(badge.main_window)
        self.setObjectName("AlertsDialog")
        self.setWindowTitle("Alerts")
        self.resize(900, 360)
        self.badge = badge
        layout = QVBoxLayout(self)
        self.summary = QLabel()
        layout.addWidget(self.summary)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        layout.addWidget(self.table, 1)
        row = QHBoxLayout()
        self.note = QLineEdit()
        self.note.setPlaceholderText("Note (what is being done)")
        row.addWidget(self.note, 1)
        self.ack_button = QPushButton("Acknowledge")
        self.ack_button.setObjectName("AcknowledgeAlert")
        self.ack_button.setEnabled(False)
        self.ack_button.clicked.connect(self.acknowledge)
        row.addWidget(self.ack_button)
        layout.addLayout(row)
        self.alerts: list[dict[str, Any]] = []

    def show_alerts(self, rows: list[dict[str, Any]]) -> None:
        selected = self.selected_id()
        self.alerts = list(rows)
        self.table.setRowCount(len(self.alerts))
        for r, alert in enumerate(self.alerts):
            acked = f" by {alert['acknowledged_by']}" if alert.get("acknowledged_by") else ""
            values = (
                str(alert["id"]),
                alert["severity"],
                alert["state"] + acked,
                (alert.get("raised_at") or "")[:19].replace("T", " "),
                alert["pipeline"],
                alert["subject"],
                alert.get("message") or "",
            )
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                if c == 1:
                    item.setForeground(Qt.GlobalColor.white)
                    item.setBackground(_brush(alert["severity"]))
                self.table.setItem(r, c, item)
            if alert["id"] == selected:
                self.table.selectRow(r)
        self.table.resizeColumnsToContents()
        self.summary.setText(f"{len(self.alerts)} open" if self.alerts else "No open alerts")
        self._selection_changed()

    def selected_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows or rows[0].row() >= len(self.alerts):
            return None
        return int(self.alerts[rows[0].row()]["id"])

    def _selection_changed(self) -> None:
        alert_id = self.selected_id()
        alert = next((a for a in self.alerts if a["id"] == alert_id), None)
        self.ack_button.setEnabled(alert is not None and alert["state"] == "active")

    def acknowledge(self) -> None:
        alert_id = self.selected_id()
        if alert_id is None:
            return
        engine, note = self.badge.engine, self.note.text().strip() or None
        self.ack_button.setEnabled(False)

        def done(alert: dict[str, Any]) -> None:
            self.note.clear()
            self.badge.main_window.toast("success", f"Alert {alert['id']} acknowledged")
            self.badge.refresh()

        def failed(exc: BaseException) -> None:
            self.badge.main_window.toast("error", str(exc))
            self.badge.refresh()

        self.badge.bridge.call(engine.call(engine.alerts.acknowledge, alert_id, None, note), done, failed)


def _brush(severity: str):
    from PySide6.QtGui import QBrush, QColor

    return QBrush(QColor(COLOURS.get(severity, "#555")))


__all__ = ["AlertsBadge", "AlertsDialog"]
