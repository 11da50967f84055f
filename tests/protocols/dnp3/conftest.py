"""Fixtures: the substation RTU simulator (an opendnp3 outstation), a collector for emitted
batches, and a TCP proxy that can stall the link or write garbage into it."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable

import polars as pl
import pytest

from engine.context import RunContext
from engine.tags import as_frame
from protocols.dnp3.config import Dnp3SourceConfig
from protocols.dnp3.connector import Dnp3Source
from protocols.dnp3.simulator import Dnp3Simulator
from tests import waiting

T0 = 100.0  # model time of the frozen simulator


class Batches:
    """What `emit` received, with a way to wait for a batch that matches."""

    def __init__(self) -> None:
        self.frames: list[pl.DataFrame] = []  # as frames (a TagBatch the source emits too)
        self.kinds: list[str] = []  # what each batch was: "TagBatch" or "DataFrame"
        self.states: list[tuple[str, str | None]] = []
        self._cond = threading.Condition()

    def emit(self, batch) -> None:
        with self._cond:
            self.kinds.append(type(batch).__name__)
            self.frames.append(as_frame(batch))
            self._cond.notify_all()

    def on_state(self, name: str, state: str, detail: str | None) -> None:
        with self._cond:
            self.states.append((state, detail))
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

    def wait_rows(self, match: pl.Expr, timeout: float = 10.0, after: int = 0) -> pl.DataFrame:
        """The rows matching `match` of the first batch (from `after` on) that has any."""
        frame = self.wait(lambda f: not f.filter(match).is_empty(), timeout, after)
        return frame.filter(match)

    def after(self, frame: pl.DataFrame) -> int:
        """The index just past `frame` (by identity: frames compare by value)."""
        return next(i for i, f in enumerate(self.frames) if f is frame) + 1

    def wait_state(self, state: str, timeout: float = 10.0, detail: str = "") -> str | None:
        """The detail of the first state change to `state` whose detail contains `detail`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for seen, text in self.states:
                    if seen == state and detail in (text or ""):
                        return text
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"state {state} ({detail!r}) never reached; saw {self.states}")
                self._cond.wait(left)


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    return waiting.wait_for(condition, timeout, 0.02, what)  # tests/waiting.py, polled finer


@pytest.fixture
def sim():
    with Dnp3Simulator(port=0, feeders=2, update_interval_s=None, start_t=T0, confirm_timeout_s=1.0) as s:
        yield s


@pytest.fixture
def run_source():
    """Start a Dnp3Source with the given config; stopped at teardown."""
    started: list[Dnp3Source] = []

    def start(
        ctx: RunContext | None = None, emit: Callable | None = None, **config
    ) -> tuple[Dnp3Source, Batches]:
        source = Dnp3Source(Dnp3SourceConfig(**config), ctx or RunContext(), name="rtu")
        batches = Batches()
        source.on_state = batches.on_state
        source.start(emit or batches.emit)
        started.append(source)
        return source, batches

    yield start
    for source in started:
        source.stop()


class LinkProxy:
    """A TCP proxy between the master and the outstation: `stall()` stops forwarding (the
    connections stay open), `garbage()` writes bytes that are no DNP3 frame to the master."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stalled = threading.Event()
        self._to_master: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                master, _ = self.server.accept()
            except OSError:
                return
            try:
                outstation = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                master.close()
                continue
            self._to_master.append(master)
            for a, b in ((master, outstation), (outstation, master)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                if not self.stalled.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()

    def garbage(self, size: int = 64) -> None:
        for s in self._to_master:
            with contextlib.suppress(OSError):
                s.sendall(os.urandom(size) + b"\x05\x64\x05\xc4\x01\x00\x0a\x00\xff\xff")

    def close(self) -> None:
        self._closed = True
        self.server.close()
        for s in self._to_master:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def proxy(sim):
    link = LinkProxy(sim.port)
    yield link
    link.close()
