"""Running the editor's document: progress per node while it runs, cancel, and a summary toast at
the end with a link to the run on the Runs page. A real_time pipeline is started and stopped.

Only events tagged with this controller's job reach its signals (other runs go on elsewhere).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

STAT_KEYS = ("status", "rows_in", "rows_out", "rows_rejected", "duration_s")
TOAST_KIND = {"success": "success", "warning": "warning", "failed": "error", "cancelled": "info"}


class RunController(QObject):
    """`RunController(engine, bridge, window=None)`; `start(doc, spec_path=None, base_dir=None)`,
    `cancel()` (stops a stream too), `open_run(run_id)`."""

    node_progress = Signal(str, object)  # node id, {status, rows_in, rows_out, rows_rejected, duration_s}
    edge_counts = Signal(
        object
    )  # a dict (tuple keys: Signal(dict) cannot carry them); {(node, port): rows} as the run counts them
    stream_stats = Signal(object)  # a real_time run's stats, every second
    running_changed = Signal(bool)
    finished = Signal(object)  # the run record

    def __init__(self, engine, bridge, window=None, parent: QObject | None = None):
        super().__init__(parent)
        self.engine, self.bridge, self.window = engine, bridge, window
        self.job = None
        self.run_id: str | None = None
        self.progress: dict[str, dict[str, Any]] = {}
        self.last_record: dict[str, Any] | None = None
        self.last_toast = None
        bridge.event.connect(self._on_event)

    @property
    def running(self) -> bool:
        return self.job is not None

    @property
    def streaming(self) -> bool:
        return self.job is not None and self.job.kind == "stream"

    def start(self, doc: dict[str, Any], spec_path: str | Path | None = None, base_dir=None):
        """Run the document (a real_time one starts streaming); None if a run is already going."""
        if self.job is not None:
            self._toast("warning", "A run of this pipeline is already going: cancel it first")
            return None
        self.progress, self.run_id, self.last_record = {}, None, None
        job = self.engine.runs.start(doc, spec_path=spec_path, base_dir=base_dir)
        self.job = job
        self.running_changed.emit(True)
        self.bridge.call(job, lambda record: self._done(job, record), lambda exc: self._failed(job, exc))
        return job

    def cancel(self) -> None:
        """Cancel the run; a stream stops gracefully (its last micro-batch is committed)."""
        if self.job is None:
            return
        if self.streaming:
            self.engine.runs.stop(self.job.id)
        else:
            self.job.cancel()

    stop = cancel

    def open_run(self, run_id: str | None = None) -> None:
        """Show the run on the Runs page."""
        run_id = run_id or self.run_id
        if self.window is None or run_id is None:
            return
        page = self.window.show_page("runs")
        show = getattr(page, "show_run", None)
        if show is not None:
            show(run_id)

    # ---- engine events -----------------------------------------------------------------------
    def _on_event(self, event: dict) -> None:
        if self.job is None or event.get("job") != self.job.id:
            return
        kind = event.get("event")
        if kind == "run_started":
            self.run_id = event.get("run_id")
        elif kind == "node_progress":
            self._node_stats(event["node"], event)
        elif kind == "stream_stats":
            # a stream has no per-node events: its stats carry every node's live counts
            self._stream_nodes(event)
            self.stream_stats.emit(event)

    def _node_stats(self, node: str, source: dict[str, Any]) -> None:
        stats = {k: source.get(k) for k in STAT_KEYS}
        self.progress[node] = stats
        self.node_progress.emit(node, stats)
        counts = {(node, "out"): stats["rows_out"] or 0}
        if stats["rows_rejected"]:
            counts[(node, "rejected")] = stats["rows_rejected"]
        self.edge_counts.emit(counts)

    def _stream_nodes(self, stats: dict[str, Any]) -> None:
        for node, node_stats in (stats.get("nodes") or {}).items():
            self._node_stats(node, node_stats)

    def _done(self, job, record: dict[str, Any]) -> None:
        if job is not self.job:
            return
        self.job, self.last_record = None, record
        if record.get("stream"):  # a stream's final counts and statuses, after its last commit
            self._stream_nodes(record["stream"])
        self.run_id = record.get("run_id", self.run_id)
        self.running_changed.emit(False)
        status = record.get("status", "failed")
        summary = (
            f"Run {status}: {record.get('rows_in', 0)} rows in, {record.get('rows_out', 0)} out,"
            f" {record.get('rows_rejected', 0)} rejected in {record.get('duration_s') or 0:.1f} s"
        )
        if record.get("error") and status != "cancelled":
            summary += f"<br>{record['error']}"
        toast = self._toast(TOAST_KIND.get(status, "info"), f"{summary}<br><a href='run'>Open run</a>")
        if toast is not None:
            run_id = self.run_id
            toast.label.linkActivated.connect(lambda _href: self.open_run(run_id))
        self.finished.emit(record)

    def _failed(self, job, error: BaseException) -> None:
        if job is not self.job:
            return
        self.job = None
        self.running_changed.emit(False)
        issues = getattr(error, "issues", None)
        text = f"{issues[0].path}: {issues[0].message}" if issues else str(error)
        self._toast("error", f"The run did not start: {text}")

    def _toast(self, kind: str, text: str):
        if self.window is None:
            return None
        self.last_toast = self.window.toast(kind, text)
        return self.last_toast
