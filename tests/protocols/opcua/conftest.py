"""One wind-farm simulator shared by the read-only tests; fault tests start their own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import polars as pl
import pytest

from engine.context import RunContext
from engine.tags import as_frame, empty_tags
from protocols.opcua.connector import OpcUaSource
from protocols.opcua.simulator import OpcUaSimulator


@pytest.fixture(scope="package")
def farm():
    sim = OpcUaSimulator(turbines=3, interval_s=0.1).start()
    yield sim
    sim.stop()


class Recorder:
    """Runs a source and keeps every batch it emits, with the session states it went through."""

    def __init__(self, config: dict, name: str = "opcua", ctx: RunContext | None = None):
        self.logs: list[tuple[str, str]] = []  # (level, message) the source logged
        ctx = ctx or RunContext(log=lambda level, message, node=None: self.logs.append((level, message)))
        self.source = OpcUaSource(config, ctx, name)
        self.batches: list[pl.DataFrame] = []  # as frames (a TagBatch the source emits too)
        self.kinds: list[str] = []  # what each batch was: "TagBatch" or "DataFrame"
        self.states: list[tuple[float, str, str | None]] = []
        self.source.on_state = lambda _name, state, detail: self.states.append(
            (time.monotonic(), state, detail)
        )

    def __enter__(self) -> Recorder:
        self.source.start(self.keep)
        return self

    def keep(self, batch) -> None:
        self.kinds.append(type(batch).__name__)
        self.batches.append(as_frame(batch))

    def start_holding(self, release: threading.Event) -> None:
        """Start, the first emit held until `release` is set (the runtime's back-pressure): the
        values that arrive meanwhile are handed over as one batch after it."""

        def emit(batch) -> None:
            self.keep(batch)
            if len(self.batches) == 1:
                release.wait(20)

        self.source.start(emit)

    def held_back(self) -> int:
        """Values collected since the first batch (while it is held)."""
        return self.source.counters["notifications"] - (self.batches[0].height if self.batches else 0)

    def __exit__(self, *exc: object) -> None:
        self.source.stop()

    def frame(self) -> pl.DataFrame:
        return pl.concat(list(self.batches)) if self.batches else empty_tags()

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> float:
        """Seconds until `condition` held; fails the test after `timeout`."""
        start = time.monotonic()
        while not condition():
            if time.monotonic() - start > timeout:
                pytest.fail(f"condition not met within {timeout} s; states: {self.states}")
            time.sleep(0.05)
        return time.monotonic() - start

    def state_names(self) -> list[str]:
        return [s for _, s, _ in self.states]


@pytest.fixture
def recorder():
    return Recorder
