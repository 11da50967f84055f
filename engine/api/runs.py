"""EngineAPI: the runs calls (see engine/api/core.py): previews, batch runs, real-time streams and
the run history.

Every call that touches data returns a `Job` at once; its events (node_progress, run_started,
run_finished, stream_stats...) reach `emit` tagged with `"job": job.id`, so a view can tell its own
run from the others."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.api.core import EngineCore, Event, Job
from engine.api.protocol import RunFilter
from engine.runs.timefmt import iso_utc_or_none  # the run records' time text: texts compare in time order


@dataclass
class PortPreview:
    """What one node's port produced in a preview."""

    node: str
    port: str
    rows: Any  # pl.DataFrame: the first `limit` rows
    rows_total: int  # rows that passed the port in the preview's sample

    @property
    def columns(self) -> list[tuple[str, str]]:
        """(name, type) of every column, as the preview table's headers show them."""
        return [(name, str(dtype)) for name, dtype in self.rows.schema.items()]

    def json_rows(self) -> list[dict[str, Any]]:
        """The rows JSON-ready (timestamps as ISO 8601 UTC with Z), as `aggregator preview --json`
        prints them."""
        from engine.runner import frame_to_json_rows

        return frame_to_json_rows(self.rows)


@dataclass
class PreviewResult:
    node: str | None  # the node previewed (None: the whole pipeline)
    ports: dict[tuple[str, str], PortPreview] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> status, rows in/out/rejected
    live_sampled: list[str] = field(default_factory=list)  # streaming sources read for a short sample
    live_problems: dict[str, str] = field(default_factory=dict)  # source -> why its sample holds no value

    def output(self, node: str, port: str = "out") -> PortPreview | None:
        return self.ports.get((node, port))

    def rejected(self, node: str) -> PortPreview | None:
        """The node's rejected rows, with their reasons in `_reject_reason`."""
        return self.ports.get((node, "rejected"))

    def edge_counts(self) -> dict[tuple[str, str], int]:
        """(node, port) -> rows, for labelling the canvas links."""
        return {key: p.rows_total for key, p in self.ports.items()}


def _through(compiled, node_id: str | None):
    """The compiled pipeline cut down to `node_id` and what feeds it (a preview reads no more)."""
    from engine.errors import SpecError, SpecIssue

    if node_id is None:
        return compiled
    try:
        return compiled.through(node_id)  # the Plan keeps its secrets' places (engine/spec/plan.py)
    except KeyError:
        raise SpecError([SpecIssue("nodes", f"no node '{node_id}' in the pipeline")]) from None


def _base_dir(spec_path: str | Path | None, base_dir: str | Path | None) -> Path:
    if base_dir is not None:
        return Path(base_dir)
    from engine.spec.io import spec_base_dir  # the same rule as validation

    return spec_base_dir(spec_path)


