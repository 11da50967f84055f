"""Checkpoints between the batches (issue 12, engine/store/tag_historian.py): a stream's COMMIT does
not checkpoint; the timer thread does, between two batches, once the WAL holds `checkpoint_wal`
bytes. The WAL stays bounded, a SIGKILL loses nothing committed, and other writers of the shared
connection keep working. Real DuckDB, real threads, a real SIGKILL of a subprocess."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from engine.connectors.historian_connector import HistorianConnector, HistorianSinkConfig
from engine.context import RunContext
from engine.store.historian import Historian
from engine.tags import TAG_SCHEMA
from tests.tag_history import python_child
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def rows(n: int, second: int, tags: int | None = None) -> pl.DataFrame:
    """n TAG_SCHEMA rows at T0 + second, tags t0..t{tags-1} (default: n of them)."""
    tags = tags or n
    at = T0 + timedelta(seconds=second)
    return (
        pl.DataFrame(
            {
                "timestamp": [at] * n,
                "tag": [f"t{i % tags}" for i in range(n)],
                "value": [float(second)] * n,
                "quality": ["good"] * n,
                "source": ["test"] * n,
                "received_at": [at] * n,
            }
        )
        .with_columns(
            pl.lit(None, TAG_SCHEMA[c]).alias(c) for c in ("value_text", "reason", "server_timestamp")
        )
        .select(TAG_SCHEMA.names())
        .cast(dict(TAG_SCHEMA))  # type: ignore[arg-type]
    )


def sink_on(historian: Historian, tmp_path: Path):
    sink = HistorianConnector.make_sink(
        HistorianSinkConfig(live_buffer=False), RunContext(data_dir=tmp_path, historian=historian), "h"
    )
    sink.open()
    sink.store.last_every = math.inf  # no write of `tag_last` in the way
    return sink


def commit(sink, frame: pl.DataFrame) -> None:
    """One micro-batch as the streaming runtime commits it: under the historian's batch lock."""
    with sink.commit_lock:
        sink.write(frame)
        sink.commit()


def count(path: Path) -> int:
    con = duckdb.connect(str(path))
    try:
        return con.execute("SELECT count(*) FROM tags").fetchall()[0][0]
    finally:
        con.close()


def test_a_streams_commit_does_not_checkpoint_and_the_timer_does_between_batches(tmp_path):
    """Three commits of 100,000 rows take the WAL past DuckDB's default threshold (16 MiB), which
    would checkpoint inside the third COMMIT; here the WAL only grows while the stream holds the
    batches' lock, and once it lets go the timer thread checkpoints (the WAL empties)."""
    historian = Historian(tmp_path / "historian.duckdb")
    sink = sink_on(historian, tmp_path)
    store = sink.store
    store.checkpoint_wal = 1 << 20
    sizes = []
    with sink.commit_lock:  # the timer's checkpoint waits for it, as for a stream's next batch
        for second in range(3):
            sink.write(rows(100_000, second))
            sink.commit()
            sizes.append(store.wal_bytes())
    assert sizes[-1] > 16 * 2**20, sizes
    assert sizes == sorted(sizes), sizes  # no COMMIT checkpointed
    wait_for(lambda: store.newest.checkpoints >= 1, timeout=60, what="the timer's checkpoint")
    assert store.wal_bytes() < store.checkpoint_wal
    commit(sink, rows(10, 3))
    sink.close()
    historian.close()
    assert count(tmp_path / "historian.duckdb") == 300_010


def test_the_wal_stays_bounded_over_many_commits(tmp_path):
    """Sixty commits of 5,000 rows (a long stream in small): the timer checkpoints again and again,
    and the WAL never holds more than a few commits past `checkpoint_wal`."""
    historian = Historian(tmp_path / "historian.duckdb")
    sink = sink_on(historian, tmp_path)
    store = sink.store
    store.checkpoint_wal = 256 * 1024
    one = None
    largest = 0
    for second in range(60):
        before = store.wal_bytes()
        commit(sink, rows(5_000, second, tags=1_000))
        one = one or store.wal_bytes() - before
        largest = max(largest, store.wal_bytes())
    wait_for(
        lambda: store.newest.checkpoints >= 3 and store.wal_bytes() < store.checkpoint_wal,
        timeout=60,
        what="the last checkpoint",
    )
    # 60 commits without a checkpoint would be 60 of them; the timer may lag a few on a loaded box
    assert largest < store.checkpoint_wal + 20 * one, (largest, one)
    sink.close()
    historian.close()
    assert count(tmp_path / "historian.duckdb") == 300_000


