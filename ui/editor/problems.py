"""The problems list: every validation issue with its JSON path; clicking one selects its node."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QListWidget, QListWidgetItem

ISSUE_ROLE = Qt.ItemDataRole.UserRole


def issue_text(issue: dict[str, Any]) -> str:
    where = issue.get("path") or "(document)"
    text = f"{where}: {issue['message']}"
    if issue.get("allowed"):
        text += f" (allowed: {issue['allowed']})"
    return text


class ProblemsList(QListWidget):
    """`node_clicked(node_id)` when a problem that belongs to a node is clicked."""

    node_clicked = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.issues: list[dict[str, Any]] = []
        self.itemClicked.connect(self._clicked)
        self.itemActivated.connect(self._clicked)
        self.set_issues([])

    def set_checking(self) -> None:
        """A new document is being validated: none of the old one's problems stay on show."""
        self.issues = []
        self.clear()
        item = QListWidgetItem("… Checking the pipeline")
        item.setFlags(Qt.ItemFlag.NoItemFlags)
        self.addItem(item)

    def set_issues(self, issues: list[dict[str, Any]]) -> None:
        self.issues = list(issues)
        self.clear()
        if not issues:
            ok = QListWidgetItem("✓ No problems: the pipeline is valid.")
            ok.setFlags(Qt.ItemFlag.NoItemFlags)
            self.addItem(ok)
            return
        for issue in issues:
            node = f"[{issue['node_id']}] " if issue.get("node_id") else ""
            item = QListWidgetItem(f"⚠ {node}{issue_text(issue)}")
            item.setData(ISSUE_ROLE, issue)
            item.setToolTip(issue_text(issue))
            self.addItem(item)

    def _clicked(self, item: QListWidgetItem) -> None:
        issue = item.data(ISSUE_ROLE)
        if issue and issue.get("node_id"):
            self.node_clicked.emit(issue["node_id"])
