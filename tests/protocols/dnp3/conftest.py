"""Fixtures: a real dnp3py outstation (the simulator) and a collector for emitted batches."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import polars as pl
import pytest

from engine.context import RunContext
from protocols.dnp3.config import Dnp3SourceConfig
from protocols.dnp3.connector import Dnp3Source
from protocols.dnp3.simulator import Dnp3Simulator

T0 = 100.0  # model time of the frozen simulator


class Batches:
    """What `emit` received, with a way to wait for a batch that matches."""

    def __init__(self) -> None:
        self.frames: list[pl.DataFrame] = []
        self.states: list[str] = []
        self._cond = threading.Condition()

    def emit(self, batch: pl.DataFrame) -> None:
        with self._cond:
            self.frames.append(batch)
            self._cond.notify_all()

    def on_state(self, name: str, state: str, detail: str | None) -> None:
        with self._cond:
            self.states.append(state)
            self._cond.notify_all()

    def wait(
        self, match: Callable[[pl.DataFrame], bool], timeout: float = 10.0, after: int = 0
    ) -> pl.DataFrame:
        """The first batch (from index `after` on) for which `match` is true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for frame in self.frames[after:]:
                    if match(frame):
                        return frame
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching batch in {timeout} s; got {len(self.frames)} batches")
                self._cond.wait(left)

    def after(self, frame: pl.DataFrame) -> int:
        """The index just past `frame` (by identity: frames compare by value)."""
        return next(i for i, f in enumerate(self.frames) if f is frame) + 1

    def wait_state(self, state: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while state not in self.states:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"state {state} never reached; saw {self.states}")
                self._cond.wait(left)


@pytest.fixture
def sim():
    with Dnp3Simulator(port=0, feeders=4, update_interval_s=None, start_t=T0, confirm_timeout_s=1.0) as s:
        yield s


@pytest.fixture
def run_source():
    """Start a Dnp3Source with the given config; stopped at teardown."""
    started: list[Dnp3Source] = []

    def start(**config) -> tuple[Dnp3Source, Batches]:
        source = Dnp3Source(Dnp3SourceConfig(**config), RunContext(), name="rtu")
        batches = Batches()
        source.on_state = batches.on_state
        source.start(batches.emit)
        started.append(source)
        return source, batches

    yield start
    for source in started:
        source.stop()
