"""The engine behind one facade (architecture: process model). The desktop app talks to the engine
only through `EngineAPI`; `InProcessEngine` is the implementation that runs the engine in this
process (a remote one, for a service on another machine, implements the same calls over HTTP).

No Qt here. Slow calls return a `Job` at once and do their work on the engine's own threads, so the
GUI thread never waits on I/O; their results and the engine's events reach the caller through
callbacks on those threads, which the GUI's bridge (ui/bridge.py) turns into Qt signals.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Event = dict[str, Any]
_job_ids = itertools.count(1)
# The engine's threads run at a lower OS priority than the thread that created the engine (the
# GUI's): a batch run keeps both cores busy, and at equal priority the GUI thread waited up to
# ~50 ms for a core. Linux nice values are per thread and inherited by the threads a thread starts
# (the executor's reader, dispatcher and sink threads). 10: a weight of 110 against 1024.
ENGINE_NICE = 10
_COMPUTE_POOLS = ("polars-",)  # native pools started by whoever touched the library first


def lower_thread_priority(native_id: int | None = None, nice: int = ENGINE_NICE) -> bool:
    """Raise this thread's (or `native_id`'s) nice value to `nice`; False where not supported."""
    tid = threading.get_native_id() if native_id is None else native_id
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        return True
    except (AttributeError, OSError):  # not Linux, or not allowed: priorities stay as they are
        return False


def lower_compute_pools(nice: int = ENGINE_NICE) -> int:
    """Lower the native compute pools' threads (Polars' workers), which may have been started by
    the GUI thread at its priority; returns how many were lowered."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    lowered = 0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if name.startswith(_COMPUTE_POOLS) and lower_thread_priority(int(tid), nice):
            lowered += 1
    return lowered


class Job:
    """A background call: a future for its result, a cancel flag, and an id that its events carry."""

    def __init__(self, kind: str, future: concurrent.futures.Future, cancel: threading.Event):
        self.id = f"{kind}-{next(_job_ids)}"
        self.kind = kind
        self.future = future
        self.cancel_event = cancel

    def cancel(self) -> None:
        """Ask the work to stop at its next check (a preview or run stops between batches)."""
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None) -> Any:
        return self.future.result(timeout)

    def add_done_callback(self, callback: Callable[[Job], None]) -> None:
        self.future.add_done_callback(lambda _f: callback(self))


class EngineCore:
    """The engine's threads: one asyncio loop (network work, streams) and a small worker pool
    (blocking work: DuckDB, SQLite, Polars), plus event subscribers and the running jobs."""

    def __init__(self, data_dir: Path | str | None = None, workers: int = 4):
        from engine.workspace import Workspace

        self.workspace = Workspace(data_dir)
        self._subscribers: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="engine", initializer=lower_thread_priority
        )
        self._pools_lowered = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="engine-loop", daemon=True)
        self._thread.start()
        self.state = "ready"

    def _run_loop(self) -> None:
        lower_thread_priority()
        self._loop.run_forever()

    @property
    def data_dir(self) -> Path:
        return self.workspace.data_dir

    # ---- events ------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call `callback(event)` for every engine event (from engine threads); returns unsubscribe."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            with contextlib.suppress(Exception):  # a broken view must not break the engine
                callback(event)

    # ---- work --------------------------------------------------------------------------------
    def submit(self, kind: str, work: Callable[[threading.Event], Any]) -> Job:
        """Run `work(cancel_event)` on the worker pool as a Job; `job_started`/`job_finished`
        events frame it (the status bar's running-jobs indicator counts them)."""
        cancel = threading.Event()
        future: concurrent.futures.Future = concurrent.futures.Future()
        job = Job(kind, future, cancel)

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            if not self._pools_lowered:  # once: by now the pools exist (the engine imported Polars)
                self._pools_lowered = True
                lower_compute_pools()
            try:
                future.set_result(work(cancel))
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._jobs.pop(job.id, None)
                self.emit(
                    {"event": "job_finished", "job": job.id, "kind": kind, "running": self.running_jobs()}
                )

        with self._lock:
            self._jobs[job.id] = job
        self.emit({"event": "job_started", "job": job.id, "kind": kind, "running": self.running_jobs()})
        self._pool.submit(run)
        return job

    def call(self, work: Callable[[], Any]) -> concurrent.futures.Future:
        """A quick blocking call (a query, a file read) off the caller's thread, without a Job."""
        return self._pool.submit(work)

    def run_async(self, coro) -> concurrent.futures.Future:
        """Run a coroutine on the engine's asyncio loop."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def running_jobs(self) -> int:
        with self._lock:
            return len(self._jobs)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def close(self, timeout: float = 10.0) -> None:
        """Cancel every job, wait for them briefly, stop the loop, close the stores."""
        self.state = "stopping"
        for job in self.jobs():
            job.cancel()
        concurrent.futures.wait([j.future for j in self.jobs()], timeout=timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)  # a query still running holds the stores
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self.workspace.close()
        self.state = "stopped"
