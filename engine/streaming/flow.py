"""The batch executor's graph walk, one micro-batch at a time."""

from __future__ import annotations

import dataclasses

from engine.context import NodeContext
from engine.executor import GraphFlow, _concat
from engine.lazy import lazy_module
from engine.tags import concat_batches
from engine.transforms.base import OUT, Transform

pl = lazy_module("polars")


class Stateful(Transform):
    """A node that carries per-tag state across micro-batches (`stream_state()` is not None), seen
    by the graph walk as a blocking node: it gets each micro-batch whole, through `apply_stream`;
    in the final pass (the stream stops) it also hands over what it still held (`flush_stream`)."""

    def __init__(self, inner: Transform, state: object):
        super().__init__(inner.config, inner.node_id)
        self.inner, self.state = inner, state
        self.type, self.Config = inner.type, inner.Config  # type: ignore[misc]
        self.final = False
        self.schema: pl.Schema | None = None  # the last input's, for the final pass

    @property
    def streaming(self) -> bool:
        return False

    @property
    def fails_on_reject(self) -> bool:
        return self.inner.fails_on_reject

    def output_ports(self) -> list[str]:
        return self.inner.output_ports()

    def apply(self, inputs: list[pl.LazyFrame], ctx: NodeContext) -> dict[str, pl.LazyFrame]:
        frame = inputs[0].collect()
        self.schema = frame.schema
        outputs = self.inner.apply_stream(frame, self.state, ctx)  # type: ignore[attr-defined]
        if self.final:
            for port, flushed in self.inner.flush_stream(self.state, ctx).items():  # type: ignore[attr-defined]
                outputs[port] = _concat([outputs[port], flushed]) if port in outputs else flushed
        return {port: frame.lazy() for port, frame in outputs.items()}


class MicroBatchFlow(GraphFlow):
    """Each micro-batch is one pass: row-local nodes run on it as it is pushed, blocking nodes
    (aggregation, join, sort...) see the micro-batch whole when the pass ends; what reaches the
    destinations and the reject store is gathered for the pass's commit. Time-series nodes with
    per-tag state continue from the previous micro-batch (`Stateful`); `flush()` ends the stream."""

    def __init__(self, plan, *args, **kwargs):
        transforms = dict(plan.transforms)
        for nid, transform in plan.transforms.items():
            state = getattr(transform, "stream_state", lambda: None)()
            if state is not None:  # fresh state per run: the Plan's own nodes stay stateless
                transforms[nid] = Stateful(transform, state)
        super().__init__(dataclasses.replace(plan, transforms=transforms), *args, **kwargs)
        self.outbox: dict[str, list[pl.DataFrame]] = {}
        self.rejects: list[tuple[str, pl.DataFrame]] = []
        self.sources = [nid for nid in self.c.order if self.nodes[nid].kind == "source"]
        self.blocking = any(
            not (t.streaming and len(self.nodes[nid].inputs) == 1) for nid, t in self.c.transforms.items()
        )
        self.stateful = {nid: t for nid, t in self.c.transforms.items() if isinstance(t, Stateful)}

    def _make_source(self, nid: str):
        """A source with `worker_process: true` runs in a child process (engine/streaming/worker.py)."""
        node = self.nodes[nid]
        if not node.worker_process:
            return super()._make_source(nid)
        from engine.streaming.worker import ProcessSource

        cls = self.c.connector(nid)
        # The child gets the config as data (it crosses a process boundary) and parses it there.
        config = self.ctx.resolve_config(node.config or {})
        return ProcessSource(f"{cls.__module__}:{cls.__name__}", config, self.ctx, nid)

    def push(self, source: str, frame: pl.DataFrame) -> None:
        self.stats[source].rows_out += frame.height
        self._emit(source, OUT, [frame], origin=source)

    def end_pass(self) -> tuple[dict[str, pl.DataFrame], list[tuple[str, pl.DataFrame]]]:
        """Close every input (blocking nodes run now), then hand over the pass's outputs."""
        if self.blocking:
            for nid in self.sources:
                self._close_outputs(nid)
            self.reset_inputs()
        outbox = {nid: concat_batches(frames) for nid, frames in self.outbox.items()}  # TagBatches too
        rejects, self.outbox, self.rejects = self.rejects, {}, []
        return {nid: f for nid, f in outbox.items() if f.height}, rejects

    def flush(self) -> tuple[dict[str, pl.DataFrame], list[tuple[str, pl.DataFrame]]]:
        """The final pass: stateful nodes emit what they still hold (open buckets, held rows)."""
        for nid, node in self.stateful.items():
            node.final = True
            if node.schema is not None:  # an empty input with its columns, so the node runs
                self._buffers.setdefault(nid, {}).setdefault(0, []).append(pl.DataFrame(schema=node.schema))
        try:
            return self.end_pass()
        finally:
            for node in self.stateful.values():
                node.final = False

    def _deliver(self, nid: str, batch: pl.DataFrame) -> None:
        if batch.height:
            self.outbox.setdefault(nid, []).append(batch)

    def _queue_rejects(self, nid: str, rejected: pl.DataFrame) -> None:
        self.rejects.append((nid, rejected))
