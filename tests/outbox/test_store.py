"""The outbox store: durability under SIGKILL, a corrupt file set aside, the byte cap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta

import polars as pl
import pytest

from engine.errors import ConnectorError
from engine.outbox.store import OutboxStore, outbox_path
from tests.outbox.conftest import commit, make_ctx, tags
from tests.outbox.upstream import FakeRemote
from tests.waiting import wait_for

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from engine.outbox.manager import OutboxManager
    from engine.outbox.config import RemoteSinkConfig
    from engine.outbox.sinks import remote_sink
    from tests.outbox.conftest import tags, make_ctx
    from tests.outbox.upstream import FakeRemote

    manager = OutboxManager(Path(sys.argv[1]))
    manager.register = lambda *a, **k: None
    i = 0
    while True:
        sink = remote_sink(FakeRemote, RemoteSinkConfig(), make_ctx(manager), "central")
        sink.open(); sink.write(tags(100, start=i * 100)); sink.close()
        print(i, flush=True)  # accepted: fsync'ed
        i += 1
    """
)


def test_accepted_batches_survive_sigkill_of_the_writer(tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data)], env=env, stdout=subprocess.PIPE, text=True
    )
    acked = -1
    try:
        while acked < 30:
            line = proc.stdout.readline()
            assert line, "writer ended early"
            acked = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    store = OutboxStore(outbox_path(data, "line1", "central"))
    values: list[float] = []
    for batch in store.read(max_rows=10**9, max_batches=10**6):
        values.extend(batch.table.column("value").to_pylist())
    status = store.status()
    store.close()
    accepted = set(range((acked + 1) * 100))
    assert accepted <= {int(v) for v in values}  # every acknowledged record is there
    assert len(values) == len(set(values))  # whole batches only, each once
    assert status["appended_records"] == len(values)


def _corrupt(path):
    with open(path, "r+b") as fh:
        fh.seek(0)
        fh.write(b"this is not a database" * 50)


def test_corrupt_outbox_is_set_aside_and_replaced(outbox, upstream):
    upstream.down = True
    commit(outbox, tags(10))
    path = outbox_path(outbox.data_dir, "line1", "central")
    outbox.close()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(path) + suffix):
            os.remove(str(path) + suffix)
    _corrupt(path)
    store = OutboxStore(path)  # no exception: set aside, a new one
    assert store.set_aside is not None and store.set_aside.exists()
    status = store.status()
    assert status["corrupt_set_aside"] == 1 and status["pending_records"] == 0
    store.close()
    again = OutboxStore(path)  # the next start is clean: no loop of set-asides
    assert again.set_aside is None and again.status()["corrupt_set_aside"] == 1
    again.close()


def test_torn_wal_tail_keeps_the_committed_batches(outbox, upstream):
    upstream.down = True
    commit(outbox, tags(10))
    commit(outbox, tags(10, start=10))
    path = outbox_path(outbox.data_dir, "line1", "central")
    with open(str(path) + "-wal", "ab") as fh:  # a torn frame after the last commit
        fh.write(os.urandom(3000))
    store = OutboxStore(path)
    assert store.set_aside is None and store.pending()[1] == 20
    store.close()


def test_drop_oldest_holds_the_cap_and_writes_gap_records(outbox, upstream):
    upstream.down, upstream.retry_after = True, 0.05
    cap = 1024 * 1024
    store = outbox.store("line1", "central")
    for i in range(60):
        commit(outbox, tags(2000, start=i * 2000, tag_count=8), max_bytes=cap)
        assert store.status()["file_bytes"] <= cap * 1.05  # the file and its WAL, from the first commit on
    status = store.status()
    assert cap * 0.95 <= status["pending_bytes"] <= cap * 1.05
    assert status["dropped_records"] > 0
    assert status["appended_records"] - status["dropped_records"] == status["pending_records"]
    db_file = outbox_path(outbox.data_dir, "line1", "central").stat().st_size
    assert cap * 0.95 <= db_file <= status["file_bytes"] <= cap * 1.05, (db_file, status["file_bytes"])
    gaps = [
        b.table.filter(pl.Series([r == "dropped" for r in b.table.column("reason").to_pylist()]).to_arrow())
        for b in store.read(max_rows=10**9, max_batches=10**6)
    ]
    gap_rows = [r for g in gaps for r in g.to_pylist()]
    assert gap_rows and all(r["quality"] == "bad" and r["value"] is None for r in gap_rows)
    assert {r["tag"] for r in gap_rows} == {f"t{k}" for k in range(8)}
    upstream.down = False
    wait_for(lambda: store.pending()[1] == 0, timeout=60, what="drained")
    assert any(r[5] == "dropped" for r in upstream.rows())


