"""The write of `tag_last` goes on between the batches (issue 12, engine/store/tag_newest.py): it
holds the batches' lock for one slice at a time, and a batch committed (or still open) while it
runs is lost neither from `tag_last` nor from the crash marker. Real DuckDB, real threads; the kills are a real SIGKILL
of a subprocess."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import duckdb

from engine.connectors.historian_connector import HistorianConnector, HistorianSinkConfig
from engine.context import RunContext
from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian
from tests.engine.test_tag_last_promise import ROOT, batch, last, stored_table, table_rows
from tests.tag_history import python_child
from tests.waiting import wait_for


class PausedWrite(TagHistorian):
    """A historian whose writes of `tag_last` stop before their first slice until `go` is set
    (`inside` says one is there): what a batch meets between two slices of a write."""

    def __init__(self, historian: Historian):
        super().__init__(historian)
        self.inside, self.go = threading.Event(), threading.Event()

    def _between_batches(self, may_give_way: bool = False):
        self.inside.set()
        if not self.go.wait(timeout=120):
            raise TimeoutError("the test never let the write go on")
        return super()._between_batches(may_give_way)


def marker(path_or_store) -> tuple:
    """(rows, earliest since) of the crash marker table."""
    sql = "SELECT count(*), min(since) FROM tag_last_pending"
    if isinstance(path_or_store, Path):
        con = duckdb.connect(str(path_or_store))
        try:
            return con.execute(sql).fetchall()[0]
        finally:
            con.close()
    cur = path_or_store.cursor()
    try:
        return cur.execute(sql).fetchall()[0]
    finally:
        cur.close()


def sink_on(historian: Historian, tmp_path: Path):
    sink = HistorianConnector.make_sink(
        HistorianSinkConfig(live_buffer=False), RunContext(data_dir=tmp_path, historian=historian), "h"
    )
    sink.open()
    sink.store.last_every = math.inf  # only the test writes the table
    return sink


def test_a_batch_commits_while_a_write_of_the_table_runs(tmp_path):
    """The write is stopped inside; a batch (holding the batches' lock, as a stream's micro-batch)
    commits all the same. Readers in the process see both; the write leaves the batch's rows kept
    and its marker row in place; the next write puts them in the table and clears the marker."""
    historian = Historian(tmp_path / "historian.duckdb")
    store = PausedWrite(historian)
    store.last_every = math.inf
    store.go.set()
    store.append(batch([("a", 1.0, 10), ("b", 2.0, 10)]))
    store.go.clear()
    writer = threading.Thread(target=store.write_last, kwargs={"may_give_way": True})  # the timer's
    writer.start()
    try:
        assert store.inside.wait(timeout=60), "the write never started"
        stored = threading.Event()
        other = TagHistorian(historian)
        other.last_every = math.inf

        def commit_beside() -> None:
            other.append(batch([("a", 3.0, 20), ("b", 0.5, 5), ("c", 4.0, 10)]))  # b: late and older
            stored.set()

        beside = threading.Thread(target=commit_beside)
        beside.start()
        assert stored.wait(timeout=60), "the batch waited for the write of tag_last"
        beside.join()
        assert last(other) == {"a": 3.0, "b": 2.0, "c": 4.0}  # the rows being written, and the new
    finally:
        store.go.set()
        writer.join()
    assert stored_table(store) == {"a": 1.0, "b": 2.0}  # the write took only what came before it
    assert last(store) == {"a": 3.0, "b": 2.0, "c": 4.0}
    rows, since = marker(store)
    assert rows >= 1 and since is not None and since <= batch([("b", 0.5, 5)])["timestamp"][0]
    store.write_last()
    assert stored_table(store) == {"a": 3.0, "b": 2.0, "c": 4.0}
    assert marker(store)[0] == 0
    assert store.newest.empty
    historian.close()


def test_a_write_that_must_happen_now_under_the_batches_lock_makes_the_one_under_way_give_way(tmp_path):
    """A write under way waits for the batches' lock between its slices while the holder of that
    lock must write now (`append` when due, retention): the first gives way, the second writes
    everything, neither waits for the other."""
    historian = Historian(tmp_path / "historian.duckdb")
    store = TagHistorian(historian)
    store.last_every = math.inf
    store.append(batch([("a", 1.0, 10), ("b", 2.0, 10)]))
    errors: list[str] = []

    def write() -> None:
        try:
            store.write_last(may_give_way=True)  # as the timer's write
        except Exception as exc:  # reported by the assertion below
            errors.append(repr(exc))

    other = TagHistorian(historian)
    other.last_every = 0.0  # its append writes the table itself
    finished = threading.Event()

    def append_holding_the_lock() -> None:
        with store.newest.write_lock:  # as a stream's micro-batch holds it
            writer.start()
            wait_for(lambda: store.newest._writing is not None, timeout=60, what="the write to take its rows")
            other.append(batch([("a", 3.0, 20), ("c", 4.0, 10)]))
        finished.set()

    writer = threading.Thread(target=write)
    holder = threading.Thread(target=append_holding_the_lock)
    holder.start()
    assert finished.wait(timeout=120), "the two writes waited for each other"
    holder.join()
    writer.join(timeout=120)
    assert not writer.is_alive()
    assert errors == []
    assert stored_table(store) == {"a": 3.0, "b": 2.0, "c": 4.0}
    assert marker(store)[0] == 0
    assert store.newest.empty
    historian.close()


def test_a_write_clears_no_marker_an_open_transaction_relies_on(tmp_path):
    """A stream's transaction stores a batch the committed marker already covers (so it adds no
    marker row), a write of the table runs before it commits: the write must not clear that
    marker, since the batch's rows are not among the ones it wrote."""
    historian = Historian(tmp_path / "historian.duckdb")
    store = TagHistorian(historian)
    store.last_every = math.inf
    store.append(batch([("a", 1.0, 10)]))  # committed and marked from second 10 on
    sink = sink_on(historian, tmp_path)
    sink.write(batch([("b", 2.0, 20)]))  # covered by the marker: no row of its own
    store.write_last()  # writes a only
    assert stored_table(store) == {"a": 1.0}
    assert marker(store)[0] >= 1  # still there: the open transaction relies on it
    sink.commit()
    assert last(store) == {"a": 1.0, "b": 2.0}
    store.write_last()
    assert stored_table(store) == {"a": 1.0, "b": 2.0}
    assert marker(store)[0] == 0
    sink.close()
    historian.close()


