"""Runs a real-time pipeline continuously: sources -> bounded queues -> micro-batches -> commits.

One thread (the dispatcher) cuts micro-batches, pushes them through the graph with the batch
executor's code (`MicroBatchFlow`) and commits each destination once per micro-batch. Streaming
sources run on threads of their own and hand batches to `BatchQueue.put` (their `emit`), which
pushes back when the dispatcher falls behind and drops the oldest rows, counted and alarmed, when
it stays behind. A destination that fails is retried with the pipeline's retry policy while the
queues keep filling within their bounds; when retries run out the run fails.

The rule for sources lives here, once (see engine/connectors/base.py): `emit` is wrapped so that
a batch that is not a frame of the source's schema is rejected with its reason (reject store),
counted and logged, and nothing a source hands over can raise back into its thread. A source whose
session turns `failed` (its thread died) is logged as an error and ends the run `failed`; when
every source has failed the run ends at once, since nothing more can come.

Ack after commit (message queues): a source whose `emit` has `takes_ack` may hand an opaque token
with a batch (`emit(batch, ack=token)`); the token rides with the batch's last rows through the
queue, and `source.acknowledge(tokens)` is called once the micro-batch holding those rows is
committed by every destination (and its rejects are stored), so a crash before that re-delivers
instead of losing. A token with no rows (every message of it was rejected) is acknowledged once
the rejects are stored. Records a source cannot decode reach the reject store through
`source.on_reject` (`StreamingSource.reject`). Sources that emit no tokens are unaffected. A node
that holds rows across micro-batches (a streaming resample's open bucket) has them acked with the
micro-batch that took them in; a batch dropped on queue overflow is never acked (re-delivered).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from engine.connectors.base import UP_STATES, StreamingSource, one_line_error
from engine.context import RunContext
from engine.errors import AggregatorError, RunCancelled, SpecError, error_line
from engine.lazy import lazy_module
from engine.runs.retry import retry_delays, retryable
from engine.spec.plan import Plan
from engine.store.historian import RejectWriter
from engine.streaming.buffer import BatchQueue
from engine.streaming.checks import check_streaming
from engine.streaming.flow import MicroBatchFlow
from engine.streaming.latency import LatencyWindow, received_us, sample_step
from engine.streaming.settings import StreamSettings
from engine.streaming.sinks import DeadLetterAppender, MicroBatchSink, make_committer
from engine.tags import TAG_COLUMNS, TagBatch, concat_batches, has_value
from engine.transforms.base import REJECT_REASON

pl = lazy_module("polars")

ALARM_LOG_INTERVAL_S = 1.0  # drop warnings are summed per source and logged at most this often


class StreamRunner:
    def __init__(
        self,
        plan: Plan,
        ctx: RunContext,
        *,
        settings: StreamSettings | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.c, self.ctx = plan, ctx  # checked once by engine.spec.validate
        self.settings = settings or StreamSettings.from_schedule(plan.graph.schedule)
        self.on_event = on_event or (lambda event: None)
        self.flow = MicroBatchFlow(plan, ctx, on_event=self.on_event)
        self._dead_letters: DeadLetterAppender | None = None  # dead_letter_queue.storage as a file
        self.node_stats = self.flow.stats
        self.sources: dict[str, StreamingSource] = {}
        self.queues: dict[str, BatchQueue] = {}
        self.sinks: dict[str, MicroBatchSink] = {}
        self.sink_stats: dict[str, dict[str, int]] = {}
        self.latency = LatencyWindow()
        self.micro_batches = 0
        self.rows_committed = 0  # rows that left the pipeline (per micro-batch, counted once)
        self.status = "pending"
        self.error: str | None = None
        self.failure: BaseException | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._alarm_lock = threading.Lock()
        self._unlogged_drops: dict[str, int] = {}
        self._last_alarm_log: dict[str, float] = {}
        # Per source: was the link ever up, and the last state and detail before the stop.
        self.links: dict[str, dict[str, Any]] = {}
        self.valued: set[str] = set()  # sources that delivered at least one value (not a bad record)
        self.failed_sources: dict[str, str] = {}  # source -> why its session failed
        self._source_rejects: list[tuple[str, pl.DataFrame]] = []  # bad batches, for the next commit
        self._source_lock = threading.Lock()
        self._reject_acks: list[tuple[str, Any]] = []  # tokens of batches that were rejects only

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Build everything, start the sources and the dispatcher; raise if anything cannot start."""
        self._started = time.monotonic()
        try:
            if not self.c.capabilities.real_time:  # a real_time Plan was checked for this already
                issues = check_streaming(self.c, self.ctx)
                if issues:
                    raise SpecError(issues)
            for nid in self.c.order:
                node = self.flow.nodes[nid]
                if node.kind == "destination":
                    cls, config = self.flow._resolved(nid)
                    self.sinks[nid] = make_committer(
                        cls.connector_type, config, self.ctx, nid, lambda n=nid: self.flow._make_sink(n)
                    )
                    self.sink_stats[nid] = {"commits": 0, "rows": 0, "retries": 0, "dropped": 0}
                elif node.kind == "source":
                    self.queues[nid] = self._queue(nid)
                    self.sources[nid] = self.flow._make_source(nid)  # type: ignore[assignment]
            self.status = "running"
            self._thread = threading.Thread(target=self._run, name="stream-dispatcher", daemon=True)
            self._thread.start()
            for nid, source in self.sources.items():
                source.on_state = self._on_state
                source.on_reject = lambda rows, n=nid: self._source_reject(n, rows)
                self.node_stats[nid].status = "running"
                source.start(self._emitter(nid, source))
        except BaseException as exc:
            self._fail(exc)
            self.stop()
            raise

    def stop(self, timeout: float | None = None) -> None:
        """Graceful: stop the sources, cut and commit what they delivered, end the run."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end by itself (it fails, or it is cancelled); True once it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _queue(self, nid: str) -> BatchQueue:
        s = self.settings
        return BatchQueue(
            nid,
            max_rows=s.max_rows,
            max_bytes=s.queue_max_bytes,
            block_timeout_s=s.block_timeout_s,
            on_arrival=self._wake.set,
            on_drop=self._alarm_drop,
        )

    # ---- the dispatcher ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                if self.ctx.cancel.is_set():
                    raise RunCancelled("run cancelled")
                self._wake.wait(self._next_wait())
                self._wake.clear()
                self._cycle(force=False)
                self._commit_source_rejects()
                if self.sources and len(self.failed_sources) == len(self.sources):
                    break  # every source is dead: nothing more can come
            self._shutdown(cancelled=False)
        except RunCancelled:
            self._shutdown(cancelled=True)
        except BaseException as exc:
            self._fail(exc)
            self._stop_sources()
            for q in self.queues.values():
                q.discard("run failed")
        finally:
            self._close_sinks()
            self._log_pending_alarms()
            final = "success" if self.status == "warning" else self.status
            for stats in self.node_stats.values():
                if stats.status in ("running", "success", "pending"):
                    stats.status = final

    def _shutdown(self, *, cancelled: bool) -> None:
        try:
            self._stop_sources(drain=True)
            while any(q.rows for q in self.queues.values()):  # flush everything the sources gave
                self._cycle(force=True)
            self._commit_source_rejects()
            self._final_pass()
        except BaseException as exc:
            if not (cancelled or self.ctx.cancel.is_set()):
                self._fail(exc)
            for q in self.queues.values():
                q.discard("cancelled" if self.status != "failed" else "run failed")
        if self.status == "failed":
            return
        if self.failed_sources:  # a dead source must not look like a finished one
            self.status = "failed"
            self.error = "; ".join(f"source '{n}' failed: {why}" for n, why in self.failed_sources.items())
            for nid in self.failed_sources:
                self.node_stats[nid].status = "failed"
        elif cancelled or self.ctx.cancel.is_set():
            self.status, self.error = "cancelled", "run cancelled"
        else:
            self.status = "warning" if any(s.rows_rejected for s in self.node_stats.values()) else "success"

    def _close_sinks(self) -> None:
        for nid, sink in self.sinks.items():
            try:
                sink.close_stream()
            except Exception as exc:  # every micro-batch is committed already; say so and go on
                message = error_line(exc)
                self.ctx.log("warning", f"closing the destination failed: {message}", nid)

    def _fail(self, exc: BaseException) -> None:
        self.failure = exc
        self.status = "failed"
        self.error = (
            exc.one_line()
            if isinstance(exc, AggregatorError)
            else f"internal error: {type(exc).__name__}: {exc}"
        )
        self.ctx.log("error", self.error, None)

    def _stop_sources(self, *, drain: bool = False) -> None:
        """Stop every source. With `drain`, micro-batches go on meanwhile, so a source blocked in
        emit() gets room and stops without a drop; past `stop_timeout_s`, or without `drain`,
        blocked emits stop waiting and drop-oldest instead (counted)."""
        stoppers = [
            threading.Thread(target=self._stop_one, args=(nid, source), daemon=True)
            for nid, source in self.sources.items()
        ]
        for t in stoppers:
            t.start()
        deadline = time.monotonic() + self.settings.stop_timeout_s
        try:
            while drain and any(t.is_alive() for t in stoppers) and time.monotonic() < deadline:
                self._cycle(force=True)
                if not any(q.rows for q in self.queues.values()):
                    time.sleep(0.01)
        finally:  # a failed commit must not leave a source blocked in emit()
            for q in self.queues.values():
                q.release()
            for t, nid in zip(stoppers, self.sources, strict=True):
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    self.ctx.log(
                        "warning", f"source did not stop within {self.settings.stop_timeout_s:g}s", nid
                    )

    def _stop_one(self, nid: str, source: StreamingSource) -> None:
        try:
            source.stop()
        except Exception as exc:  # stopping must reach every source
            self.ctx.log("warning", f"stop failed: {type(exc).__name__}: {exc}", nid)

    def _next_wait(self) -> float:
        """Seconds until the next micro-batch is due (0: now); at most 0.1 s, to see cancel/stop."""
        now = time.monotonic()
        wait = 0.1
        for q in self.queues.values():
            if q.rows >= self.settings.batch_size:
                return 0.0
            oldest = q.oldest()
            if oldest is not None:
                wait = min(wait, max(0.0, oldest + self.settings.max_latency_ms / 1000 - now))
        return wait

    def _due(self, force: bool) -> list[str]:
        limit = time.monotonic() - self.settings.max_latency_ms / 1000
        due = []
        for nid, q in self.queues.items():
            oldest = q.oldest()
            if oldest is not None and (force or q.rows >= self.settings.batch_size or oldest <= limit):
                due.append(nid)
        return due

    def _cycle(self, *, force: bool) -> None:
        """One commit: the micro-batches due now, each pushed through the graph on its own (a
        micro-batch is still at most `batch_size` rows for the transforms), then committed together
        in one transaction per destination. While more full micro-batches wait (a source that hands
        over more than `batch_size` rows at a time, or a dispatcher that fell behind), they join the
        group until `commit_max_rows` or half the latency budget is spent: the commits per second
        follow the latency budget, not the row count (issue 12: 100 commits/s at 100k values/s
        with the default `batch_size` cost more than the inserts)."""
        due = self._due(force)
        if not due:
            self._commit_source_rejects()
            return
        began = time.monotonic()
        spend = self.settings.max_latency_ms / 2000
        passes: list[tuple[int, list[int]]] = []  # per micro-batch: rows, receipt times (epoch µs)
        acks: dict[str, list[Any]] = {}
        counts: dict[str, int] = {}
        outputs: dict[str, list[pl.DataFrame]] = {}
        rejects: list[tuple[str, pl.DataFrame]] = []
        left = 0  # rows that left the pipeline, per micro-batch, counted once
        grouped = 0
        step = sample_step(self.settings.commit_rows)  # the receipt times sampled: ~256 a commit
        try:
            while due:
                taken = {nid: self.queues[nid].take(self.settings.batch_size) for nid in due}
                received = [
                    t
                    for items in taken.values()
                    for i in items
                    for t in received_us(i.frame, i.arrived_us, step)
                ]
                rows = 0
                for nid, items in taken.items():
                    acks.setdefault(nid, []).extend(i.ack for i in items if i.ack is not None)
                    count = sum(i.frame.height for i in items)
                    counts[nid] = counts.get(nid, 0) + count
                    rows += count
                    self.flow.push(nid, concat_batches([i.frame for i in items]))
                    self.flow._progress(nid)
                out, rej = self.flow.end_pass()
                for nid, frame in out.items():
                    outputs.setdefault(nid, []).append(frame)
                rejects += rej
                left += self._left_pipeline(out)
                passes.append((rows, received))
                grouped += rows
                if grouped >= self.settings.commit_rows or time.monotonic() - began >= spend:
                    break
                due = [nid for nid in self._due(force) if self.queues[nid].rows >= self.settings.batch_size]
        except BaseException:  # a transformation failed: this group will never be committed
            for nid, count in counts.items():
                self.queues[nid].lost(count, "micro-batch failed")
            raise
        self._commit_pass({nid: concat_batches(frames) for nid, frames in outputs.items()}, rejects, left)
        self._commit_source_rejects()  # a token's rejects are stored before it is acknowledged
        self._acknowledge(acks)
        committed_us = time.time_ns() // 1000
        for _, received in passes:
            self.latency.add(received, committed_us)
        latency = self.latency.snapshot()  # once per commit: it sorts the whole window
        for rows, received in passes:
            self.micro_batches += 1
            self.on_event(
                {
                    "event": "micro_batch",
                    "run_id": self.ctx.run_id,
                    "sequence": self.micro_batches,
                    "rows": rows,
                    "latency_ms": latency,
                    # this batch's own: receipt of its oldest row to the commit (the metrics' histogram)
                    "batch_latency_ms": round((committed_us - min(received)) / 1000.0, 3)
                    if received
                    else None,
                }
            )

    def _final_pass(self) -> None:
        """The stream stops: nodes with per-tag state (resample's open buckets, rows waiting for
        their successor) hand over what they hold, committed like a micro-batch."""
        if self.flow.stateful:
            self._commit_pass(*self.flow.flush())

    def _commit_pass(
        self,
        outputs: dict[str, pl.DataFrame],
        rejects: list[tuple[str, pl.DataFrame]],
        left: int | None = None,
    ) -> None:
        """Commit each destination's rows (several destinations of one output share the frame:
        no copies); `left`: rows that left the pipeline, when outputs are a group's."""
        for nid, frame in outputs.items():
            self._commit(nid, self.sinks[nid], frame)
        if rejects:
            self._commit_rejects(rejects)
        self.rows_committed += self._left_pipeline(outputs) if left is None else left

    def _left_pipeline(self, outputs: dict[str, pl.DataFrame]) -> int:
        # Several destinations fed by one output carry the same rows: count the widest delivery.
        return max((f.height for f in outputs.values()), default=0)

    # ---- what sources hand over ---------------------------------------------------------------
    def _emitter(self, nid: str, source: StreamingSource) -> Callable[[Any], None]:
        """The `emit` a source gets: its queue's `put`, behind the rule. A batch that is not a
        frame of the source's schema is rejected with the reason; nothing raises into the source."""
        queue = self.queues[nid]
        # A source of tag records may hand over a `TagBatch` (a few rows, no Polars); its schema,
        # which needs Polars, is only read for the first frame.
        tag_batches = source.emits_tag_records()
        schema: list[pl.Schema | None] = []

        def schema_of() -> pl.Schema | None:
            if not schema:
                schema.append(source.schema())
            return schema[0]

        def emit(batch: Any, ack: Any = None) -> None:
            try:
                frame = _conform(batch, schema_of, tag_batches)
            except Exception as exc:
                self._reject_batch(
                    nid, source, batch, str(exc) if isinstance(exc, BadBatch) else one_line_error(exc)
                )
                self._ack_with_rejects(nid, ack)
                return
            try:
                if nid not in self.valued and has_value(frame):
                    self.valued.add(nid)
                if ack is not None and frame.height == 0:
                    self._ack_with_rejects(nid, ack)
                    return
                queue.put(frame, ack)
            except Exception as exc:  # a bug of ours: the records are kept with the reason
                self._reject_batch(nid, source, frame, f"it could not be queued: {one_line_error(exc)}")
                self._ack_with_rejects(nid, ack)

        emit.takes_ack = True  # type: ignore[attr-defined]
        return emit

    def _ack_with_rejects(self, nid: str, ack: Any) -> None:
        """A token whose rows all went to the reject store: acknowledged once they are stored."""
        if ack is not None:
            with self._source_lock:
                self._reject_acks.append((nid, ack))
            self._wake.set()

    def _source_reject(self, nid: str, rows: pl.DataFrame) -> None:
        """Records a source could not decode (`StreamingSource.reject`), with `REJECT_REASON`."""
        if not rows.height:
            return
        if REJECT_REASON not in rows.columns:
            rows = rows.with_columns(pl.lit("rejected by the source").alias(REJECT_REASON))
        self.node_stats[nid].rows_rejected += rows.height
        with self._source_lock:
            self._source_rejects.append((nid, rows))
        self._wake.set()

    def _acknowledge(self, acks: dict[str, list[Any]]) -> None:
        """Tell each source which of its batches are committed; a failing ack is logged, never
        fatal (the broker re-delivers what stays unacknowledged: duplicates, never losses)."""
        for nid, tokens in acks.items():
            if not tokens:
                continue
            try:
                self.sources[nid].acknowledge(tokens)
            except Exception as exc:
                self.ctx.log(
                    "warning", f"acknowledging {len(tokens)} batch(es) failed: {error_line(exc)}", nid
                )

    def _reject_batch(self, nid: str, source: StreamingSource, batch: Any, reason: str) -> None:
        why = f"bad batch from the source: {reason}"
        source.item_failed("batch", why)
        rows = None
        if isinstance(batch, TagBatch):  # as text: it may hold text a frame cannot take
            rows = pl.DataFrame(batch.as_text(), schema=dict.fromkeys(batch.columns, pl.String))
        elif isinstance(batch, pl.DataFrame) and batch.height:
            try:  # the records as they came, each value as text, so that any type can be kept
                rows = batch.select(pl.all().cast(pl.String, strict=False))
            except Exception:
                rows = None
        if rows is None:
            rows = pl.DataFrame({"batch": [repr(batch)[:10_000]]})
        rows = rows.with_columns(pl.lit(why).alias(REJECT_REASON))
        self.node_stats[nid].rows_rejected += rows.height
        with self._source_lock:
            self._source_rejects.append((nid, rows))
        self._wake.set()

    def _commit_source_rejects(self) -> None:
        with self._source_lock:
            rejects, self._source_rejects = self._source_rejects, []
            tokens, self._reject_acks = self._reject_acks, []
        if rejects:
            self._commit_rejects(rejects)
        if tokens:
            acks: dict[str, list[Any]] = {}
            for nid, token in tokens:
                acks.setdefault(nid, []).append(token)
            self._acknowledge(acks)

    # ---- commits -----------------------------------------------------------------------------
    def _commit(self, nid: str, sink: MicroBatchSink, frame: pl.DataFrame) -> None:
        self._with_retries(nid, lambda: sink.commit(frame), frame.height)
        stats = self.sink_stats[nid]
        stats["commits"] += 1
        stats["rows"] += frame.height
        self.node_stats[nid].rows_out += frame.height
        self.flow._progress(nid)

    def _commit_rejects(self, rejects: list[tuple[str, pl.DataFrame]]) -> None:
        """The reject sink of a micro-batch: the dead-letter file when `dead_letter_queue.storage`
        names one, the historian's `_rejects` table otherwise (bad batches from sources too)."""
        historian = self.ctx.historian
        if historian is None:
            return
        dlq = self.c.graph.error_handling.dead_letter_queue
        if dlq.enabled and dlq.storage != "reject_store":
            if self._dead_letters is None:
                self._dead_letters = DeadLetterAppender(self.ctx, dlq.storage)
            appender = self._dead_letters
            self._with_retries(
                "_rejects", lambda: appender.commit(rejects), sum(f.height for _, f in rejects)
            )
            return

        def commit() -> None:
            writer = RejectWriter(historian, run_id=self.ctx.run_id, pipeline=self.ctx.pipeline)
            writer.open()
            try:
                for item in rejects:
                    writer.write(item)
                writer.close()
            except BaseException:
                writer.abort()
                raise

        self._with_retries("_rejects", commit, sum(f.height for _, f in rejects))

    def _with_retries(self, nid: str, action: Callable[[], None], rows: int) -> None:
        """Retry what the outside world may heal, with the pipeline's backoff; sources keep
        buffering meanwhile (within their bounds). Cancelling ends the waiting at once."""
        policy = self.c.graph.error_handling.retry_policy
        delays = retry_delays(policy)
        attempt = 0
        while True:
            try:
                action()
                return
            except Exception as exc:
                if not retryable(exc):
                    self._count_lost(nid, rows)
                    raise
                attempt += 1
                message = error_line(exc)
                if attempt > policy.max_retries or self.ctx.cancel.is_set():
                    self._count_lost(nid, rows)
                    raise
                delay = next(delays)
                if nid in self.sink_stats:
                    self.sink_stats[nid]["retries"] += 1
                self.ctx.log("warning", f"commit failed: {message}; retry {attempt} in {delay:g}s", nid)
                self.on_event(
                    {
                        "event": "sink_retry",
                        "run_id": self.ctx.run_id,
                        "node": nid,
                        "attempt": attempt,
                        "delay_s": delay,
                        "error": message,
                    }
                )
                if self.ctx.cancel.wait(delay):
                    self._count_lost(nid, rows)
                    raise RunCancelled("run cancelled while a destination was failing") from None
            except BaseException:
                self._count_lost(nid, rows)
                raise

    def _count_lost(self, nid: str, rows: int) -> None:
        if nid in self.sink_stats and rows:
            self.sink_stats[nid]["dropped"] += rows
            self._alarm_drop(nid, rows, "not committed")

    # ---- events and alarms -------------------------------------------------------------------
    def _on_state(self, name: str, state: str, detail: str | None) -> None:
        link = self.links.setdefault(name, {"ever_up": False, "state": state, "detail": detail})
        if state in UP_STATES:
            link["ever_up"] = True
        if state != "stopped":  # the stop itself says nothing of the link's health
            link["state"], link["detail"] = state, detail
        level = "info"
        if state == "failed":
            level = "error"
            self.failed_sources[name] = detail or "the source stopped"
            self._wake.set()
        self.ctx.log(level, f"session {state}" + (f": {detail}" if detail else ""), name)
        self.on_event(
            {
                "event": "source_state",
                "run_id": self.ctx.run_id,
                "node": name,
                "state": state,
                "detail": detail,
            }
        )

    def _alarm_drop(self, node: str, rows: int, why: str) -> None:
        total = (
            self.queues[node].dropped
            if node in self.queues
            else self.sink_stats.get(node, {}).get("dropped", rows)
        )
        self.on_event(
            {
                "event": "alarm",
                "kind": "rows_dropped",
                "run_id": self.ctx.run_id,
                "node": node,
                "rows": rows,
                "reason": why,
                "total_dropped": total,
            }
        )
        with self._alarm_lock:
            self._unlogged_drops[node] = self._unlogged_drops.get(node, 0) + rows
            now = time.monotonic()
            if now - self._last_alarm_log.get(node, 0.0) < ALARM_LOG_INTERVAL_S:
                return
            self._last_alarm_log[node] = now
            count = self._unlogged_drops.pop(node)
        self.ctx.log("warning", f"dropped {count} row(s) ({why}); {total} dropped in all", node)

    def _log_pending_alarms(self) -> None:
        with self._alarm_lock:
            pending, self._unlogged_drops = self._unlogged_drops, {}
        for node, count in pending.items():
            self.ctx.log("warning", f"dropped {count} row(s); see the run's drop counts", node)

    # ---- the snapshot ------------------------------------------------------------------------
    def link_problems(self) -> list[str]:
        """One line per source whose link never came up, or was down when the run ended."""
        problems = []
        for nid in self.sources:
            link = self.links.get(nid)
            if link is None:
                continue
            why = f": {link['detail']}" if link["detail"] else ""
            if nid in self.failed_sources:
                continue  # the run's error says so already
            if not link["ever_up"]:
                problems.append(f"source '{nid}' never connected ({link['state']}{why})")
            elif link["state"] in ("lost", "reconnecting", "connecting"):
                problems.append(f"source '{nid}' was {link['state']} when the run ended{why}")
        return problems

    def silent_sources(self) -> dict[str, str]:
        """Sources that delivered no value at all (bad records only, or nothing): source -> the
        last reason its session gave (or its state)."""
        out = {}
        for nid, source in self.sources.items():
            if nid in self.valued:
                continue
            link = self.links.get(nid) or {"state": source.state, "detail": source.state_detail}
            out[nid] = link["detail"] or f"session {link['state']}"
        return out

    def snapshot(self) -> dict[str, Any]:
        sources = {}
        for nid, q in self.queues.items():
            source = self.sources.get(nid)
            sources[nid] = {
                "state": source.state if source else "stopped",
                "state_detail": source.state_detail if source else None,
                "received": q.received,
                "dropped": q.dropped,
                "queued_rows": q.rows,
                "queued_bytes": q.bytes,
                "peak_queued_rows": q.peak_rows,
                "peak_queued_bytes": q.peak_bytes,
                "queue_max_rows": q.max_rows,
                "queue_max_bytes": q.max_bytes,
                "counters": dict(source.counters) if source else {},
            }
        nodes = {}
        for nid, s in self.node_stats.items():
            dropped = (
                self.queues[nid].dropped
                if nid in self.queues
                else self.sink_stats.get(nid, {}).get("dropped", 0)
            )
            nodes[nid] = {"kind": s.kind, "status": s.status, **s.public(), "rows_dropped": dropped}
        return {
            "run_id": self.ctx.run_id,
            "status": self.status,
            "uptime_s": round(time.monotonic() - self._started, 3) if self._started else 0.0,
            "micro_batches": self.micro_batches,
            "rows_received": sum(q.received for q in self.queues.values()),
            "rows_committed": self.rows_committed,
            "rows_dropped": sum(q.dropped for q in self.queues.values())
            + sum(s["dropped"] for s in self.sink_stats.values()),
            "rows_rejected": sum(s.rows_rejected for s in self.node_stats.values()),
            "latency_ms": self.latency.snapshot(),
            "sources": sources,
            "sinks": {
                nid: {**s, "target": self.sinks[nid].describe_target()} for nid, s in self.sink_stats.items()
            },
            "nodes": nodes,
        }

    stats = snapshot


