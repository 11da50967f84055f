"""The rollup's advance between the batches (issue 12, engine/store/tag_historian.py): a stream's
commit asks for it and the timer thread rolls the minute up one slice of tags a transaction, each
between two batches. Batches commit between the slices, a batch's late rows for tags whose slice
is done are not lost, readers get the raw rows' answer all the time, and a SIGKILL between two
slices leaves nothing counted twice. Real DuckDB, real threads, a real SIGKILL of a subprocess."""

from __future__ import annotations

import select
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
from polars.testing import assert_frame_equal

from engine.connectors.historian_connector import HistorianConnector, HistorianSinkConfig
from engine.context import RunContext
from engine.store import tag_rollup
from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian
from engine.tags import TagBatchBuilder
from tests.tag_history import python_child
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 1, 1, tzinfo=UTC)
TAGS = [f"t{i}" for i in range(7)]
STATS = ["avg", "min", "max", "first", "last", "sum", "count"]


def batch(second: int, tags=TAGS, value: float | None = None) -> pl.DataFrame:
    builder = TagBatchBuilder("s")
    for i, tag in enumerate(tags):
        v = float(second * (i + 1)) if value is None else value
        builder.add(
            tag, v, timestamp=T0 + timedelta(seconds=second), quality="bad" if second % 50 == 7 else "good"
        )
    return builder.take()


class PausedAdvance(TagHistorian):
    """A historian whose advance stops between its first and second slice while `hold` is set."""

    def __init__(self, historian: Historian):
        super().__init__(historian)
        # the advance from raw rows, slice by slice: as for minutes the writer did not keep whole
        # (engine.store.tag_rollup_memory: rows an earlier process wrote, a stream's TagBatch)
        self.kept = None
        self.hold, self.paused, self.go = threading.Event(), threading.Event(), threading.Event()
        self.threads: set[int] = set()

    def _between_slices(self) -> None:
        self.threads.add(threading.get_ident())
        advance = self.newest.advance
        if self.hold.is_set() and advance is not None and advance.done >= 1:
            self.paused.set()
            if not wait_for(self.go.is_set, timeout=60, what="the test letting the advance go on"):
                raise TimeoutError("the test never let the advance go on")


def stream_commit(store: TagHistorian, cur, frame: pl.DataFrame) -> None:
    """One micro-batch as a stream's historian destination commits it (under the batches' lock)."""
    with store.newest.write_lock:
        cur.execute("BEGIN TRANSACTION")
        store.insert(cur, frame)
        cur.execute("COMMIT")
        store.committed(cur)


def rolled_up_to(store: TagHistorian):
    cur = store.cursor()
    try:
        return cur.execute(tag_rollup.rolled_up_to_sql()).fetchall()[0][0]
    finally:
        cur.close()


def same_as_raw(store: TagHistorian, minutes: int = 4, start: datetime = T0) -> pl.DataFrame:
    """The 1-minute buckets from the rollup equal the raw rows' (`minutes` from `start`)."""
    end = start + timedelta(minutes=minutes)
    rolled = store.query("*", start, end, bucket="1m", statistics=STATS).sort("tag", "bucket")
    raw = store.query("*", start, end, bucket="1m", statistics=STATS, use_rollup=False, use_cache=False)
    assert_frame_equal(rolled, raw.sort("tag", "bucket"), check_exact=False)
    return rolled


def minute_of(second: int) -> int:
    return int((T0 + timedelta(seconds=second)).timestamp()) // 60


def test_a_streams_commit_leaves_the_advance_to_the_timer_thread(tmp_path):
    historian = Historian(tmp_path / "h.duckdb")
    store = PausedAdvance(historian)
    cur = store.cursor()
    try:
        stream_commit(store, cur, batch(10))
        with store.newest.write_lock:  # as a stream's next batch: the advance waits for it
            stream_commit(store, cur, batch(70))  # a new minute: the one before is due
            assert rolled_up_to(store) in (None, minute_of(10))  # not in the commit's transaction
        wait_for(lambda: rolled_up_to(store) == minute_of(70), timeout=60, what="the timer's advance")
        assert threading.get_ident() not in store.threads
        same_as_raw(store)
    finally:
        cur.close()
        historian.close()


def test_batches_commit_between_the_slices_and_their_late_rows_count(tmp_path, monkeypatch):
    """The advance stops after its first slice: a stream's batches commit meanwhile (late rows of the
    minute being rolled up, for tags of the slice done and of the slices to come, and rows of a new
    minute), readers get the raw answer, and after the last slice too."""
    monkeypatch.setattr(tag_rollup, "TAGS_PER_SLICE", 2)  # 7 tags: 4 slices
    historian = Historian(tmp_path / "h.duckdb")
    store = PausedAdvance(historian)
    store.newest.rollup_tags = len(TAGS)
    cur = store.cursor()
    try:
        for second in range(0, 120, 10):  # minutes 0 and 1
            stream_commit(store, cur, batch(second))
        wait_for(lambda: rolled_up_to(store) == minute_of(110), timeout=60, what="the first advances")
        store.hold.set()
        stream_commit(store, cur, batch(125))  # minute 2: minute 1 is due
        assert store.paused.wait(timeout=60), "the advance never reached its second slice"
        advance = store.newest.advance
        assert advance is not None and advance.done == 1 and advance.slices == 4
        stream_commit(store, cur, batch(115, value=1000.0))  # late for minute 1: every slice's tags
        stream_commit(store, cur, batch(130))
        assert rolled_up_to(store) == minute_of(110)  # the advance is still where it stopped
        same_as_raw(store)
        store.go.set()
        wait_for(lambda: rolled_up_to(store) == minute_of(125), timeout=60, what="the rest of the advance")
        rolled = same_as_raw(store)
        assert rolled.get_column("count").sum() + rolled.get_column("bad_count").sum() == 7 * 15
    finally:
        store.go.set()
        cur.close()
        historian.close()


