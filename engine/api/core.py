"""The engine's core behind the one front door (architecture: one front door). Every client talks
to the engine only through `EngineAPI` (engine/api/protocol.py); `LocalEngine` (engine/api/local.py)
is the implementation that runs the engine in this process, its sub-APIs sharing this core (a
remote one, for a service on another machine, implements the same calls over HTTP).

No Qt here. Slow calls return a `Job` at once and do their work on the engine's own threads, so the
GUI thread never waits on I/O; their results and the engine's events reach the caller through
callbacks on those threads, which the GUI's bridge (ui/bridge.py) turns into Qt signals.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar

from engine.api.events import EngineEvent, JobFinished, JobStarted, as_event

Event = dict[str, Any]  # an event as emitters below the API build it (the wire shape of events.py)
T = TypeVar("T")
P = ParamSpec("P")
_job_ids = itertools.count(1)
# The engine's threads run at a lower OS priority than the thread that created the engine (the
# GUI's): a batch run keeps both cores busy, and at equal priority the GUI thread waited up to
# ~50 ms for a core. Linux nice values are per thread and inherited by the threads a thread starts
# (the executor's reader, dispatcher and sink threads). 10: a weight of 110 against 1024.
ENGINE_NICE = 10
# Native pools, started by whichever thread touched the library first (at that thread's priority):
# Polars' workers, its streaming engine's executors, its I/O runtime and its allocator's purgers.
_COMPUTE_POOLS = ("polars-", "async-executor", "tokio-rt-worker", "jemalloc_bg_thd")
POOL_SWEEP_S = 1.0  # how often the engine loop lowers pool threads started since the last sweep
# What a first preview or run imports: loaded by `warm_up` before the user asks. An import holds the
# GIL from start to end (compiling the source, where no bytecode is cached, takes 10-30 ms a module),
# so a first run that imported them itself held the GUI thread up for 30-60 ms.
WARM_MODULES = (
    "engine.spec.validate",
    "engine.runner",
    "engine.executor",
    "engine.transforms.catalog",
    "engine.connectors.registry",
    "engine.connectors.file",
    "engine.connectors.duckdb_connector",
    "engine.connectors.historian_connector",
    "engine.connectors.formats",
    "engine.connectors.formats.csv",  # the formats load on first use since e7589f9: warm the usual two
    "engine.connectors.formats.parquet",
    "engine.streaming.runner",
    "engine.streaming.flow",
)


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
    """Lower the native compute pools' threads, which may have been started by the GUI thread at its
    priority; returns how many were lowered (threads already as low are not counted)."""
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
        if not name.startswith(_COMPUTE_POOLS):
            continue
        try:
            if os.getpriority(os.PRIO_PROCESS, int(tid)) >= nice:
                continue
        except OSError:
            continue
        if lower_thread_priority(int(tid), nice):
            lowered += 1
    return lowered


class Job(Generic[T]):
    """A background call: a future for its result, a cancel flag, and an id that its events carry.
    `Job[T]`: `result()` gives a T."""

    def __init__(self, kind: str, future: concurrent.futures.Future[T], cancel: threading.Event):
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

    def result(self, timeout: float | None = None) -> T:
        return self.future.result(timeout)

    def add_done_callback(self, callback: Callable[[Job[T]], None]) -> None:
        self.future.add_done_callback(lambda _f: callback(self))


class EngineCore:
    """The engine's threads: a small worker pool (blocking work: DuckDB, SQLite, Polars), an asyncio
    loop started by the first `run_async` (network work), a thread that lowers the compute pools'
    priority when `nice` is set, plus event subscribers and the running jobs."""

    def __init__(self, data_dir: Path | str | None = None, workers: int = 4, nice: int = ENGINE_NICE):
        """`nice`: the engine's threads' nice value, to keep a window (or an API) answering while
        runs keep both cores busy; 0 where nothing waits on the process but its own run (the CLI)."""
        from engine.workspace import Workspace

        self.workspace = Workspace(data_dir)
        self._nice = nice
        self._subscribers: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="engine", initializer=self._lower_this_thread
        )
        # The asyncio loop starts with the first coroutine (run_async): a batch run has none, and
        # importing asyncio (with ssl) and idling a loop thread cost every `aggregator run` ~25 ms.
        self._loop: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None
        if nice:
            self._sweeper = threading.Thread(target=self._sweep_pools, name="engine-nice", daemon=True)
            self._sweeper.start()
        self.state = "ready"

    def _lower_this_thread(self) -> None:
        if self._nice:
            lower_thread_priority(nice=self._nice)

    def _run_loop(self) -> None:
        self._lower_this_thread()
        self._loop.run_forever()

    def _sweep_pools(self) -> None:
        """Lower the compute pools' new threads, now and every POOL_SWEEP_S (Polars starts its
        streaming executors and I/O runtime lazily, on the first query that needs them)."""
        self._lower_this_thread()
        while True:
            lower_compute_pools(self._nice)
            if self._stopping.wait(POOL_SWEEP_S):
                return

    @property
    def data_dir(self) -> Path:
        return self.workspace.data_dir

    # ---- events ------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[EngineEvent], None]) -> Callable[[], None]:
        """Call `callback(record)` for every engine event (a typed record of engine/api/events.py,
        on an engine thread); returns unsubscribe."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: EngineEvent | Event) -> None:
        """Publish an event: a record, or a wire dict as the runner and executor build them (made
        a record here, once, so that every subscriber gets the same typed record)."""
        try:
            event = as_event(event)
        except ValueError:  # an emitter's malformed event: dropped rather than breaking a run
            return
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
            if self._nice:
                lower_compute_pools(self._nice)  # before the work: pools started since the last sweep
            try:
                future.set_result(work(cancel))
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._jobs.pop(job.id, None)
                self.emit(JobFinished(job=job.id, job_kind=kind, running=self.running_jobs()))

        with self._lock:
            self._jobs[job.id] = job
        self.emit(JobStarted(job=job.id, job_kind=kind, running=self.running_jobs()))
        self._pool.submit(run)
        return job

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        """`fn(*args, **kwargs)`: a quick blocking call (a query, a file read) on the engine's pool,
        off the caller's thread, without a Job."""
        return self._pool.submit(fn, *args, **kwargs)

    def run_async(self, coro) -> concurrent.futures.Future:
        """Run a coroutine on the engine's asyncio loop (started by the first call)."""
        import asyncio

        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._run_loop, name="engine-loop", daemon=True)
                self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def warm_up(self) -> concurrent.futures.Future:
        """Import what a first preview or run needs, on an engine thread, one module at a time
        (the GUI calls this once its window is painted). The future's result: the seconds it took
        (0.0 when the engine is already stopping)."""
        if self.state != "ready":
            done: concurrent.futures.Future = concurrent.futures.Future()
            done.set_result(0.0)
            return done

        def work() -> float:
            started = time.perf_counter()
            for name in WARM_MODULES:
                with contextlib.suppress(ImportError):
                    importlib.import_module(name)
                time.sleep(0.005)  # between modules the GIL goes back to whoever waits for it
            return time.perf_counter() - started

        return self._pool.submit(work)

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
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout)
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        self.workspace.close()
        self.state = "stopped"
