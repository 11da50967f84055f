"""The executor's reader and writer threads are reused across runs (engine/executor.py `_Threads`):
a run starts no OS thread when idle ones are there, a reader stuck in a read never holds up the
next run, a thread that raised is kept, and an idle thread ends after its idle time."""

from __future__ import annotations

import os
import threading
import uuid

import polars as pl
import pytest

from engine.connectors import registry
from engine.connectors.base import Connector, ConnectorConfig, Source
from engine.executor import _Task, _Threads
from engine.runner import run_pipeline
from engine.spec.validate import validate
from engine.workspace import Workspace
from tests.waiting import wait_for

GATES: dict[str, threading.Event] = {}


class GatedConfig(ConnectorConfig):
    key: str
    rows: int = 3


class GatedSource(Source):
    """Three rows; with a gate, its read first waits (up to 30 s) for the gate to open."""

    config: GatedConfig

    def read(self, limit=None, batch_rows=0):
        gate = GATES.get(self.config.key)
        if gate is not None:
            gate.wait(30)
        yield pl.DataFrame({"n": list(range(self.config.rows))})

    def schema(self):
        return pl.Schema({"n": pl.Int64})


class GatedConnector(Connector):
    connector_type = "test_gated"
    SourceConfig = GatedConfig

    @classmethod
    def make_source(cls, config, ctx, name):
        return GatedSource(config, ctx, name)


@pytest.fixture(autouse=True)
def _gated():
    registry.register(GatedConnector)
    yield
    for gate in GATES.values():
        gate.set()
    GATES.clear()


def doc(k: str, out: str) -> dict:
    return {
        "name": f"gated-{k}",
        "nodes": [
            {"id": "src", "kind": "source", "connector_type": "test_gated", "config": {"key": k}},
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["src"],
                "connector_type": "file",
                "config": {"path": out, "format": "csv"},
            },
        ],
    }


def _os_threads() -> set[int]:
    return {t.native_id for t in threading.enumerate() if t.native_id is not None}


def test_runs_reuse_their_reader_and_writer_threads(tmp_path):
    with Workspace(tmp_path / "data") as ws:
        for i in range(3):  # warm: the idle threads exist
            assert run_pipeline(validate(doc("w", f"w{i}.csv")), ws, base_dir=tmp_path)["status"] == "success"
        before = _os_threads()
        for i in range(20):
            record = run_pipeline(validate(doc("r", f"r{i}.csv")), ws, base_dir=tmp_path)
            assert record["status"] == "success" and record["rows_out"] == 3
        assert _os_threads() - before == set()  # 20 runs, no new OS thread
    assert (tmp_path / "r19.csv").read_text().splitlines() == ["n", "0", "1", "2"]


def test_a_reader_stuck_in_a_read_does_not_hold_up_the_next_run(tmp_path):
    stuck = uuid.uuid4().hex[:8]
    GATES[stuck] = threading.Event()
    with Workspace(tmp_path / "data") as ws:
        cancel = threading.Event()
        first: dict = {}
        runner = threading.Thread(
            target=lambda: first.update(
                run_pipeline(validate(doc(stuck, "a.csv")), ws, base_dir=tmp_path, cancel=cancel)
            )
        )
        runner.start()
        wait_for(lambda: any(t.name == "source-src" for t in threading.enumerate()), what="the stuck reader")
        cancel.set()
        runner.join(30)
        assert first["status"] == "cancelled"
        assert any(t.name == "source-src" for t in threading.enumerate())  # still in its read
        record = run_pipeline(validate(doc("free", "b.csv")), ws, base_dir=tmp_path)
        assert record["status"] == "success" and record["rows_out"] == 3
        GATES[stuck].set()
    assert not (tmp_path / "a.csv").exists()


def test_a_task_that_raises_keeps_its_thread_and_idle_threads_end():
    pool = _Threads()
    pool.IDLE_S = 0.2

    def boom() -> None:
        raise RuntimeError("a bug in a target")

    first = pool.start(_Task(boom, "pooled-test-boom"))
    first.join(10)
    assert not first.is_alive()
    ran: list[threading.Thread] = []
    names: list[str] = []
    second = pool.start(
        _Task(lambda: (ran.append(threading.current_thread()), names.append(ran[0].name)), "pooled-ok")
    )
    second.join(10)
    assert names == ["pooled-ok"] and ran[0].name == _Threads.IDLE_NAME  # named for its task meanwhile
    assert len(pool._idle) == 1  # one thread did both tasks
    wait_for(lambda: not ran[0].is_alive(), timeout=10, what="the idle thread to end")
    assert pool._idle == []


def test_a_task_not_started_is_not_alive():
    task = _Task(lambda: None, "never")
    assert not task.is_alive()
    task.join(0)  # returns at once


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_starts_its_own_threads():
    pool = _Threads()
    pool.start(_Task(lambda: None, "warm")).join(10)
    assert len(pool._idle) == 1  # an idle thread, which a forked child would not have
    pid = os.fork()
    if pid == 0:  # the child: its task must run on a thread of its own
        code = 1
        try:
            code = 0 if pool.start(_Task(lambda: None, "in-child")).done.wait(10) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
