"""How long the Qt event loop is blocked: a timer that should tick every `interval_ms` records the
gaps between its ticks; a gap longer than the interval is time the loop spent elsewhere.

    probe = EventLoopProbe(interval_ms=10)
    probe.start()
    ...  # drive the GUI: qtbot.waitUntil / app.processEvents while the work runs
    probe.stop()
    assert probe.max_gap_ms < 50, probe.report()
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Qt, QTimer


class EventLoopProbe(QObject):
    def __init__(self, interval_ms: int = 10, parent: QObject | None = None):
        super().__init__(parent)
        self.interval_ms = interval_ms
        self.gaps_ms: list[float] = []
        self.gap_at_s: list[float] = []  # when each gap ended, seconds after start()
        self.gap_cpu_ms: list[float] = []  # the Qt thread's own CPU in each gap (the rest: waiting)
        self._last: float | None = None
        self._last_cpu = 0.0
        self._started = 0.0
        self._stopped: float | None = None
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)  # coarse timers add 5% jitter by design
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def start(self) -> EventLoopProbe:
        self.gaps_ms.clear()
        self.gap_cpu_ms.clear()
        self.gap_at_s.clear()
        self._last_cpu = time.thread_time()
        self._started = self._last = time.perf_counter()
        self._stopped = None
        self._timer.start()
        return self

    def stop(self) -> dict:
        self._timer.stop()
        self._stopped = time.perf_counter()
        return self.report()

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        if self._last is not None:
            self.gaps_ms.append((now - self._last) * 1000.0)
            self.gap_cpu_ms.append((cpu - self._last_cpu) * 1000.0)
            self.gap_at_s.append(now - self._started)
        self._last, self._last_cpu = now, cpu

    def __enter__(self) -> EventLoopProbe:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def ticks(self) -> int:
        return len(self.gaps_ms)

    @property
    def max_gap_ms(self) -> float:
        return max(self.gaps_ms, default=0.0)

    @property
    def max_blocked_ms(self) -> float:
        """The longest time the loop could not run a due timer (the gap beyond one interval)."""
        return max(0.0, self.max_gap_ms - self.interval_ms)

    def percentile_ms(self, q: float) -> float:
        if not self.gaps_ms:
            return 0.0
        ordered = sorted(self.gaps_ms)
        return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]

    def report(self) -> dict:
        end = self._stopped if self._stopped is not None else time.perf_counter()
        return {
            "interval_ms": self.interval_ms,
            "seconds": round(end - self._started, 3),
            "ticks": self.ticks,
            "max_gap_ms": round(self.max_gap_ms, 2),
            "max_blocked_ms": round(self.max_blocked_ms, 2),
            "p99_gap_ms": round(self.percentile_ms(99), 2),
            "over_50ms": sum(1 for g in self.gaps_ms if g > 50.0),
            # The longest gap's own CPU: near the gap, the loop was busy; far below, it waited (GIL, core).
            "max_gap_cpu_ms": round(self.gap_cpu_ms[self.gaps_ms.index(self.max_gap_ms)], 2)
            if self.gaps_ms
            else 0.0,
            "max_gap_at_s": round(self.gap_at_s[self.gaps_ms.index(self.max_gap_ms)], 3)
            if self.gaps_ms
            else 0.0,
        }
