"""Engine -> Qt: engine events and call results arrive as Qt signals on the GUI thread.

Engine threads call `EngineCore.emit`; our subscriber only emits a Qt signal, and Qt queues it to
the bridge's thread (the GUI thread) because the emitting thread differs. Nothing here waits: a
result comes back through `call(future_or_job, on_ok, on_error)` when it is ready.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal, Slot

log = logging.getLogger(__name__)


class EngineBridge(QObject):
    """One per window. `event` carries every engine event dict, on the Qt thread."""

    event = Signal(dict)
    _raw_event = Signal(object)
    _result = Signal(object, object, object, object)  # on_ok, on_error, value, exception

    def __init__(self, engine, parent: QObject | None = None):
        super().__init__(parent)
        self.engine = engine
        # Queued: engine threads only post; the slot runs on the GUI thread.
        self._raw_event.connect(self._deliver_event, Qt.ConnectionType.QueuedConnection)
        self._result.connect(self._deliver_result, Qt.ConnectionType.QueuedConnection)
        self._closed = False
        self._unsubscribe = engine.subscribe(self._on_engine_event)

    # ---- events ----------------------------------------------------------------------------
    def _on_engine_event(self, event: dict) -> None:  # engine thread
        if not self._closed:
            self._raw_event.emit(event)

    @Slot(object)
    def _deliver_event(self, event: dict) -> None:  # GUI thread
        if not self._closed:
            self.event.emit(event)

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

        def done(f: concurrent.futures.Future) -> None:  # any thread
            if self._closed:
                return
            try:
                value, exc = f.result(), None
            except BaseException as error:  # cancelled futures land here too
                value, exc = None, error
            self._result.emit(on_ok, on_error, value, exc)

        future.add_done_callback(done)

    @Slot(object, object, object, object)
    def _deliver_result(self, on_ok, on_error, value, exc) -> None:  # GUI thread
        if self._closed:
            return
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
        self._unsubscribe()
