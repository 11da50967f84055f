"""The node palette: the engine's registries as a searchable tree (sources, transforms by
category, destinations). Drag an entry onto the canvas, or double-click it / press Enter to add
it at the centre of the view."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from ui.editor.canvas import PALETTE_MIME_PREFIX

KEY_ROLE = Qt.ItemDataRole.UserRole
TRANSFORM_ORDER = ["clean", "calculate", "validate", "combine", "reshape", "timeseries", "code"]


class _Tree(QTreeWidget):
    def mimeData(self, items) -> QMimeData:
        data = QMimeData()
        keys = [i.data(0, KEY_ROLE) for i in items if i.data(0, KEY_ROLE)]
        if keys:
            data.setText(PALETTE_MIME_PREFIX + keys[0])
        return data


class Palette(QWidget):
    """`activated(key)` when an entry is double-clicked or entered."""

    activated = Signal(str)

    def __init__(self, node_types: list[dict[str, Any]], parent: QWidget | None = None):
        super().__init__(parent)
        self.search = QLineEdit(placeholderText="Search nodes…")
        self.search.setClearButtonEnabled(True)
        self.tree = _Tree()
        self.tree.setHeaderHidden(True)
        self.tree.setDragEnabled(True)
        self.tree.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.search)
        layout.addWidget(self.tree)
        self._entries: dict[str, QTreeWidgetItem] = {}
        self._build(node_types)
        self.search.textChanged.connect(self.filter)
        self.tree.itemActivated.connect(self._on_activated)  # double-click or Enter
        self.setMinimumWidth(200)

    def _build(self, types: list[dict[str, Any]]) -> None:
        sources = QTreeWidgetItem(self.tree, ["Sources"])
        transforms = QTreeWidgetItem(self.tree, ["Transforms"])
        destinations = QTreeWidgetItem(self.tree, ["Destinations"])
        groups: dict[str, QTreeWidgetItem] = {}
        cats = sorted(
            {t["category"] for t in types if t["kind"] == "transform"},
            key=lambda c: (TRANSFORM_ORDER.index(c) if c in TRANSFORM_ORDER else 99, c),
        )
        for cat in cats:
            groups[cat] = QTreeWidgetItem(transforms, [cat.title()])
        for info in sorted(types, key=lambda t: t["title"].lower()):
            parent = {"source": sources, "destination": destinations}.get(info["kind"]) or groups[
                info["category"]
            ]
            item = QTreeWidgetItem(parent, [info["title"]])
            item.setData(0, KEY_ROLE, info["key"])
            item.setToolTip(0, f"{info['title']} ({info['type']})\n{info['description']}")
            self._entries[info["key"]] = item
        for group in (sources, transforms, destinations, *groups.values()):
            group.setFlags(group.flags() & ~Qt.ItemFlag.ItemIsDragEnabled)
        self.tree.expandAll()

    def keys(self) -> list[str]:
        return list(self._entries)

    def entry(self, key: str) -> QTreeWidgetItem:
        return self._entries[key]

    def filter(self, text: str) -> None:
        """Show the entries whose title, type or description hold every word typed."""
        words = text.lower().split()
        for key, item in self._entries.items():
            hay = f"{item.text(0)} {key} {item.toolTip(0)}".lower()
            item.setHidden(not all(w in hay for w in words))
        self._hide_empty_groups(self.tree.invisibleRootItem())
        self.tree.expandAll()

    def _hide_empty_groups(self, parent: QTreeWidgetItem) -> bool:
        """Hide groups without a visible entry; returns whether `parent` shows anything."""
        any_visible = False
        for i in range(parent.childCount()):
            child = parent.child(i)
            if child.data(0, KEY_ROLE):
                any_visible |= not child.isHidden()
            else:
                shown = self._hide_empty_groups(child)
                child.setHidden(not shown)
                any_visible |= shown
        return any_visible

    def visible_keys(self) -> list[str]:
        return [
            k for k, item in self._entries.items() if not item.isHidden() and not item.parent().isHidden()
        ]

    def _on_activated(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        key = item.data(0, KEY_ROLE)
        if key:
            self.activated.emit(key)
