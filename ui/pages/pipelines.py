"""Pipelines page: the user's pipeline files (<data dir>/pipelines) and the shipped examples and
templates (resources/pipelines, resources/templates); open one in the editor, create, delete.

Listing, running (Run, F5) and deleting are EngineAPI calls (`pipelines.list`, `runs.start`,
`pipelines.delete`) on the engine's threads, and come back through the bridge; the Qt thread only
fills the tables. Attached to a service (`aggregator gui --attach`), the list is the service's
pipelines and a run runs there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
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
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Run the selected pipeline now (F5)")
        self.run_button.clicked.connect(self.run_selected)
        header.addWidget(self.run_button)
        run_key = QShortcut(QKeySequence("F5"), self, self.run_selected)
        run_key.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.delete_selected)
        header.addWidget(self.delete_button)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        header.addWidget(self.refresh_button)
        layout.addLayout(header)

        layout.addWidget(QLabel("<b>My pipelines</b>"))
        self.mine_stack = QStackedWidget()
        # Attached to a service (a RemoteEngine has its URL), pipelines are named by their API id.
        self.attached = getattr(self.engine, "url", None) is not None
        file_column = "Id" if self.attached else "File"
        self.mine = _tree(["Name", file_column, "Mode", "Last run", "Modified", "Description"])
        self.mine_empty = EmptyState(
            "No pipelines of your own yet. Start from a template below, or draw one in the editor.",
            "New pipeline",
            self.main_window.new_pipeline,
        )
        self.mine_stack.addWidget(self.mine)
        self.mine_stack.addWidget(self.mine_empty)
        layout.addWidget(self.mine_stack, 3)

        layout.addWidget(QLabel("<b>Examples and templates</b> (read-only: saving makes your own copy)"))
        self.shipped = _tree(["Name", "Kind", file_column, "Mode", "Last run", "Description"])
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
            file_name = self._label(f)
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

    def _label(self, entry: dict[str, Any]) -> str:
        """The file's name; attached to a service, the pipeline's id in its API (`orders`,
        `example:orders`), as `GET /pipelines/{id}` names it."""
        stem = Path(entry["path"]).stem
        if not self.attached:
            return Path(entry["path"]).name
        return stem if entry["origin"] == "mine" else f"{entry['origin']}:{stem}"

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
        self.run_button.setEnabled(chosen is not None and not chosen.get("error"))
        self.delete_button.setEnabled(chosen is not None and chosen["origin"] == "mine")

    def _open_item(self, item: QTreeWidgetItem) -> None:
        self.main_window.open_pipeline(Path(item.data(0, Qt.ItemDataRole.UserRole)["path"]))

    def open_selected(self) -> None:
        chosen = self.selected()
        if chosen is not None:
            self.main_window.open_pipeline(Path(chosen["path"]))

    def run_selected(self) -> None:
        """Run the selected pipeline now, as its file is (in the service, when attached to one). The
        document is read and the run started on an engine thread; a toast says how it ended, and the
        Runs page and the dashboard follow it through the engine's events."""
        chosen = self.selected()
        if chosen is None or chosen.get("error"):
            return
        engine, path, name = self.engine, chosen["path"], chosen["name"]

        def start():
            return engine.runs.start(engine.pipelines.open(path), spec_path=path)

        def started(job) -> None:
            self.toast("info", f"Running {name}…")
            self.bridge.call(job, finished, lambda exc: self.toast("error", f"{name} failed: {exc}"))

        def finished(record) -> None:
            status = (record or {}).get("status", "done")
            kind = {"success": "success", "warning": "warning", "cancelled": "info"}.get(status, "error")
            rows = (record or {}).get("rows_out")
            self.toast(kind, f"{name}: {status}" + (f" · {rows:,} rows written" if rows is not None else ""))
            self.refresh()

        self.bridge.call(
            engine.call(start), started, lambda exc: self.toast("error", f"Running {name}: {exc}")
        )

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
