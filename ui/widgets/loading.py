"""A translucent overlay with a spinner over a widget while its asynchronous action runs."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QWidget


class LoadingOverlay(QWidget):
    """`LoadingOverlay(parent)`; `start(text="")` shows it over the parent, `stop()` hides it."""

    def __init__(self, parent: QWidget, text: str = "Loading…"):
        super().__init__(parent)
        self.setObjectName("LoadingOverlay")
        self.text = text
        self._angle = 0
        self._timer = QTimer(self)
        self._timer.setInterval(50)
        self._timer.timeout.connect(self._spin)
        parent.installEventFilter(self)
        self.hide()

    @property
    def active(self) -> bool:
        return self._timer.isActive()

    def start(self, text: str | None = None) -> None:
        if text is not None:
            self.text = text
        self.setGeometry(self.parentWidget().rect())
        self.raise_()
        self.show()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self.hide()

    def _spin(self) -> None:
        self._angle = (self._angle + 30) % 360
        self.update()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.parentWidget() and event.type() == QEvent.Type.Resize:
            self.setGeometry(self.parentWidget().rect())
        return False

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(128, 128, 128, 70))
        size = 28
        center = self.rect().center()
        arc = QRectF(center.x() - size / 2, center.y() - size / 2 - 10, size, size)
        painter.setPen(QPen(QColor(40, 120, 220), 3))
        painter.drawArc(arc, -self._angle * 16, 270 * 16)
        painter.setPen(self.palette().text().color())
        text_rect = self.rect().adjusted(0, int(size) + 10, 0, 0)
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignCenter, self.text)
        painter.end()
