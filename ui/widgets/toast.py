"""Toast notifications: small cards stacked at the bottom-right of the window, auto-dismissed."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QWidget

KINDS = ("success", "error", "warning", "info")
ICONS = {"success": "✔", "error": "✖", "warning": "⚠", "info": "ℹ"}
# Errors stay longer: they are the ones people need time to read.
TIMEOUT_MS = {"success": 4000, "info": 4000, "warning": 6000, "error": 8000}


class Toast(QFrame):
    closed = Signal(object)

    def __init__(self, parent: QWidget, kind: str, text: str, timeout_ms: int):
        super().__init__(parent)
        if kind not in KINDS:
            kind = "info"
        self.kind = kind
        self.text = text
        self.setObjectName("Toast")
        self.setProperty("kind", kind)  # the QSS colours the card by kind
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 8, 6, 8)
        icon = QLabel(ICONS[kind])
        icon.setObjectName("ToastIcon")
        layout.addWidget(icon)
        self.label = QLabel(text)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.label.setOpenExternalLinks(False)
        layout.addWidget(self.label, 1)
        close = QToolButton()
        close.setText("×")
        close.setAutoRaise(True)
        close.clicked.connect(self.dismiss)
        layout.addWidget(close)
        self.setFixedWidth(340)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self.dismiss)
        if timeout_ms > 0:
            self.timer.start(timeout_ms)

    def dismiss(self) -> None:
        self.timer.stop()
        self.hide()
        self.closed.emit(self)
        self.deleteLater()


class ToastManager(QObject):
    """Owns the toasts of one window; the newest sits lowest, older ones stack above it."""

    MARGIN = 16
    SPACING = 8
    MAX_VISIBLE = 5

    def __init__(self, host: QWidget):
        super().__init__(host)
        self.host = host
        self.toasts: list[Toast] = []
        host.installEventFilter(self)

    def show(self, kind: str, text: str, timeout_ms: int | None = None) -> Toast:
        toast = Toast(self.host, kind, text, TIMEOUT_MS.get(kind, 4000) if timeout_ms is None else timeout_ms)
        toast.closed.connect(self._forget)
        self.toasts.append(toast)
        while len(self.toasts) > self.MAX_VISIBLE:
            self.toasts[0].dismiss()
        toast.adjustSize()
        toast.show()
        toast.raise_()
        self._layout()
        return toast

    def _forget(self, toast: Toast) -> None:
        if toast in self.toasts:
            self.toasts.remove(toast)
        self._layout()

    def _layout(self) -> None:
        bottom = self.host.height() - self.MARGIN
        for toast in reversed(self.toasts):
            toast.adjustSize()
            height = toast.sizeHint().height()
            toast.setGeometry(
                self.host.width() - toast.width() - self.MARGIN, bottom - height, toast.width(), height
            )
            toast.raise_()
            bottom -= height + self.SPACING

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.host and event.type() == QEvent.Type.Resize:
            self._layout()
        return False
