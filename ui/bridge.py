"""Engine -> Qt: engine events and call results arrive as Qt signals on the GUI thread.

Engine threads call `EngineCore.emit`; our subscriber only appends the event to a queue and, if no
delivery is pending, posts one queued wake-up to the GUI thread. The GUI thread drains the queue in
slices of at most DRAIN_BUDGET_S, re-posting itself for the rest, so a burst of thousands of
events never holds the event loop for long and costs one cross-thread post, not one per event.
Nothing here waits: a result comes back through `call(future_or_job, on_ok, on_error)` when it is
ready.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, Signal, Slot

if TYPE_CHECKING:
    from engine.api.events import EngineEvent

log = logging.getLogger(__name__)
DRAIN_BUDGET_S = 0.005
# The GIL hand-over interval for the GUI process. The Qt thread lets go of the GIL in every C++ call
# (a paint, a setData) and then waits for an engine thread running Python to hand it back, which
# it does after the switch interval: at the default 5 ms, one chart refresh of 6 ms CPU took 40 ms.
GUI_SWITCH_INTERVAL_S = 0.001


class EngineBridge(QObject):
    """One per window. `event` carries every engine event dict, on the Qt thread."""

    event = Signal(dict)
    _wake = Signal()
    _result = Signal(object, object, object)  # call token, value, exception

    def __init__(self, engine, parent: QObject | None = None):
        super().__init__(parent)
        self.engine = engine
        sys.setswitchinterval(min(sys.getswitchinterval(), GUI_SWITCH_INTERVAL_S))
        # Queued: engine threads only post; the slot runs on the GUI thread.
        self._pending: collections.deque[dict] = collections.deque()
        self._pending_lock = threading.Lock()
        self._wake_posted = False
        self._wake.connect(self._drain, Qt.ConnectionType.QueuedConnection)
        self._result.connect(self._deliver_result, Qt.ConnectionType.QueuedConnection)
        self._closed = False
        # Callbacks stay here, on the Qt side, keyed by a token: a future's done-callback runs on
        # an engine thread and must never hold the last reference to a widget (a Qt object whose
        # wrapper dies there is destroyed off the GUI thread).
        self._callbacks: dict[int, tuple[Callable[[Any], None], Callable[[BaseException], None] | None]] = {}
        self._tokens = itertools.count()
        self._unsubscribe = engine.subscribe(self._on_engine_event)

    # ---- events ----------------------------------------------------------------------------
    def _on_engine_event(self, event: EngineEvent) -> None:  # engine thread
        if self._closed:
            return
        with self._pending_lock:
            self._pending.append(event.to_dict())  # the views read events in their wire shape
            if self._wake_posted:
                return
            self._wake_posted = True
        self._wake.emit()

    @Slot()
    def _drain(self) -> None:  # GUI thread
        deadline = time.perf_counter() + DRAIN_BUDGET_S
        while not self._closed:
            with self._pending_lock:
                if not self._pending:
                    self._wake_posted = False
                    return
                event = self._pending.popleft()
            self._emit(event)
            if time.perf_counter() > deadline:
                self._wake.emit()  # the rest after the loop has run other work (still queued)
                return

    def _drain_before_result(self) -> None:  # GUI thread
        """Deliver the events already waiting, whatever the budget: they were emitted before the
        result about to be delivered (a run's last node_progress before its record), and a drain
        cut short by its budget must not let the result overtake them. Only those: events that
        arrive meanwhile wait for the next drain."""
        with self._pending_lock:
            count = len(self._pending)
        for _ in range(count):
            if self._closed:
                return
            with self._pending_lock:
                if not self._pending:
                    return
                event = self._pending.popleft()
            self._emit(event)

    def _emit(self, event: dict) -> None:
        try:
            self.event.emit(event)
        except Exception:  # a broken view must not stop the others' events
            log.exception("engine event handler failed")

    # ---- results ---------------------------------------------------------------------------
    def call(
        self,
        future_or_job: Any,
        on_ok: Callable[[Any], None],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Call `on_ok(result)` or `on_error(exception)` on the Qt thread when the future (or the
        Job's future) is done. Returns at once; never waits."""
        future: concurrent.futures.Future = getattr(future_or_job, "future", future_or_job)
        token = next(self._tokens)
        self._callbacks[token] = (on_ok, on_error)
        bridge = weakref.ref(self)

        def done(f: concurrent.futures.Future) -> None:  # any thread: only the token crosses
            target = bridge()
            if target is None or target._closed:
                return
            try:
                value, exc = f.result(), None
            except BaseException as error:  # cancelled futures land here too
                value, exc = None, error
            target._result.emit(token, value, exc)

        future.add_done_callback(done)

    @Slot(object, object, object)
    def _deliver_result(self, token, value, exc) -> None:  # GUI thread
        on_ok, on_error = self._callbacks.pop(token, (None, None))
        if self._closed or on_ok is None:
            return
        self._drain_before_result()
        try:
            if exc is None:
                on_ok(value)
            elif on_error is not None:
                on_error(exc)
            else:
                log.error("engine call failed: %s", exc)
        except Exception:  # a broken callback must not take the window down
            log.exception("bridge callback failed")

    def close(self) -> None:
        self._closed = True
        self._callbacks.clear()
        self._unsubscribe()
