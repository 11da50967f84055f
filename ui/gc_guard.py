"""Python's cyclic garbage collector runs in whichever thread happens to allocate when a threshold
is crossed: with engine worker threads busy, that is often not the Qt thread. A Qt object whose
Python wrapper is collected there is destroyed there, taking Qt's internal locks off the GUI
thread while it waits for the GIL: the test suite deadlocked that way (a worker collecting a
closed page's QMenu while the GUI thread built a header view). So while the app runs, automatic
collection is off and a timer on the Qt thread collects instead, generation by generation, as the
thresholds would have (the approach of the well-known PyQt "GarbageCollector" recipe).
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

INTERVAL_MS = 200


class MainThreadCollector(QObject):
    def __init__(self, parent: QObject):
        super().__init__(parent)
        self.was_enabled = gc.isenabled()
        self.threshold = gc.get_threshold()
        gc.disable()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(INTERVAL_MS)

    def check(self) -> None:
        counts = gc.get_count()
        if counts[0] <= self.threshold[0]:
            return
        generation = 2 if counts[2] > self.threshold[2] else 1 if counts[1] > self.threshold[1] else 0
        gc.collect(generation)

    def stop(self) -> None:
        self.timer.stop()
        gc.collect()
        if self.was_enabled:
            gc.enable()


def install(app: QObject) -> MainThreadCollector:
    """Once per application: the collector lives as long as `app`."""
    collector = getattr(app, "_main_thread_collector", None)
    if collector is None:
        collector = MainThreadCollector(app)
        app._main_thread_collector = collector  # type: ignore[attr-defined]
    return collector