def test_a_rolled_back_transaction_holds_no_marker_back(tmp_path):
    historian = Historian(tmp_path / "historian.duckdb")
    store = TagHistorian(historian)
    store.last_every = math.inf
    sink = sink_on(historian, tmp_path)
    sink.write(batch([("a", 1.0, 10)]))
    sink.abort()
    store.append(batch([("b", 2.0, 10)]))
    store.write_last()
    assert stored_table(store) == {"b": 2.0}
    assert marker(store)[0] == 0
    historian.close()


def test_a_streams_commit_hands_the_due_write_to_the_timer_thread(tmp_path):
    """A sink's commit that finds the table due does not write it in the stream's thread: the
    commit returns with the rows kept, and the timer thread writes them."""
    historian = Historian(tmp_path / "historian.duckdb")
    sink = sink_on(historian, tmp_path)
    store = sink.store
    store.last_every = 5.0
    entered = threading.Event()
    stream_thread = threading.get_ident()
    threads: list[int] = []
    original = store._write_slice

    def watched(*args) -> None:
        threads.append(threading.get_ident())
        entered.set()
        original(*args)

    store._write_slice = watched  # type: ignore[method-assign]
    store.newest.last_write = time.monotonic() - 5.0  # due
    sink.write(batch([("a", 1.0, 10)]))
    sink.commit()
    assert wait_for(lambda: stored_table(store) == {"a": 1.0}, timeout=60, what="the timer's write")
    assert threads and stream_thread not in threads
    sink.close()
    historian.close()