class BadBatch(ValueError):
    """What a source handed over is not a frame of its schema (the message says why)."""


def _conform(
    batch: Any, schema_of: Callable[[], pl.Schema | None], tag_batches: bool = False
) -> pl.DataFrame | TagBatch:
    """The batch as a frame of the source's schema (`schema_of()`): columns of another type are
    cast (a cast that fails rejects the batch), missing ones are null. Free when the schema is
    already right. A `TagBatch` of every tag column from a source of tag records (`tag_batches`)
    stays as it is; any other is made a frame first."""
    if isinstance(batch, TagBatch):
        problem = batch.text_problem()
        if problem is not None:  # a frame of it could not even be made
            raise BadBatch(problem)
        if tag_batches and batch.columns == TAG_COLUMNS:
            return batch
        batch = batch.frame()
    if not isinstance(batch, pl.DataFrame):
        raise BadBatch(f"expected a Polars DataFrame, got {type(batch).__name__}")
    schema = schema_of()
    if schema is None or batch.schema == schema:
        return batch
    fixes = []
    for name, dtype in schema.items():
        if name not in batch.columns:
            fixes.append(pl.lit(None, dtype).alias(name))
        elif batch.schema[name] != dtype:
            fixes.append(pl.col(name).cast(dtype, strict=True))
    if not fixes:
        return batch
    try:
        return batch.with_columns(fixes)
    except Exception as exc:
        raise BadBatch(f"it does not fit the source's schema: {one_line_error(exc)}") from None
