"""Library chatter goes to the log at debug level, never to the console.

Protocol libraries log what is news to their own developers: pymodbus warns "Failed to connect"
and "Repeating...." on every retry, asyncua logs a traceback when a session closes. A source
reports what matters itself, once, through its session state (one line naming the endpoint and
the reason). `demote_library_logs("pymodbus")` sends every record of that library's loggers to
the logger `aggregator.lib.<name>` at DEBUG instead, so that with no logging configured (the CLI)
nothing reaches stderr through Python's last-resort handler, and a debug log still has all of it.
"""

from __future__ import annotations

import logging
import threading

_done: set[str] = set()
_lock = threading.Lock()


class _ToDebug(logging.Handler):
    """Re-logs each record at DEBUG under `aggregator.lib.<library>` (traceback text kept)."""

    def __init__(self, library: str):
        super().__init__(logging.NOTSET)
        self.target = logging.getLogger(f"aggregator.lib.{library}")

    def emit(self, record: logging.LogRecord) -> None:
        if not self.target.isEnabledFor(logging.DEBUG):
            return
        try:
            text = record.getMessage()
        except Exception:  # a library's bad format string is no reason to fail
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        self.target.debug("%s [%s]", text, record.levelname)


def demote_library_logs(*libraries: str) -> None:
    """Route the named libraries' loggers (and their children) to debug level; idempotent."""
    with _lock:
        for library in libraries:
            if library in _done:
                continue
            logger = logging.getLogger(library)
            logger.addHandler(_ToDebug(library))
            logger.propagate = False
            _done.add(library)


__all__ = ["demote_library_logs"]
