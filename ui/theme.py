"""Light and dark themes: the Fusion style, a matching palette, and a QSS file per theme
(resources/themes/<name>.qss). `apply(app, "light" | "dark")`."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("light", "dark")
THEME_DIR = Path(__file__).resolve().parent.parent / "resources" / "themes"


def _palette(name: str) -> QPalette:
    palette = QPalette()
    if name == "dark":
        colors = {
            QPalette.ColorRole.Window: "#1e2127",
            QPalette.ColorRole.WindowText: "#d7dae0",
            QPalette.ColorRole.Base: "#23272e",
            QPalette.ColorRole.AlternateBase: "#272b33",
            QPalette.ColorRole.Text: "#d7dae0",
            QPalette.ColorRole.Button: "#2a2e36",
            QPalette.ColorRole.ButtonText: "#d7dae0",
            QPalette.ColorRole.Highlight: "#3b78e7",
            QPalette.ColorRole.HighlightedText: "#ffffff",
            QPalette.ColorRole.ToolTipBase: "#2a2e36",
            QPalette.ColorRole.ToolTipText: "#e8eaee",
            QPalette.ColorRole.PlaceholderText: "#7d8490",
            QPalette.ColorRole.Link: "#6ea2ff",
        }
    else:
        colors = {
            QPalette.ColorRole.Window: "#f6f7f9",
            QPalette.ColorRole.WindowText: "#1d2230",
            QPalette.ColorRole.Base: "#ffffff",
            QPalette.ColorRole.AlternateBase: "#f3f5f8",
            QPalette.ColorRole.Text: "#1d2230",
            QPalette.ColorRole.Button: "#eef1f5",
            QPalette.ColorRole.ButtonText: "#1d2230",
            QPalette.ColorRole.Highlight: "#2f6fde",
            QPalette.ColorRole.HighlightedText: "#ffffff",
            QPalette.ColorRole.ToolTipBase: "#ffffff",
            QPalette.ColorRole.ToolTipText: "#1d2230",
            QPalette.ColorRole.PlaceholderText: "#8a919c",
            QPalette.ColorRole.Link: "#2f6fde",
        }
    for role, color in colors.items():
        palette.setColor(role, QColor(color))
    return palette


def stylesheet(name: str) -> str:
    if name not in THEMES:
        raise ValueError(f"theme {name!r}: allowed are {', '.join(THEMES)}")
    return (THEME_DIR / f"{name}.qss").read_text(encoding="utf-8")


def apply(app: QApplication, name: str = "light") -> None:
    """Switch the whole application to a theme (it can be called again at any time)."""
    qss = stylesheet(name)  # raises on an unknown name before anything changes
    app.setStyle("Fusion")
    app.setPalette(_palette(name))
    app.setStyleSheet(qss)
    app.setProperty("theme", name)


def current(app: QApplication) -> str:
    return app.property("theme") or "light"
