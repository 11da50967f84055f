"""Runs a compiled pipeline as a push-based DAG of columnar batches.

Sources are read concurrently, each in its own thread, and push Polars DataFrame batches into one
dispatch queue. The dispatcher (the calling thread) pushes each batch through the row-local
transformations at once, buffers the input of blocking ones (aggregation, join, sort, ...) until
every input is finished, and hands results to the destinations, each of which writes in its own
thread behind a small bounded queue. Reading, transforming and writing therefore overlap, memory
stays bounded for row-local chains, and every node's rows and time are counted exactly.

Destinations commit only when every node succeeded; otherwise all of them abort, so a failed or
cancelled run leaves no partial file and no half-written table. A run with several destinations
commits all of them or none: each finishes its writing first (a complete, synced temporary file; a
finished INSERT in an open transaction), then one short phase commits them, files first, because a
file's rename can be taken back (`publish` / `unpublish`), then the transactions (the reject store
first). A failure in that phase takes back what was renamed; only a transaction that had already
committed stays, and then the run fails with a `PartialCommitError` naming what was committed.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.connectors.base import Sink, Source
from engine.connectors.file import FileSink, FileSinkConfig
from engine.context import NodeContext, RunContext
from engine.errors import AggregatorError, ConnectorError, RunCancelled, TransformError, error_line
from engine.lazy import lazy_module
from engine.spec.models import parse_input
from engine.spec.plan import Plan
from engine.store.historian import RejectWriter
from engine.tags import as_frame
from engine.transforms.base import OUT, REJECT_REASON, REJECTED

pl = lazy_module("polars")

QUEUE_DEPTH = 1
READER_GRACE_S = 2.0
REJECTS_NODE = "_rejects"  # the reject store's name among the run's destinations
_log = logging.getLogger(__name__)


class PartialCommitError(AggregatorError):
    """The commit phase failed after a destination had committed for good: the run's outputs are
    partly written. Never retried (a retry would write the committed part twice)."""

    def __init__(self, committed: list[str], failed: str, reason: str):
        self.committed, self.failed = committed, failed
        super().__init__(
            f"partial commit: {', '.join(committed)} committed, {failed} did not ({reason}); the other"
            " destinations were left as they were"
        )


@dataclass
class NodeStats:
    kind: str
    status: str = "pending"
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    duration_s: float = 0.0
    committed: bool | None = None  # destinations: did their commit happen (None: not tried)

    def public(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_rejected": self.rows_rejected,
            "duration_s": round(self.duration_s, 6),
        }


@dataclass
class ExecutionResult:
    stats: dict[str, NodeStats]
    rows_in: int
    rows_out: int
    rows_rejected: int
    targets: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, str], pl.DataFrame] = field(default_factory=dict)


class _Task:
    """One reader's or writer's work on a thread of `_Threads`: `join`/`is_alive` as a Thread's."""

    def __init__(self, target: Callable[[], None], name: str):
        self.target: Callable[[], None] | None = target
        self.name = name
        self.started = False
        self.done = threading.Event()

    def is_alive(self) -> bool:
        return self.started and not self.done.is_set()

    def join(self, timeout: float | None = None) -> None:
        if self.started:
            self.done.wait(timeout)


class _Threads:
    """The executor's reader and writer threads, kept for reuse. Each task still gets a thread of
    its own at once (a new one when none is idle: no bound, so a reader stuck in a read never holds
    up another run); a thread idle for `IDLE_S` ends. Starting an OS thread cost a tiny run ~0.4 ms
    of CPU per thread (two or three a run), and `Thread.start` waits until the new thread has been
    scheduled: on a loaded machine, milliseconds before the run could go on."""

    IDLE_S = 30.0
    IDLE_NAME = "executor-idle"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue] = []  # the inboxes of the idle threads
        if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._idle = []

    def start(self, task: _Task) -> _Task:
        task.started = True
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            inbox.put(task)
            threading.Thread(target=self._loop, args=(inbox,), name=task.name, daemon=True).start()
        else:
            inbox.put(task)
        return task

    def _loop(self, inbox: queue.SimpleQueue) -> None:
        me = threading.current_thread()
        while True:
            try:
                task = inbox.get(timeout=self.IDLE_S)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # still idle: end (else a task is on its way: take it)
                        self._idle.remove(inbox)
                        return
                continue
            me.name = task.name
            target, task.target = task.target, None  # the task keeps no reference to the run
            try:
                if target is not None:
                    target()
            except BaseException:  # the targets catch their own; never lose the thread to one
                _log.exception("executor thread %s", task.name)
            finally:
                del target
                me.name = self.IDLE_NAME
                with self._lock:
                    self._idle.append(inbox)
                task.done.set()
                del task


