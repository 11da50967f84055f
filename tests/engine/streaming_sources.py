"""A real streaming source for the streaming tests: a thread emitting tag batches at a set pace.

A module of its own (light imports) so that a worker process can import it quickly.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from engine.connectors.base import Connector, ConnectorConfig, StreamingSource
from engine.tags import TagBatchBuilder


class TicksConfig(ConnectorConfig):
    rows_per_batch: int = 10
    batches: int | None = 10  # None: until stopped
    interval_s: float = 0.0
    tags: int = 5
    lean: bool = (
        False  # hand over TagBatches (plain columns, engine/tags.py), as a Modbus round of a few tags
    )


class TickSource(StreamingSource):
    """Emits `batches` batches of `rows_per_batch` tag records; `value` numbers every row (0, 1,
    2...), so a test can tell exactly which rows arrived."""

    config: TicksConfig

    def start(self, emit) -> None:
        self._halt = threading.Event()
        self.finished = threading.Event()
        self.set_state("connecting")
        self._thread = threading.Thread(target=self._run, args=(emit,), daemon=True)
        self._thread.start()

    def _run(self, emit) -> None:
        cfg = self.config
        builder = TagBatchBuilder(self.name)
        tags = [f"turbine{i}.power" for i in range(cfg.tags)]
        self.set_state("connected", "ticking")
        sent = n = 0
        while (cfg.batches is None or n < cfg.batches) and not self._halt.is_set():
            values = range(sent, sent + cfg.rows_per_batch)
            builder.extend([tags[v % cfg.tags] for v in values], list(values), timestamp=datetime.now(UTC))
            emit(builder.take_batch() if cfg.lean else builder.take())
            sent += cfg.rows_per_batch
            self.counters["emitted"] += cfg.rows_per_batch
            n += 1
            if cfg.interval_s:
                self._halt.wait(cfg.interval_s)
        self.finished.set()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join()
        self.set_state("stopped")


class TicksConnector(Connector):
    connector_type = "test_ticks"
    SourceConfig = TicksConfig

    @classmethod
    def make_source(cls, config, ctx, name: str) -> StreamingSource:
        return TickSource(config, ctx, name)
