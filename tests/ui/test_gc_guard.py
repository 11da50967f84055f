"""Cyclic garbage is collected on the Qt thread only while the app runs (ui/gc_guard.py)."""

from __future__ import annotations

import gc
import threading
import weakref

from PySide6.QtWidgets import QWidget

from ui import gc_guard


class _Cycle:
    def __init__(self):
        self.me = self
        self.widget = QWidget()


def test_automatic_collection_is_off_and_the_qt_thread_collects_cycles(qtbot, qapp):
    collector = gc_guard.install(qapp)
    assert gc_guard.install(qapp) is collector  # once per application
    assert not gc.isenabled()
    cycle = _Cycle()
    gone = weakref.ref(cycle)
    collected_on: list[str] = []
    cycle.widget.destroyed.connect(lambda: collected_on.append(threading.current_thread().name))
    del cycle
    assert gone() is not None  # a cycle: only the collector frees it
    threshold, collector.threshold = collector.threshold, (0, 0, 0)  # the next tick collects all
    try:
        qtbot.waitUntil(lambda: gone() is None, timeout=30_000)
    finally:
        collector.threshold = threshold
    assert collected_on == ["MainThread"]
