"""Engine -> Qt: engine events and call results arrive as Qt signals on the GUI thread.

Engine threads call `EngineCore.emit`; our subscriber only appends the event to a queue and, if no
delivery is pending, posts one queued wake-up to the GUI thread. The GUI thread drains the queue in
slices of at most DRAIN_BUDGET_S, re-posting itself for the rest, so a burst of thousands of
events never holds the event loop for long and costs one cross-thread post, not one per event.
Nothing here waits: a result comes back through `call(future_or_job, on_ok, on_error)` when it is
ready, through the same queue, so never before the events emitted before it (a run's record after
its last node statuses).
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


class _Result:
    """A call's outcome, queued behind the events emitted before it."""

    __slots__ = ("exc", "token", "value")

    def __init__(self, token: int, value: Any, exc: BaseException | None):
        self.token, self.value, self.exc = token, value, exc


class EngineBridge(QObject):
    """One per window. `event` carries every engine event dict, on the Qt thread."""

    event = Signal(dict)
    _wake = Signal()

    def __init__(self, engine, parent: QObject | None = None):
        super().__init__(parent)
        self.engine = engine
        sys.setswitchinterval(min(sys.getswitchinterval(), GUI_SWITCH_INTERVAL_S))
        # Queued: engine threads only post; the slot runs on the GUI thread. Events and call results
        # share one queue, in the order they happened: a run's last node_progress events come
        # before its record, however far behind the Qt thread is.
        self._pending: collections.deque[dict | _Result] = collections.deque()
        self._pending_lock = threading.Lock()
        self._wake_posted = False
        self._wake.connect(self._drain, Qt.ConnectionType.QueuedConnection)
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
        self._post(event.to_dict())  # the views read events in their wire shape

    def _post(self, item: dict | _Result) -> None:  # any thread
        with self._pending_lock:
            self._pending.append(item)
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
                item = self._pending.popleft()
            if isinstance(item, _Result):
                self._deliver_result(item)
            else:
                try:
                    self.event.emit(item)
                except Exception:  # a broken view must not stop the others' events
                    log.exception("engine event handler failed")
            if time.perf_counter() > deadline:
                self._wake.emit()  # the rest after the loop has run other work (still queued)
                return

    # ---- results ---------------------------------------------------------------------------
    def call(
        self,
        future_or_job: Any,
        on_ok: Callable[[Any], None],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Call `on_ok(result)` or `on_error(exception)` on the Qt thread when the future (or the
        Job's future) is done, after the engine events emitted before that. Returns at once; never
        waits."""
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
            target._post(_Result(token, value, exc))

        future.add_done_callback(done)

    def _deliver_result(self, result: _Result) -> None:  # GUI thread
        on_ok, on_error = self._callbacks.pop(result.token, (None, None))
        if self._closed or on_ok is None:
            return
        try:
            if result.exc is None:
                on_ok(result.value)
            elif on_error is not None:
                on_error(result.exc)
            else:
                log.error("engine call failed: %s", result.exc)
        except Exception:  # a broken callback must not take the window down
            log.exception("bridge callback failed")

    def close(self) -> None:
        self._closed = True
        self._callbacks.clear()
        self._unsubscribe()
