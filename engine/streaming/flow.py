"""The batch executor's graph walk, one micro-batch at a time."""

from __future__ import annotations

import polars as pl

from engine.executor import GraphFlow, _concat
from engine.transforms.base import OUT


class MicroBatchFlow(GraphFlow):
    """Each micro-batch is one pass: row-local nodes run on it as it is pushed, blocking nodes
    (aggregation, join, sort...) see the micro-batch whole when the pass ends; what reaches the
    destinations and the reject store is gathered for the pass's commit."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outbox: dict[str, list[pl.DataFrame]] = {}
        self.rejects: list[tuple[str, pl.DataFrame]] = []
        self.sources = [nid for nid in self.c.order if self.nodes[nid].kind == "source"]
        self.blocking = any(
            not (t.streaming and len(self.nodes[nid].inputs) == 1) for nid, t in self.c.transforms.items()
        )

    def push(self, source: str, frame: pl.DataFrame) -> None:
        self.stats[source].rows_out += frame.height
        self._emit(source, OUT, [frame], origin=source)

    def end_pass(self) -> tuple[dict[str, pl.DataFrame], list[tuple[str, pl.DataFrame]]]:
        """Close every input (blocking nodes run now), then hand over the pass's outputs."""
        if self.blocking:
            for nid in self.sources:
                self._close_outputs(nid)
            self.reset_inputs()
        outbox = {nid: _concat(frames) for nid, frames in self.outbox.items()}
        rejects, self.outbox, self.rejects = self.rejects, {}, []
        return {nid: f for nid, f in outbox.items() if f.height}, rejects

    def _deliver(self, nid: str, batch: pl.DataFrame) -> None:
        if batch.height:
            self.outbox.setdefault(nid, []).append(batch)

    def _queue_rejects(self, nid: str, rejected: pl.DataFrame) -> None:
        self.rejects.append((nid, rejected))
