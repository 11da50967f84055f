"""A QTableView over a Polars DataFrame: headers show each column's name and type.

The model reads cells straight from the frame's columns (no per-row Python objects), and hands rows
to the view in chunks (canFetchMore/fetchMore), so a large frame shows at once and scrolls lazily.
"""

from __future__ import annotations

import polars as pl
from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget

CHUNK_ROWS = 500


def format_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class FrameModel(QAbstractTableModel):
    def __init__(self, frame: pl.DataFrame | None = None, parent=None):
        super().__init__(parent)
        self._frame = pl.DataFrame()
        self._columns: list[pl.Series] = []
        self._loaded = 0
        if frame is not None:
            self.set_frame(frame)

    def set_frame(self, frame: pl.DataFrame) -> None:
        self.beginResetModel()
        self._frame = frame
        self._columns = frame.get_columns()
        self._loaded = min(CHUNK_ROWS, frame.height)
        self.endResetModel()

    def frame(self) -> pl.DataFrame:
        return self._frame

    # ---- Qt model ------------------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else self._loaded

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._columns)

    def canFetchMore(self, parent=QModelIndex()) -> bool:
        return not parent.isValid() and self._loaded < self._frame.height

    def fetchMore(self, parent=QModelIndex()) -> None:
        more = min(CHUNK_ROWS, self._frame.height - self._loaded)
        if more <= 0:
            return
        self.beginInsertRows(QModelIndex(), self._loaded, self._loaded + more - 1)
        self._loaded += more
        self.endInsertRows()

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return format_value(self._columns[index.column()][index.row()])
        if role == Qt.ItemDataRole.ForegroundRole and self._columns[index.column()][index.row()] is None:
            return QColor(140, 140, 140)
        if role == Qt.ItemDataRole.TextAlignmentRole and self._columns[index.column()].dtype.is_numeric():
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return None
        if orientation == Qt.Orientation.Horizontal:
            column = self._columns[section]
            return f"{column.name}\n{column.dtype}"
        return str(section + 1)


class FrameTable(QTableView):
    """`FrameTable().set_frame(df)`; `frame()` gives it back; `model_` is the FrameModel."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("FrameTable")
        self.model_ = FrameModel(parent=self)
        self.setModel(self.model_)
        self.setAlternatingRowColors(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setDefaultAlignment(
            Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        )
        self.verticalHeader().setDefaultSectionSize(22)

    def set_frame(self, frame: pl.DataFrame) -> None:
        self.model_.set_frame(frame)
        # Size columns from the first rows only: resizeColumnsToContents scans everything loaded.
        metrics = self.fontMetrics()
        for i, column in enumerate(frame.get_columns()):
            sample = [format_value(v) for v in column.head(50).to_list()]
            width = max(
                [metrics.horizontalAdvance(s) for s in [column.name, str(column.dtype), *sample]] or [40]
            )
            self.setColumnWidth(i, min(max(width + 24, 60), 360))

    def frame(self) -> pl.DataFrame:
        return self.model_.frame()
