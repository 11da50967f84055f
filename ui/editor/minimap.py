"""A minimap in the canvas' corner: the whole pipeline small, the main view's part framed.

It is a second view of the same scene (nothing is copied). Clicking or dragging in it centres the
main view there.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QFrame, QGraphicsView

MARGIN = 10
SIZE = (200, 130)


class Minimap(QGraphicsView):
    """`Minimap(viewer)`: put in `viewer`'s bottom-right corner; `refit()` after the pipeline changed."""

    def __init__(self, viewer: QGraphicsView):
        super().__init__(viewer.scene(), viewer)
        self.setObjectName("Minimap")
        self.main = viewer
        self.setFixedSize(*SIZE)
        self.setInteractive(False)  # its clicks steer the main view; they never pick items
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        self.setFrameShape(QFrame.Shape.Box)
        self.setStyleSheet("#Minimap { border: 1px solid #5a6470; background: #1b1e22; }")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Minimap: click to centre the canvas there")
        # The frame follows the main view's scrolling and zoom: its repaints are coalesced here.
        self._frame_timer = QTimer(self, singleShot=True, interval=30)
        self._frame_timer.timeout.connect(self.viewport().update)
        self._fit_timer = QTimer(self, singleShot=True, interval=100)
        self._fit_timer.timeout.connect(self._fit)
        self._watcher = _Watcher(self)
        viewer.installEventFilter(self._watcher)
        viewer.viewport().installEventFilter(self._watcher)
        self._place()

    # ---- geometry ------------------------------------------------------------------------------
    def refit(self) -> None:
        """Show the whole pipeline again (debounced: edits come in bursts)."""
        self._fit_timer.start()

    def _fit(self) -> None:
        rect = self.scene().itemsBoundingRect() if self.scene() is not None else QRectF()
        if rect.isEmpty():
            return
        rect = rect.adjusted(-60, -60, 60, 60)
        self.setSceneRect(rect)
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        self.viewport().update()

    def _place(self) -> None:
        parent = self.main.viewport()
        at = parent.geometry().bottomRight()
        self.move(at.x() - self.width() - MARGIN, at.y() - self.height() - MARGIN)
        self.raise_()

    def visible_rect(self) -> QRectF:
        """The part of the scene the main view shows (framed on the minimap)."""
        return self.main.mapToScene(self.main.viewport().rect()).boundingRect()

    # ---- painting ------------------------------------------------------------------------------
    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:
        painter.fillRect(rect, QColor(27, 30, 34))  # flat: the scene's grid is noise at this size

    def drawForeground(self, painter: QPainter, _rect: QRectF) -> None:
        pen = QPen(QColor(255, 200, 60))
        pen.setCosmetic(True)
        pen.setWidth(2)
        painter.setPen(pen)
        painter.setBrush(QColor(255, 200, 60, 30))
        painter.drawRect(self.visible_rect())

    # ---- steering -------------------------------------------------------------------------------
    def center_main_on(self, scene_pos: QPointF) -> None:
        """Centre the main view on a scene point (NodeGraphQt keeps its own scene range)."""
        viewer = self.main
        scene_range = getattr(viewer, "_scene_range", None)
        if scene_range is None:
            viewer.centerOn(scene_pos)
        else:
            scene_range.translate(scene_pos - scene_range.center())
            viewer.setSceneRect(scene_range)
        self.viewport().update()

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.center_main_on(self.mapToScene(event.position().toPoint()))
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.center_main_on(self.mapToScene(event.position().toPoint()))
        event.accept()

    def mouseReleaseEvent(self, event) -> None:
        event.accept()

    def wheelEvent(self, event) -> None:
        event.accept()  # the minimap always shows the whole pipeline


class _Watcher(QObject):
    """Moves the minimap with the canvas' size, and redraws its frame when the canvas moves."""

    def __init__(self, minimap: Minimap):
        super().__init__(minimap)
        self.minimap = minimap

    def eventFilter(self, watched, event) -> bool:
        kind = event.type()
        if kind == QEvent.Type.Resize:
            self.minimap._place()
            self.minimap._frame_timer.start()
        elif (
            kind == QEvent.Type.Paint
            and watched is self.minimap.main.viewport()
            and not self.minimap._frame_timer.isActive()
        ):
            self.minimap._frame_timer.start()
        return False
