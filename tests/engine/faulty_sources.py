"""Streaming sources that misbehave the ways real protocol stacks do, for the runtime's rule:
a bad batch, an item that raises, a thread that dies, a worker process that crashes.

A module of its own (light imports) so that a worker process can import it quickly.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

import polars as pl

from engine.connectors.base import Connector, ConnectorConfig, StreamingSource
from engine.tags import TagBatchBuilder


class FaultyConfig(ConnectorConfig):
    batches: int = 6  # good batches of `rows` rows; values number the rows 0, 1, 2...
    rows: int = 5
    fault: str = "none"  # none | garbage | bad_text | bad_item | die | exit
    fault_after: int = 3  # the fault comes after this many good batches
    interval_s: float = 0.01


class FaultySource(StreamingSource):
    config: FaultyConfig

    def start(self, emit) -> None:
        self._halt = threading.Event()
        self.set_state("connecting", "faulty://test")
        self._thread = self.spawn(self._run, emit, name=f"faulty-{self.name}")

    def _run(self, emit) -> None:
        cfg = self.config
        builder = TagBatchBuilder(self.name)
        self.set_state("connected", "faulty://test")
        sent = 0
        for n in range(cfg.batches):
            if self._halt.is_set():
                return
            if n == cfg.fault_after:
                self._fault(emit)
            values = list(range(sent, sent + cfg.rows))
            builder.extend([f"t{v % 3}" for v in values], values, timestamp=datetime.now(UTC))
            emit(builder.take())
            sent += cfg.rows
            self.counters["emitted"] += cfg.rows
            self._halt.wait(cfg.interval_s)
        self._halt.wait()  # stays up, as a field source does, until stopped

    def _fault(self, emit) -> None:
        fault = self.config.fault
        if fault == "garbage":
            emit({"not": "a frame"})  # not a DataFrame at all
            emit(pl.DataFrame({"tag": ["x"], "value": ["twelve"], "timestamp": ["yesterday"]}))
        elif fault == "bad_text":  # a TagBatch whose 2nd record holds a server's undecodable bytes
            bad = TagBatchBuilder(self.name)
            bad.extend(["x", "y"], [1.0, "caf\udce9"], timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
            emit(bad.take_batch())
        elif fault == "bad_item":
            for item in ("message 1", "message 2"):
                with self.guard(item):
                    raise ValueError(f"{item} cannot be parsed")
        elif fault == "die":
            raise RuntimeError("decoder state corrupted")
        elif fault == "exit":
            os._exit(3)  # a native crash in a worker process

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(5)
        self.set_state("stopped")


class FaultyConnector(Connector):
    connector_type = "test_faulty"
    SourceConfig = FaultyConfig

    @classmethod
    def make_source(cls, config, ctx, name: str) -> StreamingSource:
        return FaultySource(config, ctx, name)