class LocalRuns:
    """The runs part of the in-process engine (`engine.runs`)."""

    def __init__(self, core: EngineCore):
        self._core = core
        self._no_rejects: Any = None  # the historian's empty rejects frame while it has no table

    # ---- helpers -----------------------------------------------------------------------------
    def _compile(self, doc: dict[str, Any], base_dir: Path):
        from engine.context import RunContext
        from engine.spec.validate import validate

        # the sources' schemas resolve relative paths where the run will
        return validate(doc, ctx=RunContext(base_dir=base_dir, data_dir=self._core.data_dir), reuse=True)

    def _submit_tagged(
        self, kind: str, work: Callable[[threading.Event, Callable[[Event], None]], Any]
    ) -> Job:
        """submit(), with an `emit` for the work that tags its events with the job's id."""
        ready, holder = threading.Event(), {}

        def tagged(cancel: threading.Event) -> Any:
            ready.wait()
            job_id = holder["job"].id
            return work(cancel, lambda event: self._core.emit({**event, "job": job_id}))

        job = self._core.submit(kind, tagged)
        holder["job"] = job
        ready.set()
        return job

    # ---- preview -----------------------------------------------------------------------------
    def preview(
        self,
        doc: dict[str, Any],
        node_id: str | None = None,
        limit: int = 100,
        base_dir: str | Path | None = None,
    ) -> Job:
        """A dry run through `node_id` (and what feeds it; None: every node); nothing is written.
        The job's result is a `PreviewResult`. Streaming sources give a short live sample.
        `job.cancel()` stops it between batches (the job then raises RunCancelled)."""
        where = _base_dir(None, base_dir)

        def work(cancel: threading.Event) -> PreviewResult:
            compiled = _through(self._compile(doc, where), node_id)
            return self._preview(compiled, where, limit, cancel, node_id)

        return self._core.submit("preview", work)

    def _preview(
        self, compiled, base_dir: Path, limit: int, cancel: threading.Event, node_id
    ) -> PreviewResult:
        """The engine's one preview path (engine/preview.py, shared with `aggregator preview`)."""
        from engine.preview import run_preview
        from engine.runner import _context

        ctx = _context(
            compiled, self._core.workspace, "preview", datetime.now(UTC), base_dir, cancel, dry_run=True
        )
        preview = run_preview(compiled, ctx, limit=limit)
        result = PreviewResult(
            node_id, live_sampled=preview.live_sampled, live_problems=preview.live_problems
        )
        for (nid, port), rows in preview.samples.items():
            result.ports[(nid, port)] = PortPreview(nid, port, rows, preview.rows_total(compiled, nid, port))
        result.stats = {
            nid: {"kind": s.kind, "status": s.status, **s.public()} for nid, s in preview.stats.items()
        }
        return result

    # ---- runs --------------------------------------------------------------------------------
    def start(
        self,
        doc: dict[str, Any],
        spec_path: str | Path | None = None,
        base_dir: str | Path | None = None,
        trigger: str = "manual",
        seconds: float | None = None,
    ) -> Job[dict[str, Any]]:
        """Run the pipeline now (a real_time one streams until `stop(job.id)`, or `seconds`); the
        job's result is the run record. `job.cancel()` cancels the run."""
        if _is_real_time(doc):
            return self.start_stream(doc, spec_path=spec_path, base_dir=base_dir, seconds=seconds)

        def work(cancel: threading.Event, emit: Callable[[Event], None]) -> dict[str, Any]:
            return self._run_batch(doc, spec_path, base_dir, trigger, cancel, emit)

        return self._submit_tagged("run", work)

    def _run_batch(self, doc, spec_path, base_dir, trigger, cancel, emit) -> dict[str, Any]:
        from engine.runner import run_pipeline

        where = _base_dir(spec_path, base_dir)
        record = run_pipeline(
            self._compile(doc, where),
            self._core.workspace,
            base_dir=where,
            spec_path=str(spec_path) if spec_path else None,
            trigger=trigger,
            cancel=cancel,
            on_event=emit,
        )
        self._final_progress(record["run_id"], emit)
        return record

    def _final_progress(self, run_id: str, emit: Callable[[Event], None]) -> None:
        """Every node's final status and counts (progress events stop at the last batch, before
        destinations commit), so a view's per-node overlay ends right."""
        for row in self._core.workspace.metadata.node_stats(run_id):
            stats = {k: row[k] for k in ("status", "rows_in", "rows_out", "rows_rejected", "duration_s")}
            emit({"event": "node_progress", "run_id": run_id, "node": row["node_id"], **stats})

    def start_stream(
        self,
        doc: dict[str, Any],
        spec_path: str | Path | None = None,
        base_dir: str | Path | None = None,
        seconds: float | None = None,
    ) -> Job:
        """Start a real_time pipeline; it runs until `stop_stream(job.id)` (or `seconds`). Its
        `stream_stats` events come every second; the job's result is the run record."""

        def work(cancel: threading.Event, emit: Callable[[Event], None]) -> dict[str, Any]:
            return self._run_stream(doc, spec_path, base_dir, "real_time", cancel, emit, seconds)

        return self._submit_tagged("stream", work)

    def _run_stream(self, doc, spec_path, base_dir, trigger, cancel, emit, seconds=None) -> dict[str, Any]:
        from engine.streaming.run import run_streaming

        where = _base_dir(spec_path, base_dir)
        return run_streaming(
            self._compile(doc, where),
            self._core.workspace,
            seconds=seconds,
            on_event=emit,
            cancel=cancel,
            base_dir=where,
            spec_path=str(spec_path) if spec_path else None,
            trigger=trigger,
        )

    def stop(self, job_id: str) -> bool:
        """Stop a running stream gracefully (the last micro-batch is committed), or cancel a run;
        False if no such job, or if it has ended (its result is there; the job may be listed a
        moment longer, until its end is recorded)."""
        for job in self._core.jobs():
            if job.id == job_id and not job.done():
                job.cancel()
                return True
        return False

    # ---- history -----------------------------------------------------------------------------
    def list(self, filter: RunFilter | None = None) -> list[dict[str, Any]]:
        """Run records, newest first, started in [`since`, `until`) (each a datetime or an ISO 8601
        UTC text; None: open)."""
        f = filter or RunFilter()
        return self._core.workspace.metadata.runs(
            pipeline=f.pipeline,
            status=f.status,
            limit=f.limit,
            since=iso_utc_or_none(f.since),
            until=iso_utc_or_none(f.until),
        )

    def pipeline_names(self) -> list[str]:
        """Pipelines that have runs (the Runs page's filter)."""
        return self._core.workspace.metadata.run_pipeline_names()

    def overview(self, filter: RunFilter | None = None) -> dict[str, Any]:
        """The Runs page's one read: the filtered records and every pipeline that has runs."""
        return {"runs": self.list(filter), "pipelines": self.pipeline_names()}

    def nodes(self, run_id: str) -> list[dict[str, Any]]:
        """A run's node statistics, as the metadata store keeps them."""
        return self._core.workspace.metadata.node_stats(run_id)

    def jobs(self) -> list[Job[Any]]:
        return self._core.jobs()

    def detail(self, run_id: str) -> dict[str, Any]:
        """The run record, its node statistics, log lines and rejected records (a DataFrame)."""
        from engine.errors import DataError

        meta = self._core.workspace.metadata
        record = meta.run(run_id)
        if record is None:
            raise DataError(f"run '{run_id}' not found")
        return {
            "record": record,
            "nodes": meta.node_stats(run_id),
            "logs": meta.logs(run_id),
            "rejects": self._rejects(run_id),
        }

    def _rejects(self, run_id: str) -> Any:
        """`Historian.rejects(run_id)`, without its catalog look-up (~1.3 ms, on every GET
        /runs/{id}) while the historian has no rejects table: a query of the table says so in
        ~0.1 ms, and the empty frame the historian answered once is answered again."""
        import duckdb

        from engine.store.historian import REJECTS_TABLE

        historian = self._core.workspace.historian
        if self._no_rejects is not None and not historian.pending_reject_files():  # files: folded below
            cur = historian.cursor()
            try:
                cur.execute(f"SELECT 1 FROM {REJECTS_TABLE} LIMIT 0")
            except duckdb.CatalogException:
                return self._no_rejects.clear()
            finally:
                cur.close()
            self._no_rejects = None
        frame = historian.rejects(run_id)
        if frame.height == 0 and "pipeline" not in frame.columns:  # the frame of "no table"
            self._no_rejects = frame
        return frame

    def rerun(self, run_id: str, base_dir: str | Path | None = None) -> Job:
        """Run again the pipeline version that `run_id` ran, with the same spec path (its folder
        resolves relative paths unless `base_dir` is given). The look-up happens in the job: an
        unknown run makes the job raise DataError."""

        def work(cancel: threading.Event, emit: Callable[[Event], None]) -> dict[str, Any]:
            from engine.errors import DataError

            meta = self._core.workspace.metadata
            record = meta.run(run_id)
            if record is None:
                raise DataError(f"run '{run_id}' not found")
            doc = meta.pipeline_spec(record["pipeline"], record.get("version"))
            if doc is None:
                raise DataError(f"run '{run_id}': pipeline '{record['pipeline']}' has no stored version")
            again = self._run_stream if _is_real_time(doc) else self._run_batch
            return again(doc, record.get("spec_path"), base_dir, "rerun", cancel, emit)

        return self._submit_tagged("run", work)


def _is_real_time(doc: dict[str, Any]) -> bool:
    return (doc.get("schedule") or {}).get("type") == "real_time"
