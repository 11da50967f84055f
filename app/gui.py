"""`aggregator gui`: the desktop app's process — protocols registered, the engine on its own
threads, the main window on the Qt thread."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def run_gui(
    data_dir: str | Path | None = None, spec: str | Path | None = None, theme: str | None = None
) -> int:
    import protocols
    from engine.api import InProcessEngine

    protocols.register_all()
    from PySide6.QtWidgets import QApplication

    from ui import theme as themes
    from ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Data Aggregator")
    themes.apply(app, theme or os.environ.get("AGGREGATOR_THEME", "light"))
    engine = InProcessEngine(data_dir)
    try:
        window = MainWindow(engine)
        window.show()
        if spec:
            window.open_pipeline(Path(spec))
        return app.exec()
    finally:
        engine.close()
