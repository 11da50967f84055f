"""Pipelines page: the user's pipeline files (<data dir>/pipelines) and the shipped examples and
templates (resources/pipelines, resources/templates); open one in the editor, create, delete.

Listing and deleting are EngineAPI calls (`list_pipelines`, `delete_pipeline`) on the engine's
workers, and come back through the bridge; the Qt thread only fills the tables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QStackedWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
)

from ui.pages.base import Page
from ui.preferences import Preferences
from ui.widgets.empty_state import EmptyState
from ui.widgets.loading import LoadingOverlay

STATUS_GLYPH = {
    "success": "✓",
    "warning": "⚠",
    "failed": "✗",
    "cancelled": "■",
    "interrupted": "↯",
    "running": "▶",
}


def last_run_text(run: dict[str, Any] | None, prefs: Preferences) -> str:
    """A run record as `✓ success · 2026-11-27 09:14` (in the settings' time zone); "never" without one."""
    if not run:
        return "never"
    started = prefs.format_time(run.get("started_at"), "%Y-%m-%d %H:%M")
    status = str(run.get("status") or "")
    return f"{STATUS_GLYPH.get(status, '')} {status} · {started}".strip()


def _tree(headers: list[str]) -> QTreeWidget:
    tree = QTreeWidget()
    tree.setHeaderLabels(headers)
    tree.setRootIsDecorated(False)
    tree.setAlternatingRowColors(True)
    tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    # Every column as wide as its contents; the last (the description) takes the rest.
    for column in range(len(headers) - 1):
        tree.header().setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
    tree.header().setStretchLastSection(True)
    return tree


class PipelinesPage(Page):
    title = "Pipelines"
    icon_name = "pipelines"

    def __init__(self, window):
        super().__init__(window)
        self.files: list[dict[str, Any]] = []
        self.prefs = Preferences.of(window)
        self.prefs.changed.connect(lambda _values: self._fill())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 16, 20, 16)

        header = QHBoxLayout()
        title = QLabel("Pipelines")
        title.setObjectName("PageTitle")
        header.addWidget(title)
        header.addStretch(1)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by name…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._fill)
        header.addWidget(self.search)
        self.new_button = QPushButton("New pipeline")
        self.new_button.setObjectName("PrimaryButton")
        self.new_button.clicked.connect(self.main_window.new_pipeline)
        header.addWidget(self.new_button)
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(self.open_selected)
        header.addWidget(self.open_button)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.delete_selected)
        header.addWidget(self.delete_button)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        header.addWidget(self.refresh_button)
        layout.addLayout(header)

        layout.addWidget(QLabel("<b>My pipelines</b>"))
        self.mine_stack = QStackedWidget()
        self.mine = _tree(["Name", "File", "Mode", "Last run", "Modified", "Description"])
        self.mine_empty = EmptyState(
            "No pipelines of your own yet. Start from a template below, or draw one in the editor.",
            "New pipeline",
            self.main_window.new_pipeline,
        )
        self.mine_stack.addWidget(self.mine)
        self.mine_stack.addWidget(self.mine_empty)
        layout.addWidget(self.mine_stack, 3)

        layout.addWidget(QLabel("<b>Examples and templates</b> (read-only: saving makes your own copy)"))
        self.shipped = _tree(["Name", "Kind", "File", "Mode", "Last run", "Description"])
        layout.addWidget(self.shipped, 2)

        for tree in (self.mine, self.shipped):
            tree.itemDoubleClicked.connect(lambda item, _col: self._open_item(item))
            tree.itemSelectionChanged.connect(lambda tree=tree: self._selection_changed(tree))
        self.loading = LoadingOverlay(self, "Reading pipelines…")
        self._update_buttons()

    # ---- data ------------------------------------------------------------------------------
    def on_show(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.loading.start()
        self.bridge.call(self.engine.call(self.engine.pipelines.list), self._loaded, self._failed)

    def _loaded(self, files: list[dict[str, Any]]) -> None:
        self.loading.stop()
        self.files = files
        self._fill()

    def _failed(self, exc: BaseException) -> None:
        self.loading.stop()
        self.toast("error", f"Listing pipelines failed: {exc}")

    def _fill(self) -> None:
        needle = self.search.text().strip().lower()
        self.mine.clear()
        self.shipped.clear()
        for f in self.files:
            file_name = Path(f["path"]).name
            if needle and needle not in f["name"].lower() and needle not in file_name.lower():
                continue
            description = f"⚠ {f['error']}" if f["error"] else f["description"]
            last = last_run_text(f.get("last_run"), self.prefs)
            if f["origin"] == "mine":
                when = self.prefs.format_time(datetime.fromtimestamp(f["modified"], UTC), "%Y-%m-%d %H:%M")
                item = QTreeWidgetItem([f["name"], file_name, f["mode"], last, when, description])
                self.mine.addTopLevelItem(item)
            else:
                item = QTreeWidgetItem([f["name"], f["origin"], file_name, f["mode"], last, description])
                self.shipped.addTopLevelItem(item)
            item.setData(0, Qt.ItemDataRole.UserRole, f)
            item.setToolTip(0, f["path"])
            item.setToolTip(item.columnCount() - 1, description)
        has_mine = self.mine.topLevelItemCount() > 0
        self.mine_stack.setCurrentWidget(self.mine if has_mine or needle else self.mine_empty)
        self._update_buttons()

    # ---- actions ---------------------------------------------------------------------------
    def selected(self) -> dict[str, Any] | None:
        for tree in (self.mine, self.shipped):
            items = tree.selectedItems()
            if items:
                return items[0].data(0, Qt.ItemDataRole.UserRole)
        return None

    def _selection_changed(self, tree: QTreeWidget) -> None:
        # One selection across both lists: choosing in one clears the other.
        other = self.shipped if tree is self.mine else self.mine
        if tree.selectedItems() and other.selectedItems():
            other.blockSignals(True)
            other.clearSelection()
            other.blockSignals(False)
        self._update_buttons()

    def _update_buttons(self) -> None:
        chosen = self.selected()
        self.open_button.setEnabled(chosen is not None)
        self.delete_button.setEnabled(chosen is not None and chosen["origin"] == "mine")

    def _open_item(self, item: QTreeWidgetItem) -> None:
        self.main_window.open_pipeline(Path(item.data(0, Qt.ItemDataRole.UserRole)["path"]))

    def open_selected(self) -> None:
        chosen = self.selected()
        if chosen is not None:
            self.main_window.open_pipeline(Path(chosen["path"]))

    def delete_selected(self) -> None:
        chosen = self.selected()
        if chosen is None or chosen["origin"] != "mine":
            return
        file_name = Path(chosen["path"]).name
        if not self.confirm(
            "Delete pipeline", f"Delete “{chosen['name']}” ({file_name})? This cannot be undone."
        ):
            return

        def deleted(_result) -> None:
            self.toast("success", f"Deleted {file_name}")
            self.refresh()

        self.bridge.call(
            self.engine.call(self.engine.pipelines.delete, chosen["path"]),
            deleted,
            lambda exc: self.toast("error", f"Deleting {file_name} failed: {exc}"),
        )
