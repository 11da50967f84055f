"""Previews: a dry run on a sample, the first rows at every node and port; nothing is written.

The one preview path: `aggregator preview` (engine/runner.py `preview_pipeline`) and the editor's
preview (`EngineAPI.preview`, engine/api/runs.py) both call `run_preview`. A polled source is read
for its first `sample_rows` rows; a streaming source (a field protocol, MQTT) cannot be read to
its end, so it is started, listened to for `live_seconds` (or until `limit` rows came) and
stopped: a short live sample. A live sample that holds no value (nothing came, or only bad
records: the device is unreachable) says why, from the source's session state:
`live_problems["meters"] == "modbus://127.0.0.1:1: connection refused; ..."`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from engine.context import RunContext
from engine.errors import RunCancelled
from engine.spec.validate import Compiled
from engine.tags import has_value

PREVIEW_SAMPLE_ROWS = 10_000  # rows read per polled source by a preview
LIVE_SAMPLE_S = 2.0  # a streaming source's preview listens this long
LIVE_FIRST_S = 10.0  # ... or, while it is still coming up with nothing yet, this long for its first batch


@dataclass
class Preview:
    samples: dict[tuple[str, str], pl.DataFrame]  # (node, port) -> the first `limit` rows
    stats: dict[str, Any]  # node -> NodeStats
    port_rows: dict[tuple[str, str], int]  # (node, port) -> rows that passed in the sample
    live_sampled: list[str] = field(default_factory=list)  # streaming sources read as a live sample
    live_problems: dict[str, str] = field(default_factory=dict)  # source -> why its sample is empty

    def rows_total(self, compiled: Compiled, nid: str, port: str) -> int:
        if compiled.graph.node(nid).kind == "destination":
            return self.stats[nid].rows_in
        return self.port_rows.get((nid, port), 0)


def run_preview(
    compiled: Compiled,
    ctx: RunContext,
    *,
    limit: int,
    sample_rows: int = PREVIEW_SAMPLE_ROWS,
    live_seconds: float | None = None,
) -> Preview:
    """Preview `compiled` (ctx.dry_run must be set: destinations are not opened). Raises
    RunCancelled when `ctx.cancel` is set meanwhile (a cut-short live sample is no preview).
    `live_seconds`: how long a streaming source is listened to (None: LIVE_SAMPLE_S, read now)."""
    assert ctx.dry_run, "a preview writes nothing"
    if live_seconds is None:
        live_seconds = LIVE_SAMPLE_S
    executor = _executor_class()(
        compiled, ctx, sample_rows=max(sample_rows, limit), preview_limit=limit, live_seconds=live_seconds
    )
    executor.execute()
    if ctx.cancel.is_set():
        raise RunCancelled("preview cancelled")
    return Preview(
        samples=dict(executor.samples),
        stats=executor.stats,
        port_rows=dict(executor._port_rows),
        live_sampled=executor.live_sampled,
        live_problems=executor.live_problems,
    )


@functools.cache
def _executor_class():
    """Built on first use (the executor imports the transformations)."""
    from engine.connectors.base import Source, StreamingSource
    from engine.executor import Executor

    class LiveSample(Source):
        """A streaming source read as a short live sample; notes why when it holds no value."""

        def __init__(self, live: StreamingSource, limit: int, seconds: float, problems: dict[str, str]):
            super().__init__(live.config, live.ctx, live.name)
            self.live, self.limit, self.seconds, self.problems = live, limit, seconds, problems

        def read(self, limit=None, batch_rows=0):
            last: dict[str, Any] = {}

            def on_state(_name: str, state: str, detail: str | None) -> None:
                if state != "stopped":  # the stop at the end of the sample says nothing
                    last.update(state=state, detail=detail)

            self.live.on_state = on_state
            frame = self.live.sample(seconds=self.seconds, limit=self.limit, first_within=LIVE_FIRST_S)
            if not has_value(frame):
                why = last.get("detail") or f"session {last.get('state', 'stopped')}"
                if frame.height and "reason" in frame.columns:
                    reasons = frame.get_column("reason").drop_nulls().unique().sort().to_list()
                    if not last.get("detail") and reasons:
                        why = ", ".join(reasons)
                self.problems[self.name] = (
                    why
                    if frame.height or last.get("detail")
                    else f"nothing within {self.seconds:g} s ({why})"
                )
            if frame.height:
                yield frame

        def schema(self):
            return self.live.schema()

    class PreviewExecutor(Executor):
        def __init__(self, *args, live_seconds: float = LIVE_SAMPLE_S, **kwargs):
            super().__init__(*args, **kwargs)
            self.live_seconds = live_seconds
            self.live_sampled: list[str] = []
            self.live_problems: dict[str, str] = {}

        def _make_source(self, nid: str):
            source = super()._make_source(nid)
            if isinstance(source, StreamingSource):
                self.live_sampled.append(nid)
                return LiveSample(source, self.preview_limit or 100, self.live_seconds, self.live_problems)
            return source

    return PreviewExecutor


__all__ = ["LIVE_SAMPLE_S", "PREVIEW_SAMPLE_ROWS", "Preview", "run_preview"]
