"""The Audit page (admin): the audit trail, newest first, filtered by user, action and outcome;
its hash chain checked; exported to CSV. Reads through `engine.audit`, where the role is checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ui.errors import one_line
from ui.pages.base import Page

COLUMNS = ("Time", "User", "Role", "Source", "Action", "Target", "Outcome", "Detail")
LIMIT = 2000


class AuditPage(Page):
    title = "Audit"

    def __init__(self, window):
        super().__init__(window)
        layout = QVBoxLayout(self)
        title = QLabel("Audit trail")
        title.setObjectName("PageTitle")
        layout.addWidget(title)
        row = QHBoxLayout()
        self.user_filter = QLineEdit()
        self.user_filter.setObjectName("AuditUser")
        self.user_filter.setPlaceholderText("user")
        self.action_filter = QLineEdit()
        self.action_filter.setObjectName("AuditAction")
        self.action_filter.setPlaceholderText("action (or prefix: users, runs, auth)")
        self.outcome_filter = QComboBox()
        self.outcome_filter.setObjectName("AuditOutcome")
        self.outcome_filter.addItems(["any outcome", "ok", "denied", "failed"])
        self.refresh_button = QPushButton("Refresh")
        self.verify_button = QPushButton("Verify chain")
        self.export_button = QPushButton("Export CSV…")
        for widget in (self.user_filter, self.action_filter, self.outcome_filter):
            row.addWidget(widget)
        row.addStretch(1)
        for button in (self.refresh_button, self.verify_button, self.export_button):
            row.addWidget(button)
        layout.addLayout(row)
        self.chain = QLabel()
        self.chain.setObjectName("AuditChain")
        self.chain.setWordWrap(True)
        layout.addWidget(self.chain)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("AuditTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.verticalHeader().hide()
        layout.addWidget(self.table, 1)
        self.entries: list[dict[str, Any]] = []
        self.refresh_button.clicked.connect(self.refresh)
        self.verify_button.clicked.connect(self.verify)
        self.export_button.clicked.connect(self.export)
        for edit in (self.user_filter, self.action_filter):
            edit.returnPressed.connect(self.refresh)
        self.outcome_filter.currentIndexChanged.connect(lambda _i: self.refresh())

    def on_show(self) -> None:
        self.refresh()

    def filters(self) -> dict[str, Any]:
        outcome = self.outcome_filter.currentText()
        return {
            "user": self.user_filter.text().strip() or None,
            "action": self.action_filter.text().strip() or None,
            "outcome": None if outcome == "any outcome" else outcome,
            "limit": LIMIT,
        }

    def refresh(self) -> None:
        self.bridge.call(self.engine.call(self.engine.audit.list, **self.filters()), self._show, self._failed)

    def _show(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries
        self.table.setRowCount(len(entries))
        for row, e in enumerate(entries):
            detail = e.get("detail")
            cells = (
                (e.get("ts") or "")[:19].replace("T", " "),
                e.get("user") or "",
                e.get("role") or "",
                (e.get("source") or "") + (f" {e['client']}" if e.get("client") else ""),
                e.get("action") or "",
                e.get("target") or "",
                e["outcome"] + (f": {e['reason']}" if e.get("reason") else ""),
                json.dumps(detail, sort_keys=True) if detail else "",
            )
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))

    def _failed(self, exc: BaseException) -> None:
        self.toast("error", one_line(exc))

    def verify(self) -> None:
        def shown(result: dict[str, Any]) -> None:
            if result["ok"]:
                self.chain.setText(f"Chain intact: {result['entries']} entries; head {result['head']}")
            else:
                self.chain.setText(f"Chain broken: {result['reason']}")
            self.chain.setProperty("state", "ok" if result["ok"] else "failed")

        self.bridge.call(self.engine.call(self.engine.audit.verify), shown, self._failed)

    def export(self, path: str | Path | None = None) -> None:
        """The entries shown, as a CSV file (asked for when `path` is not given)."""
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "Export audit trail", "audit.csv", "CSV (*.csv)")
            if not path:
                return
        from engine.api.auth import to_csv

        target = Path(path)
        text = to_csv(self.entries)
        count = len(self.entries)

        def write() -> Path:  # off the Qt thread: whole or not at all
            part = target.with_name(f".{target.name}.part")
            part.write_text(text, encoding="utf-8")
            part.replace(target)
            return target

        def failed(exc: BaseException) -> None:
            self.toast("error", f"{target}: {getattr(exc, 'strerror', None) or one_line(exc)}")

        self.bridge.call(
            self.engine.call(write),
            lambda _p: self.toast("success", f"{count} entries written to {target}"),
            failed,
        )
