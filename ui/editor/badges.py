"""A run's progress drawn on a node: a small pill under the node with its status and rows.

The pill is a child item of the node's picture, so it moves with the node and goes with it.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem

STATUS_COLORS = {
    "pending": (120, 120, 120),
    "running": (45, 120, 220),
    "success": (40, 160, 80),
    "warning": (215, 150, 30),
    "failed": (220, 60, 60),
    "cancelled": (120, 120, 120),
    "skipped": (120, 120, 120),
}
STATUS_MARKS = {"running": "●", "success": "✓", "warning": "!", "failed": "✗", "cancelled": "■"}


def status_color(status: str | None) -> tuple[int, int, int]:
    return STATUS_COLORS.get(status or "", STATUS_COLORS["pending"])


def progress_text(stats: dict[str, Any]) -> str:
    """'✓ success · 1,234 rows' (+ '· 3 rejected'): the rows a node passed on, or took in if it
    passes nothing on (a destination)."""
    status = stats.get("status") or "pending"
    rows = stats.get("rows_out") or 0
    if not rows and stats.get("rows_in"):
        rows = stats["rows_in"]
    text = f"{STATUS_MARKS.get(status, '○')} {status} · {rows:,} rows"
    if stats.get("rows_rejected"):
        text += f" · {stats['rows_rejected']:,} rejected"
    return text


class ProgressBadge(QGraphicsItem):
    """`ProgressBadge(node_view)`; `set_stats(stats)` redraws it; `text` is what it shows."""

    PAD_X, PAD_Y, GAP = 6.0, 2.0, 4.0

    def __init__(self, node_view: QGraphicsItem):
        super().__init__(node_view)
        self.node_view = node_view
        self.text = ""
        self.status = "pending"
        self.font = QFont()
        self.font.setPointSizeF(8.0)
        self._rect = QRectF()
        self.setZValue(node_view.zValue() + 1)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def set_stats(self, stats: dict[str, Any]) -> None:
        self.prepareGeometryChange()
        self.status = stats.get("status") or "pending"
        self.text = progress_text(stats)
        metrics = QFontMetricsF(self.font)
        width = metrics.horizontalAdvance(self.text) + 2 * self.PAD_X
        height = metrics.height() + 2 * self.PAD_Y
        node = self.node_view.boundingRect()
        # under the node, centred; it keeps clear of the ports at the sides
        self._rect = QRectF(node.center().x() - width / 2, node.bottom() + self.GAP, width, height)
        self.update()

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(self, painter: QPainter, _option, _widget=None) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(*status_color(self.status)))
        painter.drawRoundedRect(self._rect, self._rect.height() / 2, self._rect.height() / 2)
        painter.setPen(QPen(QColor(255, 255, 255)))
        painter.setFont(self.font)
        painter.drawText(self._rect, Qt.AlignmentFlag.AlignCenter, self.text)
        painter.restore()
