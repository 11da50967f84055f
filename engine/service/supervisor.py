"""`real_time` pipelines run continuously: each has a keeper thread that starts its stream, waits for
it to end and, unless the service asked it to stop, starts it again after a back-off.

The waits are the pipeline's own `retry_policy` (`initial_delay_seconds`, `backoff_multiplier`,
`max_delay_seconds`) through the one back-off of engine/runs/retry.py, jittered by 10% so that
streams failing together do not restart in step. A stream that ran for `RESET_AFTER_S` before it
ended starts over at the first delay. Every end and restart is said (the run itself is in the run
history with its error).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RESET_AFTER_S = 60.0
MIN_DELAY_S = 0.5  # a retry_policy of 0 s must not spin


@dataclass
class _Kept:
    key: str
    name: str
    start: Callable[[], Any]  # () -> Job
    policy: Any
    halt: threading.Event = field(default_factory=threading.Event)
    job: Any = None
    thread: threading.Thread | None = None
    restarts: int = 0
    delays: list[float] = field(default_factory=list)  # the waits taken, in order (for status and tests)


class Supervisor:
    def __init__(self, stop_job: Callable[[str], bool], say: Callable[[str, str], None]):
        self._stop_job = stop_job
        self._say = say
        self._kept: dict[str, _Kept] = {}
        self._lock = threading.Lock()

    def keep(self, key: str, name: str, start: Callable[[], Any], policy: Any) -> None:
        """Run `start()` (a stream's Job) now and again whenever it ends, until `release(key)`."""
        self.release(key)
        kept = _Kept(key, name, start, policy)
        kept.thread = threading.Thread(target=self._keep, args=(kept,), name=f"keep-{name}", daemon=True)
        with self._lock:
            self._kept[key] = kept
        kept.thread.start()

    def _keep(self, kept: _Kept) -> None:
        from engine.runs.retry import backoff_delays

        def fresh():
            p = kept.policy
            return backoff_delays(
                max(MIN_DELAY_S, p.initial_delay_seconds), p.backoff_multiplier, p.max_delay_seconds, 0.1
            )

        delays = fresh()
        while not kept.halt.is_set():
            began = time.monotonic()
            try:
                kept.job = kept.start()
                if kept.halt.is_set():  # released while it started
                    self._stop_job(kept.job.id)
                self._say("info", f"stream '{kept.name}' started")
                record = kept.job.result()
                why = f"ended {record.get('status')}" + (
                    f": {record['error']}" if record.get("error") else ""
                )
            except Exception as exc:  # it did not start, or its job raised
                why = f"failed: {exc}"
            if kept.halt.is_set():
                return
            if time.monotonic() - began >= RESET_AFTER_S:
                delays = fresh()
            delay = next(delays)
            kept.delays.append(delay)
            kept.restarts += 1
            self._say("warning", f"stream '{kept.name}' {why}; restarting in {delay:.1f} s")
            if kept.halt.wait(delay):
                return

    def release(self, key: str, timeout: float = 10.0) -> None:
        """Stop keeping `key`: its stream is stopped gracefully (last micro-batch committed)."""
        with self._lock:
            kept = self._kept.pop(key, None)
        if kept is not None:
            self._halt(kept)
            self._join([kept], timeout)

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            kept = list(self._kept.values())
            self._kept.clear()
        for k in kept:
            self._halt(k)
        self._join(kept, timeout)

    def _halt(self, kept: _Kept) -> None:
        kept.halt.set()
        if kept.job is not None:
            self._stop_job(kept.job.id)

    @staticmethod
    def _join(kept: list[_Kept], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for k in kept:
            if k.job is not None:
                with contextlib.suppress(Exception):
                    k.job.result(max(0.0, deadline - time.monotonic()))
            if k.thread is not None:
                k.thread.join(max(0.0, deadline - time.monotonic()))

    def status(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                k.key: {
                    "name": k.name,
                    "restarts": k.restarts,
                    "running": k.job is not None and not k.job.done(),
                }
                for k in self._kept.values()
            }

    def delays(self, key: str) -> list[float]:
        with self._lock:
            kept = self._kept.get(key)
        return list(kept.delays) if kept else []
