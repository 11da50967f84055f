"""`aggregator gui`: the desktop app's process — settings read, protocols registered, the engine on
its own threads, the main window on the Qt thread. The engine is closed when the window is."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def run_gui(
    data_dir: str | Path | None = None, spec: str | Path | None = None, theme: str | None = None
) -> int:
    import protocols
    from app.settings import Settings, SettingsStore
    from engine.api import LocalEngine

    protocols.register_all()
    from PySide6.QtWidgets import QApplication

    from ui import theme as themes
    from ui.main_window import MainWindow

    store = SettingsStore()
    settings_error = None
    try:
        settings = store.load()
    except ValueError as exc:  # a broken file must not keep the app from starting: say so, use defaults
        settings, settings_error = Settings(), str(exc)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Data Aggregator")
    themes.apply(app, theme or settings.theme)
    engine = LocalEngine(data_dir or settings.data_dir)
    try:
        window = MainWindow(engine, settings=store)
        window.show()
        if settings_error:
            window.toast("warning", f"Settings not read, defaults used: {settings_error}")
        if spec:
            window.open_pipeline(Path(spec))
        return app.exec()
    finally:
        engine.close()