KILLED = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from engine.connectors.historian_connector import HistorianConnector, HistorianSinkConfig
from engine.context import RunContext
from engine.store import tag_rollup
from engine.store.historian import Historian
from tests.engine.test_tag_rollup_slices import PausedAdvance, batch, minute_of, rolled_up_to, stream_commit
from tests.waiting import wait_for
tag_rollup.TAGS_PER_SLICE = 2
historian = Historian(Path({path!r}))
store = PausedAdvance(historian)
store.newest.rollup_tags = 7
cur = store.cursor()
for second in range(0, 120, 10):
    stream_commit(store, cur, batch(second))
wait_for(lambda: rolled_up_to(store) == minute_of(110), timeout=60, what="the first advances")
store.hold.set()
stream_commit(store, cur, batch(125))
assert store.paused.wait(timeout=60)
stream_commit(store, cur, batch(115, value=1000.0))
print("paused", store.newest.advance.done, flush=True)
sys.stdin.read()  # killed here
"""


def test_a_sigkill_between_two_slices_counts_nothing_twice(tmp_path):
    path = tmp_path / "h.duckdb"
    script = KILLED.format(root=str(ROOT), path=str(path))
    proc = python_child(script)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)  # a hung writer fails, not hangs
        assert ready, "the writer never reached its second slice"
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("paused 1"), line + proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.kill()  # SIGKILL: one slice of the advance committed, the others not
        proc.communicate()
    con = duckdb.connect(str(path))
    try:
        upto = con.execute("SELECT rolled_up_to FROM tag_minutes_state").fetchall()[0][0]
        left = con.execute(f"SELECT count(*) FROM tag_minutes WHERE minute >= {upto}").fetchall()[0][0]
    finally:
        con.close()
    assert upto == minute_of(110) and left > 0  # the slice the kill left behind
    historian = Historian(path)
    try:
        store = TagHistorian(historian)
        assert rolled_up_to(store) == minute_of(110)
        same_as_raw(store)
        store.append(batch(185))  # minute 3: minutes 1 and 2 rolled up again, from the raw rows
        assert rolled_up_to(store) == minute_of(185)
        rolled = same_as_raw(store)
        assert rolled.get_column("count").sum() + rolled.get_column("bad_count").sum() == 7 * 15
    finally:
        historian.close()


def test_a_sinks_close_waits_for_the_advance_under_way(tmp_path, monkeypatch):
    """A stream stops while the timer's advance is between two slices: the sink's close lets it
    finish before it returns (the historian is closed next, and DuckDB cannot close a connection
    while a cursor of it runs a statement), so the rollup is where the batches asked for."""
    monkeypatch.setattr(tag_rollup, "TAGS_PER_SLICE", 2)
    path = tmp_path / "h.duckdb"
    historian = Historian(path)
    sink = HistorianConnector.make_sink(
        HistorianSinkConfig(live_buffer=False), RunContext(data_dir=tmp_path, historian=historian), "h"
    )
    sink.open()
    store = sink.store = PausedAdvance(historian)
    store.newest.rollup_tags = len(TAGS)

    def commit(frame: pl.DataFrame) -> None:
        with sink.commit_lock:
            sink.write(frame)
            sink.commit()

    for second in range(0, 120, 10):
        commit(batch(second))
    wait_for(lambda: rolled_up_to(store) == minute_of(110), timeout=60, what="the first advances")
    store.hold.set()
    commit(batch(125))
    assert store.paused.wait(timeout=60), "the advance never reached its second slice"
    settling, settle = threading.Event(), store.newest.settle

    def watched_settle(*args, **kwargs) -> None:
        settling.set()
        settle(*args, **kwargs)

    store.newest.settle = watched_settle  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def close() -> None:
        try:
            sink.close()
            historian.close()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    closing = threading.Thread(target=close)
    closing.start()
    # the advance goes on once the close waits for it (or, were it not waited for, once closed)
    wait_for(lambda: settling.is_set() or not closing.is_alive(), timeout=60, what="the close")
    store.go.set()
    closing.join(timeout=120)
    assert not closing.is_alive() and errors == []
    assert store.newest.rollup_error is None
    historian = Historian(path)
    try:
        reopened = TagHistorian(historian)
        assert rolled_up_to(reopened) == minute_of(125)
        same_as_raw(reopened)
    finally:
        historian.close()