def test_batches_and_writes_of_the_table_all_the_time_lose_nothing_and_never_conflict(tmp_path):
    """A thread writes the table without pause while a stream commits rounds through the sink and a
    reader asks all the time: no write and no batch fails (DuckDB write-write conflicts between
    the cursors, the 32 MB memory limit), every answer holds each tag at least at the round
    committed before it asked, and after the last write the table and the marker are exact."""
    historian = Historian(tmp_path / "historian.duckdb")
    sink = sink_on(historian, tmp_path)
    tags = [f"t{i}" for i in range(3000)]
    committed = [-1]
    errors: list[str] = []
    problems: list[str] = []
    done = threading.Event()
    writes = [0]

    def write() -> None:
        store = TagHistorian(historian)
        store.write_slice = 500  # six slices a write: batches commit between them
        while not done.is_set():
            try:
                store.write_last(may_give_way=True)  # as the timer's write
                writes[0] += 1
            except Exception as exc:  # reported by the assertion below
                errors.append(repr(exc))
                return

    def read() -> None:
        store = TagHistorian(historian)
        while not done.is_set():
            floor = committed[0]
            got = dict(store.last_values().select("tag", "value").rows())
            if floor >= 0 and (len(got) != len(tags) or min(got.values()) < floor):
                problems.append(
                    f"after round {floor}: {len(got)} tags, min {min(got.values(), default=None)}"
                )

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    try:
        for second in range(30):
            for half in (tags[:1500], tags[1500:]):  # two batches a commit, as a grouped commit
                sink.write(batch([(t, float(second), second) for t in half]))
            sink.commit()
            committed[0] = second
        wait_for(lambda: writes[0] >= 3 or errors, timeout=60, what="writes of the table")
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert problems == []
    assert writes[0] >= 3
    sink.close()  # writes what the thread had not
    historian.close()
    path = tmp_path / "historian.duckdb"
    assert table_rows(path) == dict.fromkeys(tags, 29.0)
    assert marker(path)[0] == 0


KILLED = """
import sys, math, json, threading
sys.path.insert(0, {root!r})
from pathlib import Path
from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian
from tests.engine.test_tag_last_concurrent import PausedWrite, sink_on
from tests.engine.test_tag_last_promise import batch
historian = Historian(Path({path!r}))
store = PausedWrite(historian)
store.last_every = math.inf
store.go.set()
store.append(batch([("a", 1.0, 10), ("b", 2.0, 10), ("c", 3.0, 10)]))
store.go.clear()
sink = sink_on(historian, Path({tmp!r}))
sink.write(batch([("a", 5.0, 15)]))  # open across the write: covered by the marker, adds no row;
# older than the batch committed during the write, so only the marker it relies on covers it
writer = threading.Thread(target=store.write_last, kwargs={{"may_give_way": True}})
writer.start()
assert store.inside.wait(timeout=60)
other = TagHistorian(historian)
other.last_every = math.inf
other.append(batch([("b", 4.0, 20), ("d", 6.0, None)]))  # committed while the write runs
store.go.set()
writer.join()
sink.commit()
print(json.dumps(dict(store.last_values().select("tag", "value").rows())), flush=True)
sys.stdin.read()  # killed here
"""


def test_a_start_after_sigkill_rebuilds_batches_committed_while_a_write_ran(tmp_path):
    path = tmp_path / "historian.duckdb"
    script = KILLED.format(root=str(ROOT), path=str(path), tmp=str(tmp_path))
    proc = python_child(script)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]  # everything committed, one write done
        assert line, proc.stderr.read()  # type: ignore[union-attr]
        seen_by_writer = json.loads(line)
    finally:
        proc.kill()  # SIGKILL: no close, no further write of `tag_last`
        proc.communicate()
    expected = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 6.0}
    assert seen_by_writer == expected
    assert table_rows(path) == {"a": 1.0, "b": 2.0, "c": 3.0}  # what the one write had taken
    assert marker(path)[0] >= 1

    historian = Historian(path)
    assert last(TagHistorian(historian)) == expected
    historian.close()
    assert table_rows(path) == expected
    assert marker(path)[0] == 0


def test_a_marker_table_of_the_earlier_version_is_upgraded_and_folded(tmp_path):
    """A historian left by the version before write generations (marker `(since, nulls)`), killed
    with rows unwritten: the first open folds them and the marker gets its generation column."""
    path = tmp_path / "historian.duckdb"
    historian = Historian(path)
    store = TagHistorian(historian)
    store.last_every = math.inf
    store.append(batch([("a", 1.0, 10)]))
    store.write_last()
    historian.close()
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE tag_last_pending")
    con.execute("CREATE TABLE tag_last_pending (since TIMESTAMPTZ, nulls BOOLEAN)")
    con.execute(
        "INSERT INTO tags (timestamp, tag, value) VALUES (?, 'a', 7.0)",
        [batch([("a", 0.0, 20)])["timestamp"][0]],
    )
    con.execute("INSERT INTO tag_last_pending VALUES (?, false)", [batch([("a", 0.0, 20)])["timestamp"][0]])
    con.close()
    historian = Historian(path)
    store = TagHistorian(historian)
    store.last_every = math.inf
    assert last(store) == {"a": 7.0}
    store.append(batch([("b", 2.0, 30)]))  # marks with a generation
    store.write_last()
    historian.close()
    assert table_rows(path) == {"a": 7.0, "b": 2.0}
    assert marker(path)[0] == 0
