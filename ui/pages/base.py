"""The page contract: every sidebar page subclasses `Page`.

`__init__(window)` gets the main window, kept as `self.main_window` (not `self.window`: that is
QWidget.window()). It offers: `engine` (LocalEngine), `bridge` (EngineBridge),
`toast(kind, text)` with kind success|error|warning|info, `confirm(title, text, destructive=True)
-> bool`, `show_page(name)`, `open_pipeline(path)`. The same shortcuts are on the page itself.
"""

from __future__ import annotations

from PySide6.QtWidgets import QWidget


class Page(QWidget):
    title = "Page"
    icon_name = ""

    def __init__(self, window):
        super().__init__()
        self.main_window = window
        self.engine = window.engine
        self.bridge = window.bridge

    def on_show(self) -> None:
        """Called each time the page becomes the visible one (refresh here, in the background)."""

    def has_unsaved_changes(self) -> bool:
        """True asks the user to confirm before the window closes."""
        return False

    def shutdown(self) -> None:
        """Called once when the window closes (stop timers, cancel jobs)."""

    # ---- shortcuts to the window ---------------------------------------------------------------
    def toast(self, kind: str, text: str) -> None:
        self.main_window.toast(kind, text)

    def confirm(self, title: str, text: str, destructive: bool = True) -> bool:
        return self.main_window.confirm(title, text, destructive)
