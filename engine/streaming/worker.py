"""A streaming source in a worker process: batches come back as Arrow IPC streams over a pipe.

A protocol stack that holds the GIL for long (a busy asyncio client decoding thousands of
notifications) or may crash (a native library) can run in a child process of its own. The child
builds the real source from `"package.module:ConnectorClass"` and a config dict, and sends each
emitted batch as one Arrow IPC stream (no pickling of frames, no per-row work); the parent's
reader thread turns it back into a DataFrame and calls the runtime's `emit`. Back-pressure
carries through: while the parent's `emit` blocks, the reader stops reading, the pipe fills and
the child's `emit` blocks in turn.

A worker that ends without being asked (it crashed, or was killed) turns the session `failed`
with the reason, so the run does not go on looking healthy. The parent going away (killed) is no
error of the child's: it stops quietly, without a BrokenPipe traceback, and Ctrl-C in a terminal
is the parent's to handle (the child ignores SIGINT and is stopped by the parent).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import multiprocessing
import signal
import threading
from collections import Counter
from typing import Any

from engine.connectors.base import StreamingSource
from engine.context import RunContext
from engine.lazy import lazy_module
from engine.tags import as_frame

pl = lazy_module("polars")

log = logging.getLogger(__name__)

BATCH, STATE, COUNTERS, ERROR, DONE, STOP = b"B", b"S", b"C", b"E", b"D", b"X"


def to_ipc(frame: pl.DataFrame) -> bytes:
    import pyarrow as pa

    table = frame.to_arrow()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes | memoryview) -> pl.DataFrame:
    import pyarrow as pa

    frame = pl.from_arrow(pa.ipc.open_stream(pa.py_buffer(data)).read_all())
    assert isinstance(frame, pl.DataFrame)
    return frame


class ProcessSource(StreamingSource):
    def __init__(self, connector: str, config: dict[str, Any], ctx: RunContext, name: str = "source"):
        super().__init__(None, ctx, name)  # type: ignore[arg-type]
        self.connector, self.raw_config = connector, config
        self.process: multiprocessing.process.BaseProcess | None = None
        self.error: str | None = None
        self._stopping = False

    def start(self, emit) -> None:
        self._stopping = False
        mp = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        self.conn, child = mp.Pipe(duplex=True)
        self.process = mp.Process(
            target=_child, args=(self.connector, self.raw_config, self.name, child), daemon=True
        )
        self.process.start()
        child.close()
        self.set_state("connecting", f"worker process {self.process.pid}")
        self._reader = threading.Thread(
            target=self._read, args=(emit,), name=f"worker-{self.name}", daemon=True
        )
        self._reader.start()

    def _read(self, emit) -> None:
        while True:
            try:
                message = self.conn.recv_bytes()
            except (EOFError, OSError):
                if self.error is None and not self._stopping:
                    process = self.process
                    code = process.exitcode if process is not None else None
                    if process is not None and code is None:
                        process.join(1)
                        code = process.exitcode
                    how = f" (exit code {code})" if code is not None else ""
                    self.fail(f"worker process ended{how}")
                return
            kind, body = message[:1], memoryview(message)[1:]
            if kind == BATCH:
                emit(from_ipc(body))
            elif kind == STATE:
                state, detail = json.loads(bytes(body))
                self.set_state(state, detail)
            elif kind == COUNTERS:
                self.counters = Counter(json.loads(bytes(body)))
            elif kind == ERROR:
                self.error = bytes(body).decode()
                self.fail(self.error)
            elif kind == DONE:
                return

    def stop(self) -> None:
        if self.process is None:
            return
        self._stopping = True
        with contextlib.suppress(OSError, ValueError):  # the worker may be gone already
            self.conn.send_bytes(STOP)
        self._reader.join(10)
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(2)
        self.conn.close()
        self.process = None
        self.set_state("stopped")


def _child(connector: str, config: dict[str, Any], name: str, conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    lock = threading.Lock()
    parent_gone = threading.Event()

    def send(kind: bytes, body: bytes) -> None:
        """To the parent; once it is gone (killed), everything is dropped quietly."""
        if parent_gone.is_set():
            return
        try:
            with lock:
                conn.send_bytes(kind + body)
        except (OSError, EOFError, ValueError) as exc:  # BrokenPipe: the parent went away
            parent_gone.set()
            log.debug("worker %s: the parent is gone (%s); stopping", name, exc)

    try:
        module, _, cls_name = connector.partition(":")
        cls = getattr(importlib.import_module(module), cls_name)
        source = cls.make_source(cls.SourceConfig.model_validate(config), RunContext(), name)
        source.on_state = lambda _n, state, detail: send(STATE, json.dumps([state, detail]).encode())
        source.start(lambda frame: send(BATCH, to_ipc(as_frame(frame))))  # a TagBatch too
    except Exception as exc:
        send(ERROR, f"{connector}: {type(exc).__name__}: {exc}".encode())
        return
    try:
        while conn.recv_bytes() != STOP:
            pass
    except (EOFError, OSError):
        pass  # the parent is gone: stop anyway
    source.stop()
    send(COUNTERS, json.dumps(dict(source.counters)).encode())
    send(DONE, b"")


__all__ = ["ProcessSource", "from_ipc", "to_ipc"]
