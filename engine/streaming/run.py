"""`run_streaming`: one run of a real-time pipeline with its run record (as `run_pipeline` keeps)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.connectors.base import UP_STATES
from engine.errors import AggregatorError
from engine.runs.record import begin_run, finish_run, run_context
from engine.secrets import mask
from engine.spec.plan import Plan
from engine.streaming.runner import StreamRunner
from engine.streaming.settings import StreamSettings
from engine.workspace import Workspace

STATS_EVERY_S = 1.0  # a `stream_stats` event this often while running (live views)
# The run record's counts this often while running: a stream killed outright (SIGKILL, power) is
# marked `interrupted` by the next start-up with what it had received, committed and rejected by
# then, not zeros. One small SQLite UPDATE, only when a count moved.
COUNTS_EVERY_S = 10.0


def run_streaming(
    plan: Plan,
    workspace: Workspace,
    *,
    seconds: float | None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    cancel: threading.Event | None = None,
    settings: StreamSettings | None = None,
    base_dir: Path | None = None,
    spec_path: str | None = None,
    trigger: str = "real_time",
) -> dict[str, Any]:
    """Run until `seconds` have passed (None: until `cancel` is set), then stop gracefully: the
    last micro-batch is committed. Returns the run record; never raises for a failed run.

    Ending by `seconds` is a success, unless no source delivered a single value (only bad records
    or nothing): then the run is `failed` with "no values were received from '<source>': <the
    last reason its session gave>". `cancel` ends the run `cancelled` (what was received is still
    committed, without retries)."""
    ws = workspace
    cancel = cancel or threading.Event()
    emit = on_event or (lambda e: None)
    start = begin_run(plan, ws, trigger=trigger, spec_path=spec_path, emit=emit, what="streaming run")
    run_id = start.run_id

    ctx = run_context(plan, ws, run_id, start.started, base_dir, cancel, dry_run=False)
    ctx.delivery_default = "store_and_forward"  # a real-time run's remote destinations (engine/outbox)
    runner = StreamRunner(plan, ctx, settings=settings, on_event=emit)
    try:
        runner.start()
    except AggregatorError:
        pass  # recorded by the runner: status failed, error
    except Exception as exc:  # a bug: still recorded, never a silent crash
        runner.status, runner.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
    else:
        deadline = None if seconds is None else time.monotonic() + seconds
        counts = _RunningCounts(ws, run_id)
        while runner.running:
            left = STATS_EVERY_S if deadline is None else min(STATS_EVERY_S, deadline - time.monotonic())
            if left <= 0:
                break
            if runner.wait(left):  # it ended by itself: failed, or cancelled (it watches `cancel`)
                break
            stats = runner.stats()
            emit({"event": "stream_stats", **stats})
            counts.save(stats)
        runner.stop()
    snapshot = runner.stats()
    silent = runner.silent_sources()
    if runner.status in ("success", "warning") and runner.sources and len(silent) == len(runner.sources):
        # Ended by time without a single value: not a success (exit 1), and the line says why.
        runner.status = "failed"
        runner.error = "no values were received from " + "; ".join(
            f"'{nid}': {why}" for nid, why in silent.items()
        )
    problems = runner.link_problems()
    for problem in problems:
        ws.metadata.log(run_id, "warning", problem)
    if problems and runner.status == "success":  # finished, with a non-fatal error: spec section 6
        runner.status, runner.error = "warning", "; ".join(problems)
    record = finish_run(
        ws,
        start,
        status=runner.status,
        error=runner.error,
        attempt=1,
        rows_in=snapshot["rows_received"],
        rows_out=snapshot["rows_committed"],
        rows_rejected=snapshot["rows_rejected"],
        node_stats=runner.node_stats,
        emit=emit,
        summary=f"{snapshot['micro_batches']} micro-batches, {snapshot['rows_dropped']} row(s) dropped",
    )
    record["stream"] = snapshot
    record["_targets"] = {nid: s["target"] for nid, s in snapshot["sinks"].items()}
    return record


class _RunningCounts:
    """Saves a stream's counts on its run record every COUNTS_EVERY_S, when they moved."""

    def __init__(self, ws: Workspace, run_id: str):
        self.ws, self.run_id = ws, run_id
        self.saved: tuple[int, int, int] = (0, 0, 0)
        self.at = time.monotonic()

    def save(self, stats: dict[str, Any]) -> None:
        counts = (stats["rows_received"], stats["rows_committed"], stats["rows_rejected"])
        if counts == self.saved or time.monotonic() - self.at < COUNTS_EVERY_S:
            return
        self.ws.metadata.running_counts(self.run_id, *counts)
        self.saved, self.at = counts, time.monotonic()


class SourceStateLines:
    """Session changes as console lines, for `aggregator run`: a source that goes down says so at
    once, in one line naming the endpoint and the reason (the source's own detail), and once more
    when it is back. Each distinct reason is said once per outage, so a source that retries every
    second does not flood the console. Call it with every event; it returns the line or None."""

    DOWN = ("lost", "reconnecting", "failed")

    def __init__(self) -> None:
        self._said: dict[str, set[str]] = {}

    def __call__(self, event: dict[str, Any]) -> str | None:
        line = self._line(event)
        return mask(line) if line else None  # a URL or path built from a secret shows as ***

    def _line(self, event: dict[str, Any]) -> str | None:
        if event.get("event") != "source_state":
            return None
        node, state, detail = event["node"], event["state"], event.get("detail")
        said = self._said.setdefault(node, set())
        if state in self.DOWN or (state == "connecting" and said):
            text = detail or f"session {state}"
            if text in said:
                return None
            said.add(text)
            return f"source '{node}' {state}: {text}"
        if state in UP_STATES and said:
            said.clear()
            return f"source '{node}' {state} again" + (f": {detail}" if detail else "")
        return None