def test_other_writers_of_the_connection_keep_their_transactions(tmp_path):
    """Another cursor of the shared connection holds a transaction open across the timer's
    checkpoints: one that only inserts (a run's rejects) does not stop them (while the stream's
    commits since it began only inserted too) and commits after; one that updates makes DuckDB
    refuse them (recorded, the stream goes on) until it commits."""
    path = tmp_path / "historian.duckdb"
    historian = Historian(path)
    sink = sink_on(historian, tmp_path)
    store = sink.store
    store.checkpoint_wal = 256 * 1024
    # The first commit asks for the rollup, whose advance moves its state (an UPDATE): DuckDB refuses
    # a checkpoint while a transaction begun before a committed update is open, so that comes first.
    commit(sink, rows(10, 0))
    wait_for(lambda: store.newest.rollup_due is None, timeout=60, what="the rollup's advance")
    other = historian.cursor()
    other.execute("CREATE TABLE side (x BIGINT)")
    other.execute("INSERT INTO side VALUES (0)")
    other.execute("BEGIN TRANSACTION")
    other.execute("INSERT INTO side SELECT range FROM range(1, 1001)")  # inserts only
    done = store.newest.checkpoints
    commit(sink, rows(20_000, 0))
    wait_for(lambda: store.newest.checkpoints > done, timeout=60, what="a checkpoint beside an inserting one")
    other.execute("COMMIT")
    other.execute("BEGIN TRANSACTION")
    other.execute("UPDATE side SET x = x + 1 WHERE x = 0")  # updates: DuckDB refuses checkpoints
    done = store.newest.checkpoints
    commit(sink, rows(20_000, 1))
    wait_for(lambda: store.newest.checkpoint_error, timeout=60, what="the refused checkpoint")
    assert store.newest.checkpoints == done
    assert "CHECKPOINT" in store.newest.checkpoint_error
    other.execute("COMMIT")
    commit(sink, rows(20_000, 2))  # the next commit asks again
    wait_for(lambda: store.newest.checkpoints > done, timeout=60, what="the checkpoint after it committed")
    other.close()
    sink.close()
    historian.close()
    con = duckdb.connect(str(path))
    try:
        assert con.execute("SELECT count(*), sum(x) FROM side").fetchall() == [(1001, 500501)]
        assert con.execute("SELECT count(*) FROM tags").fetchall() == [(60_010,)]
    finally:
        con.close()


KILLED = """
import sys, json
sys.path.insert(0, {root!r})
from pathlib import Path
from engine.store.historian import Historian
from tests.engine.test_tag_checkpoint import commit, rows, sink_on
from tests.waiting import wait_for
historian = Historian(Path({path!r}))
sink = sink_on(historian, Path({tmp!r}))
store = sink.store
store.checkpoint_wal = 256 * 1024
for second in range(10):
    commit(sink, rows(5_000, second, tags=1_000))
wait_for(lambda: store.newest.checkpoints >= 1, timeout=60, what="a checkpoint")
with sink.commit_lock:  # these stay in the WAL: no checkpoint until the lock is let go
    for second in range(10, 13):
        sink.write(rows(5_000, second, tags=1_000))
        sink.commit()
    print(json.dumps({{"checkpoints": store.newest.checkpoints, "wal": store.wal_bytes()}}), flush=True)
    sys.stdin.read()  # killed here
"""


def test_a_start_after_sigkill_has_every_committed_row(tmp_path):
    """A writer killed with rows checkpointed and rows only in the WAL: the next open has them all,
    and `tag_last` holds the newest of each tag."""
    path = tmp_path / "historian.duckdb"
    script = KILLED.format(root=str(ROOT), path=str(path), tmp=str(tmp_path))
    proc = python_child(script)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line, proc.stderr.read()  # type: ignore[union-attr]
        state = json.loads(line)
    finally:
        proc.kill()  # SIGKILL: no close, no checkpoint at exit
        proc.communicate()
    assert state["checkpoints"] >= 1 and state["wal"] > 0
    from engine.store.tag_historian import TagHistorian

    historian = Historian(path)
    try:
        store = TagHistorian(historian)
        last = dict(store.last_values().select("tag", "value").rows())
    finally:
        historian.close()
    assert count(path) == 13 * 5_000
    assert last == {f"t{i}": 12.0 for i in range(1_000)}