def test_a_dropped_batch_of_gap_records_keeps_every_hole_marked(outbox):
    """A full outbox drops a batch and the head of the next: one gap record per tag for each, in
    one new batch. When that batch grows old and is dropped in turn, every mark is written again:
    reduced to the earliest per tag, the second hole lost its mark whenever the first was refused
    upstream (its key is the first dropped record's, which may have arrived: a delivery with no
    answer). Found by tests/upstream/test_disk_cap.py under load."""
    from engine.outbox.config import RemoteSinkConfig
    from engine.outbox.sinks import remote_sink

    sink = remote_sink(FakeRemote, RemoteSinkConfig(), make_ctx(outbox), "central")
    sink.open()
    try:
        whole, head = tags(8, start=0, tag_count=2), tags(2, start=8, tag_count=2)  # t0: 0..6, 8; t1: 1..7, 9
        first = sink._gap([whole.to_arrow(), head.to_arrow()], first_rec=100)
        again = sink._gap([first], first_rec=200)
    finally:
        sink.close()

    def marks(table) -> list[tuple[str, int]]:
        frame = pl.from_arrow(table)
        assert set(frame["quality"]) == {"bad"} and set(frame["reason"]) == {"dropped"}
        start = tags(1)["timestamp"][0]
        return sorted(
            (t, (ts - start) // timedelta(milliseconds=1))
            for t, ts in zip(frame["tag"], frame["timestamp"], strict=True)
        )

    assert marks(first) == [("t0", 0), ("t0", 8), ("t1", 1), ("t1", 9)]
    assert marks(again) == marks(first)
    assert len(set(pl.from_arrow(again)["_key"])) == 4  # keyed like the records they stand for


def test_block_waits_for_room_instead_of_dropping(outbox, upstream):
    upstream.down, upstream.retry_after = True, 0.05
    cap = 1024 * 1024
    store = outbox.store("line1", "central")
    done = threading.Event()
    errors: list[BaseException] = []

    def writer():
        try:
            for i in range(40):
                commit(outbox, tags(2000, start=i * 2000), max_bytes=cap, overflow="block")
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    wait_for(
        lambda: store.pending()[2] > cap * 0.8 and store.status()["link_state"] == "down", what="nearly full"
    )
    assert not done.is_set()
    assert store.pending()[2] <= cap
    upstream.down = False
    assert done.wait(60) and not errors
    wait_for(lambda: store.pending()[1] == 0, what="drained")
    assert store.status()["dropped_records"] == 0 and upstream.count() == 80_000


@pytest.mark.parametrize("overflow", ["block", "drop_oldest"])
def test_a_run_bigger_than_the_cap_fails_in_one_line(outbox, upstream, overflow):
    upstream.down = True
    with pytest.raises(ConnectorError, match="max_bytes"):
        commit(outbox, tags(200_000), max_bytes=1024 * 1024, overflow=overflow)
    assert outbox.store("line1", "central").status()["dropped_records"] == 0


def test_a_failed_run_leaves_nothing(outbox, upstream):
    from engine.outbox.config import RemoteSinkConfig
    from engine.outbox.sinks import remote_sink

    upstream.down = True
    sink = remote_sink(FakeRemote, RemoteSinkConfig(), make_ctx(outbox), "central")
    sink.open()
    sink.write(tags(10))
    sink.write(tags(10, start=10))
    sink.write(tags(10, start=20))
    sink.abort()
    store = outbox.store("line1", "central")
    assert store.pending()[1] == 0 and store.status()["appended_records"] == 0
    sink = remote_sink(FakeRemote, RemoteSinkConfig(), make_ctx(outbox), "central")
    sink.open()
    sink.write(tags(10))
    sink.write(tags(10, start=10))
    sink.close()
    assert store.pending()[1] == 20 and store.status()["appended_records"] == 20


def test_a_reader_beside_the_service_never_sets_a_file_aside(outbox, upstream, capsys):
    from app.cli import main

    upstream.down = True
    commit(outbox, tags(10))
    path = outbox_path(outbox.data_dir, "line1", "central")
    outbox.close()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(path) + suffix):
            os.remove(str(path) + suffix)
    _corrupt(path)
    assert main(["outbox", "status", "--json", "--data-dir", str(outbox.data_dir)]) == 0
    out = capsys.readouterr().out
    assert '"link_state": "corrupt"' in out and "sets it aside when it next starts" in out
    assert path.exists() and not list(path.parent.glob("*.corrupt-*"))  # left for its owner


def test_a_locked_outbox_is_not_taken_for_a_corrupt_one(tmp_path):
    import sqlite3

    from engine.outbox import store as store_module

    path = tmp_path / "x--y.sqlite"
    OutboxStore(path).close()
    assert not store_module._is_corruption(sqlite3.OperationalError("database is locked"))
    assert store_module._is_corruption(sqlite3.DatabaseError("file is not a database"))
    assert store_module._is_corruption(sqlite3.DatabaseError("database disk image is malformed"))


def test_a_full_outbox_never_drops_the_batches_being_delivered(tmp_path):
    """Batches the forwarder has read (`hold`) are in flight: a commit over the cap drops other,
    older-than-new batches instead, so no record counts as both dropped and forwarded."""
    import pyarrow as pa

    store = OutboxStore(tmp_path / "o.sqlite")
    try:

        def batch(i: int):
            def make(first_rec: int) -> pa.Table:
                keys = [f"k{first_rec + j}" for j in range(500)]
                return pa.table({"_key": keys, "payload": [os.urandom(64).hex() for _ in keys]})

            return (make, 500)

        for i in range(4):
            store.commit(batch(i), None)
        held = store.read(max_rows=500, hold=True)  # the oldest batch, being delivered
        assert len(held) == 1
        cap = store.pending()[2] + 10  # room for nothing more: every new batch must drop one
        for i in range(4, 10):
            store.commit(batch(i), None, max_bytes=cap, drop_oldest=True)
        remaining = [b.seq for b in store.read(max_rows=10**9, max_batches=10**6)]
        assert held[0].seq in remaining  # never dropped while in flight
        store.delivered([held[0].seq], held[0].rows)
        status = store.status()
        assert status["forwarded_records"] == 500 and status["dropped_records"] > 0
        assert (
            status["appended_records"] - status["dropped_records"] - status["forwarded_records"]
            == status["pending_records"]
        )
        # a failed delivery releases its batches: they may be dropped again
        again = store.read(max_rows=500, hold=True)
        store.release([b.seq for b in again])
        store.commit(batch(10), None, max_bytes=store.pending()[2] + 10, drop_oldest=True)
        assert again[0].seq not in [b.seq for b in store.read(max_rows=10**9, max_batches=10**6)]
    finally:
        store.close()
