"""The live tag browser: a tree per source, each tag with its newest value, quality and time.

Rows are updated in place (items are kept per tag), so a refresh twice a second does not rebuild
the tree or lose the selection. Double-clicking a tag asks for it to be charted (`tag_activated`);
tags can also be dragged onto a chart (their names travel as text, one per line).
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLineEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

COLUMNS = ("Tag", "Value", "Quality", "Time")
QUALITY_COLORS = {"good": "#2e9d57", "uncertain": "#d08b00", "bad": "#d64545"}
TAG_ROLE = Qt.ItemDataRole.UserRole
MIME_TAGS = "application/x-aggregator-tags"


def format_value(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_time(timestamp_us: int | None, zone: tzinfo | None = None) -> str:
    """HH:MM:SS.mmm in `zone` (None: the computer's)."""
    if not timestamp_us:
        return "—"
    return datetime.fromtimestamp(timestamp_us / 1e6, tz=zone).strftime("%H:%M:%S.%f")[:-3]


class _TagTree(QTreeWidget):
    def mimeData(self, items):
        names = [i.data(0, TAG_ROLE) for i in items if i.data(0, TAG_ROLE)]
        data = QMimeData()
        data.setText("\n".join(names))
        data.setData(MIME_TAGS, "\n".join(names).encode())
        return data

    def mimeTypes(self):
        return [MIME_TAGS, "text/plain"]


class TagBrowser(QWidget):
    tag_activated = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.zone: tzinfo | None = None  # the time zone of the shown timestamps (None: the computer's)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter tags")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._apply_filter)
        layout.addWidget(self.filter)
        self.tree = _TagTree()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setUniformRowHeights(True)  # a fast tree with thousands of tags
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setDragEnabled(True)
        self.tree.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        # The tag name takes the room left by the fixed value, quality and time columns, and is
        # elided in the middle: tag paths differ at both ends (Turbine01.…Temp, Turbine02.…Temp).
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column, width in enumerate((0, 76, 84, 96)):
            if width:
                header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
                self.tree.setColumnWidth(column, width)
        header.setMinimumSectionSize(40)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.tree.setIndentation(14)
        self.tree.itemDoubleClicked.connect(self._double_clicked)
        layout.addWidget(self.tree)
        self._sources: dict[str, QTreeWidgetItem] = {}
        self._tags: dict[str, QTreeWidgetItem] = {}
        self._rows: dict[str, dict] = {}
        self.tree.verticalScrollBar().valueChanged.connect(self.fill_visible)
        self.tree.itemExpanded.connect(self.fill_visible)

    # ---- data --------------------------------------------------------------------------------
    def update_tags(self, rows: list[dict]) -> None:
        """Show `engine.live.tags()` rows: new tags are added, known ones updated, tags no longer
        listed removed. Only the rows on screen get their texts set (a thousand streaming tags
        would otherwise cost ~50 ms of the Qt thread twice a second); scrolling fills the rest."""
        self._rows = {row["tag"]: row for row in rows}
        self.tree.setUpdatesEnabled(False)
        try:
            added: dict[str, list[QTreeWidgetItem]] = {}
            for tag, row in self._rows.items():
                item = self._tags.get(tag)
                if item is None:
                    item = self._tags[tag] = QTreeWidgetItem([tag, "", "", ""])
                    item.setData(0, TAG_ROLE, tag)
                    item.setToolTip(0, tag)
                    item.setHidden(not self._matches(tag))
                    added.setdefault(row["source"], []).append(item)
                elif item.parent() is not None and item.parent().text(0) != row["source"]:
                    # The source became known (the historian read lags the ring buffer): move it.
                    selected = item.isSelected()
                    item.parent().removeChild(item)
                    added.setdefault(row["source"], []).append(item)
                    item.setSelected(selected)
            for source, items in added.items():
                self._source_item(source).addChildren(items)  # one insertion per source
            for tag in [t for t in self._tags if t not in self._rows]:
                item = self._tags.pop(tag)
                parent = item.parent()
                if parent is not None:
                    parent.removeChild(item)
            for source, item in list(self._sources.items()):
                if item.childCount() == 0:
                    self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))
                    del self._sources[source]
                else:
                    item.setText(1, f"{item.childCount()} tags")
            self.fill_visible()
        finally:
            self.tree.setUpdatesEnabled(True)

    def fill_visible(self) -> None:
        """Set the texts of the tag rows that are on screen from the latest rows."""
        height = self.tree.viewport().height()
        item = self.tree.itemAt(4, 1)
        while item is not None:
            if self.tree.visualItemRect(item).top() > height:
                break
            tag = item.data(0, TAG_ROLE)
            row = self._rows.get(tag) if tag else None
            if row is not None:
                self._fill(item, row)
            item = self.tree.itemBelow(item)

    def _source_item(self, source: str) -> QTreeWidgetItem:
        item = self._sources.get(source)
        if item is None:
            item = self._sources[source] = QTreeWidgetItem([source])
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsDragEnabled)
            font = item.font(0)
            font.setBold(True)
            item.setFont(0, font)
            self.tree.addTopLevelItem(item)
            item.setExpanded(True)
        return item

    def _fill(self, item: QTreeWidgetItem, row: dict) -> None:
        quality = row.get("quality") or "bad"
        state = quality if row.get("live", True) else f"{quality} (stored)"
        if item.text(2) != state:
            item.setText(2, state)
            item.setForeground(2, QBrush(QColor(QUALITY_COLORS.get(quality, "#d64545"))))
        item.setText(1, format_value(row.get("value")))
        item.setText(3, format_time(row.get("timestamp_us"), self.zone))

    # ---- questions and actions ---------------------------------------------------------------
    def tags(self) -> list[str]:
        return sorted(self._tags)

    def sources(self) -> list[str]:
        return sorted(self._sources)

    def item(self, tag: str) -> QTreeWidgetItem | None:
        return self._tags.get(tag)

    def selected_tags(self) -> list[str]:
        return [i.data(0, TAG_ROLE) for i in self.tree.selectedItems() if i.data(0, TAG_ROLE)]

    def _double_clicked(self, item: QTreeWidgetItem, _column: int) -> None:
        tag = item.data(0, TAG_ROLE)
        if tag:
            self.tag_activated.emit(tag)

    def _matches(self, tag: str) -> bool:
        text = self.filter.text().strip().lower()
        return not text or text in tag.lower()

    def _apply_filter(self) -> None:
        for tag, item in self._tags.items():
            item.setHidden(not self._matches(tag))
        self.fill_visible()

    def resizeEvent(self, event):
        super().resizeEvent(event)
        self.fill_visible()
