"""GUI fixtures: a MainWindow on a real LocalEngine with its own temporary data directory.

Qt runs offscreen (tests/__main__.py sets QT_QPA_PLATFORM; this file does too, for direct runs).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="session", autouse=True)
def _protocols_registered():
    # The app registers the protocol connectors at start-up (app/gui.py); tests do the same.
    import protocols

    protocols.register_all()


@pytest.fixture(scope="session", autouse=True)
def _collect_on_the_qt_thread(qapp):
    """As the app does (ui/gc_guard.py): cyclic garbage is collected on the Qt thread only, so a
    widget a test left behind is never destroyed by an engine worker thread."""
    from ui import gc_guard

    collector = gc_guard.install(qapp)
    yield
    collector.stop()


@pytest.fixture
def engine(tmp_path):
    from engine.api import LocalEngine

    engine = LocalEngine(tmp_path / "data")
    yield engine
    engine.close()


@pytest.fixture
def window(qtbot, engine):
    """The main window, shown, on the `engine` fixture; closed (without prompting) after."""
    from PySide6.QtWidgets import QApplication

    from ui import theme
    from ui.main_window import MainWindow

    app = QApplication.instance()
    # The light theme, unless the app has it already: a stylesheet set on the whole application
    # costs ~0.3 s a test, and only the tests that switch themes leave another one behind (through
    # theme.apply, which sets the style, the palette, the stylesheet and this property together).
    if not (theme.current(app) == "light" and app.styleSheet() == theme.stylesheet("light")):
        theme.apply(app, "light")
    win = MainWindow(engine)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win._closing_confirmed = True  # teardown must never wait on an "unsaved changes" dialog
    win.close()
    win.deleteLater()


@pytest.fixture
def panel(qtbot, window):
    """The editor's preview panel on the window's engine and bridge (100 rows a port), shown."""
    from ui.editor.preview_panel import PreviewPanel

    panel = PreviewPanel(window.engine, window.bridge, limit=100)
    qtbot.addWidget(panel)
    panel.resize(1000, 380)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


@pytest.fixture
def artifacts() -> Path:
    """tests/artifacts/ (git-ignored): where screenshots go."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@contextlib.contextmanager
def opcua_simulator(turbines: int, tags_per_turbine: int) -> Iterator:
    """A real OPC UA server (protocols/opcua/simulator.py) changing its values every 100 ms."""
    from protocols.opcua.simulator import OpcUaSimulator

    sim = OpcUaSimulator(turbines=turbines, tags_per_turbine=tags_per_turbine, interval_s=0.1).start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def opcua_sim():
    """Two turbines of four tags, one server for a test module."""
    with opcua_simulator(2, 4) as sim:
        yield sim