_threads = _Threads()


class _SinkWorker:
    """Writes one destination's batches in its own thread, behind a bounded queue."""

    _END = object()

    def __init__(self, sink: Sink | RejectWriter, stats: NodeStats):
        self.sink, self.stats = sink, stats
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = _Task(self._run, f"sink-{sink.name}")

    def start(self) -> None:
        t0 = time.perf_counter()
        self.sink.open()
        self.stats.duration_s += time.perf_counter() - t0
        _threads.start(self.thread)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is self._END:
                if self.error is None:
                    try:
                        t0 = time.perf_counter()
                        self.sink.flush()
                        self.stats.duration_s += time.perf_counter() - t0
                    except BaseException as exc:
                        self.error = exc
                return
            if self.error is not None:
                continue  # drain so the producer never blocks
            try:
                t0 = time.perf_counter()
                self.sink.write(item)
                self.stats.duration_s += time.perf_counter() - t0
            except BaseException as exc:
                self.error = exc

    def put(self, batch: Any) -> None:  # a DataFrame; (node id, DataFrame) for the reject store
        if self.error is not None:
            raise self.error
        self.queue.put(batch)

    def finish(self) -> None:
        self.queue.put(self._END)
        self.thread.join()
        if self.error is not None:
            raise self.error


class GraphFlow:
    """Pushes batches through a compiled graph: row-local nodes at once, blocking nodes once all
    their inputs are closed, results handed to `_deliver` (destinations) and `_queue_rejects`.

    Shared by the batch `Executor` (a run is one pass) and the streaming runner (each micro-batch
    is a pass of its own: `reset_inputs()` reopens every input, so blocking nodes see one
    micro-batch at a time)."""

    def __init__(
        self,
        plan: Plan,
        ctx: RunContext,
        *,
        preview_limit: int | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.c = plan  # checked once by engine.spec.validate; nothing here validates again
        self.ctx = ctx
        self.preview_limit = preview_limit  # keep the first N rows of every node/port
        self.on_event = on_event or (lambda event: None)
        self.nodes = {n.id: n for n in plan.graph.nodes}
        self.stats = {n.id: NodeStats(n.kind) for n in plan.graph.nodes}
        self.consumers = plan.consumers()
        self.samples: dict[tuple[str, str], pl.DataFrame] = {}
        self._buffers: dict[str, dict[int, list[pl.DataFrame]]] = {}
        self._port_rows: dict[tuple[str, str], int] = {}
        self.reset_inputs()

    def reset_inputs(self) -> None:
        self._open_inputs = {n.id: len(n.inputs) for n in self.c.graph.nodes}

    def _deliver(self, nid: str, batch: pl.DataFrame) -> None:
        """A batch for destination `nid`."""
        raise NotImplementedError

    def _queue_rejects(self, nid: str, rejected: pl.DataFrame) -> None:
        """Rejected rows of `nid` for the reject store, committed with the outputs."""
        raise NotImplementedError

    # ---- building ----------------------------------------------------------------------------
    def _resolved(self, nid: str):
        """The node's connector and its typed config from the Plan, with the secrets' values."""
        return self.c.connector(nid), self.c.config(nid, self.ctx.secret)

    def _make_source(self, nid: str) -> Source:
        cls, config = self._resolved(nid)
        return cls.make_source(config, self.ctx, nid)

    def _make_sink(self, nid: str) -> Sink:
        cls, config = self._resolved(nid)
        return cls.make_sink(config, self.ctx, nid)

    # A batch travels down the graph in a one-item list ("box") that each step empties: no caller
    # keeps a reference, so every intermediate frame is freed once the next node has its output
    # (a chain of five nodes held all five copies of a batch while its destination was busy).
    def _emit(self, nid: str, port: str, box: list[pl.DataFrame], origin: str | None) -> None:
        batch = box.pop()
        self._sample(nid, port, batch)
        self._port_rows[(nid, port)] = self._port_rows.get((nid, port), 0) + batch.height
        targets = [(c, idx) for c, consumer_port, idx in self.consumers.get(nid, []) if consumer_port == port]
        for n, (consumer, idx) in enumerate(targets):
            if n < len(targets) - 1:
                self._push(consumer, idx, [batch], origin)
            else:
                box = [batch]
                del batch
                self._push(consumer, idx, box, origin)

    def _push(self, nid: str, idx: int, box: list[pl.DataFrame], origin: str | None) -> None:
        batch = box.pop()
        node = self.nodes[nid]
        stats = self.stats[nid]
        stats.rows_in += batch.height
        stats.status = "running"
        if node.kind == "destination":
            self._deliver(nid, batch)  # a stream's `TagBatch` as it is (engine/streaming/sinks.py)
            return
        batch = as_frame(batch)
        transform = self.c.transforms[nid]
        if transform.streaming and len(node.inputs) == 1:
            frames = [batch]
            del batch
            if frames[0].width == 0:
                self._emit(nid, OUT, frames, origin)
                return
            self._apply(nid, frames, origin)
        else:
            self._buffers.setdefault(nid, {}).setdefault(idx, []).append(batch)

    def _close_outputs(self, nid: str) -> None:
        """`nid` will send nothing more: finish consumers whose inputs are now all closed."""
        for consumer, _port, _idx in self.consumers.get(nid, []):
            self._open_inputs[consumer] -= 1
            if self._open_inputs[consumer] > 0:
                continue
            node = self.nodes[consumer]
            if node.kind == "transform":
                transform = self.c.transforms[consumer]
                if not (transform.streaming and len(node.inputs) == 1):
                    buffers = self._buffers.pop(consumer, {})
                    frames = [_concat(buffers.get(i, [])) for i in range(len(node.inputs))]
                    if all(f.width == 0 for f in frames):  # no data and no columns at all (empty files)
                        self._emit(consumer, OUT, [pl.DataFrame()], None)
                    else:
                        self._apply(consumer, frames, None)
                self.stats[consumer].status = "success"
                self._close_outputs(consumer)

    def _apply(self, nid: str, frames: list[pl.DataFrame], origin: str | None) -> None:
        transform = self.c.transforms[nid]
        stats = self.stats[nid]
        t0 = time.perf_counter()
        try:
            lazy = transform.apply([f.lazy() for f in frames], NodeContext(self.ctx, nid, origin))
            ports = list(lazy)
            results = dict(zip(ports, pl.collect_all([lazy[p] for p in ports]), strict=True))
            frames.clear()  # the inputs go as soon as the outputs exist
            del lazy
        except AggregatorError as exc:  # raised inside a Polars UDF, it carries Polars' appendix lines
            stats.status = "failed"
            message = str(exc).strip().splitlines()[0]
            raise TransformError(message.removeprefix(f"node '{nid}': "), node=nid) from None
        except (pl.exceptions.PolarsError, ValueError, TypeError, ArithmeticError) as exc:
            stats.status = "failed"
            raise TransformError(str(exc).strip().splitlines()[0], node=nid) from None
        stats.duration_s += time.perf_counter() - t0
        rejected = results.get(REJECTED)
        if rejected is not None and rejected.height:
            stats.rows_rejected += rejected.height
            if transform.fails_on_reject:
                reason = (
                    rejected.get_column(REJECT_REASON)[0] if REJECT_REASON in rejected.columns else "invalid"
                )
                stats.status = "failed"
                raise TransformError(
                    f"{rejected.height} record(s) failed validation, first: {reason}", node=nid
                )
            self._store_rejects(nid, rejected)
        stats.rows_out += sum(frame.height for port, frame in results.items() if port != REJECTED)
        del rejected
        self._progress(nid)
        for port in list(results):
            self._emit(nid, port, [results.pop(port)], origin)

    def _progress(self, nid: str) -> None:
        """Per-node progress for live views (the editor's run overlay, the service's API)."""
        stats = self.stats[nid]
        self.on_event(
            {
                "event": "node_progress",
                "run_id": self.ctx.run_id,
                "node": nid,
                "status": stats.status,
                **stats.public(),
            }
        )

    def _store_rejects(self, nid: str, rejected: pl.DataFrame) -> None:
        """Rejected rows go one way, whatever `dead_letter_queue.storage` says: to `_queue_rejects`,
        committed with the run's outputs (batch) or the micro-batch (streaming) by the reject sink
        (the historian's `_rejects` table, or the dead-letter file: `DeadLetterFile` /
        `DeadLetterAppender`). Never written before the commit, so a retried attempt or a failed
        micro-batch does not store them twice."""
        dlq = self.c.graph.error_handling.dead_letter_queue
        if self.ctx.dry_run or not dlq.enabled or self.ctx.historian is None:
            return
        self._queue_rejects(nid, rejected)

    def _sample(self, nid: str, port: str, batch: pl.DataFrame) -> None:
        if self.preview_limit is None:
            return
        batch = as_frame(batch)
        key = (nid, port)
        have = self.samples.get(key)
        if have is None:
            self.samples[key] = batch.head(self.preview_limit)
        elif have.height < self.preview_limit:
            self.samples[key] = _concat([have, batch.head(self.preview_limit - have.height)])


class Executor(GraphFlow):
    def __init__(
        self,
        plan: Plan,
        ctx: RunContext,
        *,
        sample_rows: int | None = None,
        preview_limit: int | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ):
        super().__init__(plan, ctx, preview_limit=preview_limit, on_event=on_event)
        self.sample_rows = sample_rows  # read at most this many rows per source (preview)
        self._sinks: dict[str, _SinkWorker] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self._stop = threading.Event()  # internal: tells source threads to quit early
        self._reject_worker: _SinkWorker | None = None  # the reject store, written like a destination

    def _deliver(self, nid: str, batch: pl.DataFrame) -> None:
        if self.ctx.dry_run:
            self._sample(nid, OUT, batch)
        else:
            self._sinks[nid].put(batch)

    def _queue_rejects(self, nid: str, rejected: pl.DataFrame) -> None:
        if self._reject_worker is None and not self.ctx.dry_run:
            self._open_reject_store()  # on the first rejected rows: a run without any opens nothing
        if self._reject_worker is not None:  # committed with the run's outputs, never before
            self._reject_worker.put((nid, rejected))

    # ---- public ------------------------------------------------------------------------------
    def execute(self) -> ExecutionResult:
        sources = {nid: self._make_source(nid) for nid in self.c.order if self.nodes[nid].kind == "source"}
        try:
            if not self.ctx.dry_run:
                for nid in self.c.order:
                    if self.nodes[nid].kind == "destination":
                        worker = _SinkWorker(self._make_sink(nid), self.stats[nid])
                        self._sinks[nid] = worker
                        worker.start()
            self._run_sources(sources)
            # Stage: every destination finishes its writing; nothing is visible yet.
            for nid, worker in self._sinks.items():
                worker.finish()
                self.stats[nid].status = "writing"
            if self._reject_worker is not None:
                self._reject_worker.finish()
            if not self.ctx.dry_run:
                self._commit_all()
        except BaseException:
            self._abort_all()
            raise
        if not self.ctx.dry_run:  # after every destination committed: e.g. SQL incremental marks
            for nid, source in sources.items():
                if hasattr(source, "committed"):
                    try:
                        source.committed()
                    except Exception as exc:  # the data is committed; the next run re-reads some rows
                        self.ctx.log("error", f"cannot record what was read: {exc}", nid)
        return self.result()

    def _commit_all(self) -> None:
        """One short phase: renames first (they can be taken back), then the transactions, the
        reject store first. See the module's docstring for what a failure here leaves."""
        if self.ctx.cancel.is_set():
            raise RunCancelled("run cancelled")
        self.on_event({"event": "committing", "run_id": self.ctx.run_id})
        plan: list[tuple[str, Any]] = [(nid, worker.sink) for nid, worker in self._sinks.items()]
        if self._reject_worker is not None:
            plan.insert(0, (REJECTS_NODE, self._reject_worker.sink))
        renames = [(nid, sink) for nid, sink in plan if hasattr(sink, "publish")]
        transactions = [(nid, sink) for nid, sink in plan if not hasattr(sink, "publish")]
        published: list[tuple[str, Any]] = []
        final: list[str] = []  # committed for good
        current = ""
        try:
            for nid, sink in renames:
                current = nid
                self._timed(nid, sink.publish)
                published.append((nid, sink))
            for nid, sink in transactions:
                current = nid
                self._timed(nid, sink.close)
                if nid != REJECTS_NODE or sink.rows:  # an empty reject store committed nothing
                    final.append(nid)
                self._committed(nid)
        except BaseException as exc:
            for nid, sink in reversed(published):
                try:
                    sink.unpublish()
                except Exception as undo:  # cannot put the old file back: that one stays committed
                    self.ctx.log("error", f"cannot take the commit back: {undo}", nid)
                    final.append(nid)
                    self._committed(nid)
            if final:
                reason = error_line(exc)
                self.ctx.log("error", f"partial commit: {', '.join(final)} committed", current)
                for nid, _sink in plan:
                    if nid in self.stats and nid not in final:
                        self.stats[nid].committed = False
                raise PartialCommitError(final, current, reason) from None
            raise
        for nid, sink in published:
            sink.finalize()
            self._committed(nid)
        self._reject_worker = None

    def _timed(self, nid: str, action: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        action()
        if nid in self.stats:
            self.stats[nid].duration_s += time.perf_counter() - t0

    def _committed(self, nid: str) -> None:
        if nid in self.stats:
            stats = self.stats[nid]
            stats.rows_out = stats.rows_in  # committed = written
            stats.status, stats.committed = "success", True

    def _open_reject_store(self) -> None:
        """Rejected records go to the historian's `_rejects` table, or to the NDJSON file that
        `dead_letter_queue.storage` names; either is written like a destination and committed with
        the run's outputs, so a retried attempt never stores them twice. Opened when the first
        rejected rows come (a DuckDB cursor and a thread: ~0.5 ms of CPU that a run without
        rejects, most scheduled runs, does not pay)."""
        dlq = self.c.graph.error_handling.dead_letter_queue
        if not dlq.enabled or self.ctx.historian is None:
            return
        if dlq.storage == "reject_store":
            writer: RejectWriter | DeadLetterFile = RejectWriter(
                self.ctx.historian, run_id=self.ctx.run_id, pipeline=self.ctx.pipeline
            )
        else:
            writer = DeadLetterFile(self.ctx, dlq.storage)
        self._reject_worker = _SinkWorker(writer, NodeStats("rejects"))
        self._reject_worker.start()

    # ---- running -----------------------------------------------------------------------------
    def _run_sources(self, sources: dict[str, Source]) -> None:
        threads = []
        for nid, source in sources.items():
            self.stats[nid].status = "running"
            threads.append(
                _threads.start(_Task(lambda nid=nid, source=source: self._read(nid, source), f"source-{nid}"))
            )
        remaining = len(threads)
        try:
            while remaining:
                kind, nid, payload = self._get()
                if kind == "batch":
                    self._progress(nid)
                    box = [payload]
                    del payload  # the chain below frees each batch as soon as it has passed on
                    self._emit(nid, OUT, box, origin=nid)
                elif kind == "done":
                    remaining -= 1
                    self.stats[nid].status = "success"
                    self._close_outputs(nid)
                else:
                    self.stats[nid].status = "failed"
                    raise payload
        finally:
            self._stop.set()  # readers stop at their next batch; a reader busy inside one is not waited for
            deadline = time.monotonic() + READER_GRACE_S
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))

    def _get(self) -> tuple[str, str, Any]:
        while True:
            if self.ctx.cancel.is_set():
                raise RunCancelled("run cancelled")
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                continue

    def _read(self, nid: str, source: Source) -> None:
        stats = self.stats[nid]
        try:
            sent = False
            t0 = time.perf_counter()
            for batch in source.read(limit=self.sample_rows):
                stats.duration_s += time.perf_counter() - t0
                if self._stop.is_set() or self.ctx.cancel.is_set():
                    return
                stats.rows_out += batch.height
                if not self._put(("batch", nid, batch)):
                    return
                sent = True
                t0 = time.perf_counter()
            if not sent:
                schema = source.schema() or {}
                self._put(("batch", nid, pl.DataFrame(schema=schema)))
            self._put(("done", nid, None))
        except BaseException as exc:
            if not isinstance(exc, AggregatorError):
                exc = ConnectorError(f"source '{nid}': {type(exc).__name__}: {exc}")
            self._put(("error", nid, exc))

    def _put(self, item: tuple[str, str, Any]) -> bool:
        """Hand an item to the dispatcher; give up (False) once the run is stopping."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _abort_all(self) -> None:
        workers = list(self._sinks.items())
        if self._reject_worker is not None:
            workers.append(("_rejects", self._reject_worker))
        for nid, worker in workers:
            try:
                if worker.thread.is_alive():
                    worker.queue.put(_SinkWorker._END)
                    worker.thread.join(5)
                worker.sink.abort()
            except Exception as exc:  # abort must try every sink
                self.ctx.log("error", f"abort failed: {exc}", nid)
            if nid in self.stats and self.stats[nid].committed:
                continue  # committed for good before the run failed (a partial commit)
            if nid in self.stats and self.stats[nid].status != "failed":
                self.stats[nid].status = "aborted"

    def result(self, *, committed: bool = True) -> ExecutionResult:
        """The run's counts; a run that did not commit delivered nothing (rows_out 0, no targets),
        except to the destinations a partial commit did commit."""
        rows_in = sum(s.rows_out for nid, s in self.stats.items() if self.nodes[nid].kind == "source")
        dests = [n for n in self.c.graph.nodes if n.kind == "destination"]
        if not committed:
            dests = [n for n in dests if self.stats[n.id].committed]
        # Rows that left the pipeline: each output feeding a destination counts once, however many
        # destinations it feeds; outputs of `rejected` ports are counted as rejected, not out.
        fed = {parse_input(r) for n in dests for r in n.inputs}
        rows_out = sum(self._port_rows.get(edge, 0) for edge in fed if edge[1] != REJECTED)
        rejected = sum(s.rows_rejected for s in self.stats.values())
        ids = {n.id for n in dests}
        targets = {nid: w.sink.describe_target() for nid, w in self._sinks.items() if nid in ids}
        return ExecutionResult(self.stats, rows_in, rows_out, rejected, targets, self.samples)


def dead_letter_rows(rejected: pl.DataFrame, run_id: str, nid: str) -> pl.DataFrame:
    """Rejected records as a dead-letter file keeps them: with `_run_id` and `_node_id`."""
    return rejected.with_columns(pl.lit(run_id).alias("_run_id"), pl.lit(nid).alias("_node_id"))


class DeadLetterFile(FileSink):
    """`dead_letter_queue.storage` as a file: rejected records appended to an NDJSON file (each with
    `_run_id` and `_node_id`) by the file destination, so they are committed (renamed) with the
    run's outputs and taken back with them. A file destination that takes the pair (node id,
    frame) that the reject store takes."""

    def __init__(self, ctx: RunContext, path: str):
        config = FileSinkConfig.model_validate({"path": path, "format": "ndjson", "mode": "append"})
        super().__init__(config, ctx, name="dead-letter file")

    def write(self, item: tuple[str, pl.DataFrame]) -> None:  # type: ignore[override]
        nid, rejected = item
        super().write(dead_letter_rows(rejected, self.ctx.run_id, nid))


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [f for f in frames if f.width]
    if not frames:
        return pl.DataFrame()
    if len(frames) == 1:
        return frames[0]
    return pl.concat(frames, how="diagonal_relaxed")
