"""What `tag_last` promises (issue 12, engine/store/tag_newest.py): the writer keeps the newest
committed rows per tag in memory and writes the table every few seconds, so
- readers in the writer's process see every committed newest row at once (`last_values`,
  `Historian.newest_tag_rows`), and nothing of a rolled-back batch;
- the table is written when `last_every` seconds have passed at a commit, and at a sink's close;
- other processes read an exact table after a clean stop;
- after a SIGKILL, the next open rebuilds the rows the killed writer had not written."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from engine.connectors.historian_connector import HistorianConnector, HistorianSinkConfig
from engine.context import RunContext
from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian
from engine.tags import TagBatchBuilder
from tests.waiting import wait_for

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def batch(rows: list[tuple[str, float | None, int | None]]) -> pl.DataFrame:
    """(tag, value, seconds after T0 or None) rows as one TAG_SCHEMA batch."""
    builder = TagBatchBuilder("test")
    for tag, value, _ in rows:
        builder.add(tag, value, timestamp=T0)
    frame = builder.take()
    stamps = [None if s is None else T0 + timedelta(seconds=s) for _, _, s in rows]
    return frame.with_columns(pl.Series("timestamp", stamps, dtype=frame.schema["timestamp"]))


def table_rows(path: Path) -> dict[str, float | None]:
    """`tag_last` as a plain DuckDB connection reads it (no engine code, no kept rows)."""
    con = duckdb.connect(str(path))
    try:
        return dict(con.execute("SELECT tag, value FROM tag_last").fetchall())
    finally:
        con.close()


def last(store: TagHistorian) -> dict[str, float | None]:
    return dict(store.last_values().select("tag", "value").rows())


@pytest.fixture
def store(tmp_path):
    historian = Historian(tmp_path / "historian.duckdb")
    store = TagHistorian(historian)
    store.last_every = math.inf  # the table is written only when a test says so
    yield store
    # A timer's write may still be finishing when a test's condition holds: the close waits for it
    # (`Historian.close`); no write of the table is asked for after the test.
    store.last_every = math.inf
    historian.close()


def stored_table(store: TagHistorian) -> dict[str, float | None]:
    cur = store.cursor()
    try:
        return dict(cur.execute("SELECT tag, value FROM tag_last").fetchall())
    finally:
        cur.close()


def test_readers_in_the_writers_process_see_committed_rows_before_the_table_has_them(store):
    store.append(batch([("a", 1.0, 10), ("b", 2.0, 10)]))
    store.write_last()
    store.append(batch([("a", 3.0, 20), ("c", 4.0, 5), ("b", 9.0, 1)]))  # b: older, arrives late
    assert stored_table(store) == {"a": 1.0, "b": 2.0}  # not written yet...
    assert last(store) == {"a": 3.0, "b": 2.0, "c": 4.0}  # ...seen all the same
    assert store.last_values("c").get_column("value").to_list() == [4.0]
    assert store.last_values("*").get_column("tag").to_list() == ["a", "b", "c"]  # a glob finds kept tags
    newest = {row[0]: row[2] for row in store.historian.newest_tag_rows()}
    assert newest == {"a": 3.0, "b": 2.0, "c": 4.0}
    store.write_last()
    assert stored_table(store) == {"a": 3.0, "b": 2.0, "c": 4.0}
    assert store.newest.empty


def test_a_rolled_back_batch_is_not_kept(tmp_path):
    historian = Historian(tmp_path / "historian.duckdb")
    sink = HistorianConnector.make_sink(
        HistorianSinkConfig(live_buffer=False), RunContext(data_dir=tmp_path, historian=historian), "h"
    )
    sink.open()
    sink.write(batch([("a", 1.0, 10)]))
    sink.commit()
    sink.write(batch([("a", 2.0, 20), ("b", 5.0, 20)]))
    sink.abort()
    store = TagHistorian(historian)
    assert last(store) == {"a": 1.0}
    assert store.raw("*").height == 1
    historian.close()


def test_the_table_is_written_once_last_every_has_passed_at_a_commit(store):
    store.last_every = 5.0
    store.newest.last_write = time.monotonic()
    store.append(batch([("a", 1.0, 10)]))
    assert stored_table(store) == {}  # within the interval: kept only
    store.newest.last_write = time.monotonic() - 5.0  # the interval has passed
    store.append(batch([("b", 2.0, 10)]))
    assert stored_table(store) == {"a": 1.0, "b": 2.0}
    assert store.newest.empty
    assert time.monotonic() - store.newest.last_write < 5.0  # the next write is an interval away


def test_a_sinks_close_writes_the_table_for_other_processes(tmp_path):
    """A writer in another process streams through the sink (no write of `tag_last` due during the
    run) and stops cleanly: a plain DuckDB reader then finds every newest row in the table."""
    path = tmp_path / "historian.duckdb"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from engine.connectors.historian_connector import HistorianConnector, HistorianSinkConfig
        from engine.context import RunContext
        from engine.store.historian import Historian
        from tests.engine.test_tag_last_promise import batch
        historian = Historian(Path({str(path)!r}))
        sink = HistorianConnector.make_sink(
            HistorianSinkConfig(live_buffer=False), RunContext(data_dir=Path({str(tmp_path)!r}), historian=historian), "h"
        )
        sink.open()
        for second in range(1, 4):
            sink.write(batch([("a", float(second), second), ("b", 10.0 * second, second)]))
            sink.commit()
        assert sink.store.newest.rows().height == 2  # kept, not yet in the table
        sink.close()
        historian.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert table_rows(path) == {"a": 3.0, "b": 30.0}


KILLED_WRITER = """
import sys, math, json
sys.path.insert(0, {root!r})
from pathlib import Path
from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian
from tests.engine.test_tag_last_promise import batch
store = TagHistorian(Historian(Path({path!r})))
store.last_every = math.inf
store.append(batch([("a", 1.0, 10), ("b", 2.0, 10), ("c", 3.0, 10)]))
store.write_last()  # the table holds these
store.append(batch([("a", 4.0, 20), ("b", 0.5, 5), ("d", 6.0, None)]))  # b: late and older
store.append(batch([("c", 7.0, 10), ("e", 8.0, 2)]))  # c: a tie, the later arrival wins
print(json.dumps(dict(store.last_values().select("tag", "value").rows())), flush=True)
sys.stdin.read()  # killed here
"""


def test_a_start_after_sigkill_rebuilds_what_the_killed_writer_had_not_written(tmp_path):
    path = tmp_path / "historian.duckdb"
    script = KILLED_WRITER.format(root=str(ROOT), path=str(path))
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]  # the writer has committed everything
        assert line, proc.stderr.read()  # type: ignore[union-attr]
        seen_by_writer = json.loads(line)
    finally:
        proc.kill()  # SIGKILL: no close, no write of `tag_last`
        proc.communicate()
    expected = {"a": 4.0, "b": 2.0, "c": 7.0, "d": 6.0, "e": 8.0}
    assert seen_by_writer == expected
    assert table_rows(path) == {"a": 1.0, "b": 2.0, "c": 3.0}  # what the killed writer had written

    historian = Historian(path)
    store = TagHistorian(historian)
    assert last(store) == expected
    historian.close()
    assert table_rows(path) == expected  # rebuilt in the table itself, the marker cleared
    con = duckdb.connect(str(path))
    try:
        assert con.execute("SELECT count(*) FROM tag_last_pending").fetchall()[0][0] == 0
    finally:
        con.close()


def test_the_log_of_an_earlier_version_is_folded_at_the_first_open(tmp_path):
    path = tmp_path / "historian.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE tag_last_log (tag VARCHAR, timestamp TIMESTAMPTZ, value DOUBLE, value_text VARCHAR,"
        " quality VARCHAR, reason VARCHAR, source VARCHAR, received_at TIMESTAMPTZ, seq BIGINT)"
    )
    con.execute("INSERT INTO tag_last_log (tag, timestamp, value, seq) VALUES ('a', ?, 1.5, 1)", [T0])
    con.close()
    historian = Historian(path)
    assert last(TagHistorian(historian)) == {"a": 1.5}
    historian.close()
    assert table_rows(path) == {"a": 1.5}


def test_a_reader_never_misses_a_committed_row_while_the_table_is_written(store):
    """A reader thread asks all the time while the writer commits rounds and writes the table at
    every commit: every answer holds each tag at least at the round committed before it asked."""
    import threading

    store.last_every = 0.0
    tags = [f"t{i}" for i in range(50)]
    committed = [-1]
    problems: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            floor = committed[0]
            got = dict(TagHistorian(store.historian).last_values().select("tag", "value").rows())
            if floor >= 0 and (len(got) != len(tags) or min(got.values()) < floor):
                problems.append(f"after round {floor}: {sorted(got.items())[:3]}...")

    store.cursor().close()  # the tables exist before the reader starts (two creators conflict)
    reader = threading.Thread(target=read)
    reader.start()
    try:
        for second in range(40):
            store.append(batch([(t, float(second), second) for t in tags]))
            committed[0] = second
    finally:
        done.set()
        reader.join()
    assert problems == []
    assert last(store) == dict.fromkeys(tags, 39.0)


def test_rows_committed_before_a_pause_reach_the_table_without_another_commit(store):
    """A stream that commits and then nothing for a while: the timer writes the table once
    `last_every` has passed since the last write."""
    store.last_every = 0.5
    store.newest.last_write = time.monotonic()
    store.append(batch([("a", 1.0, 10), ("b", 2.0, 10)]))  # committed, kept, not written yet
    # The write has ended when nothing is kept any more (the table's rows are committed just
    # before that): wait on that, then check what the table holds.
    assert wait_for(lambda: store.newest.empty, timeout=30, what="the timer's write")
    assert stored_table(store) == {"a": 1.0, "b": 2.0}


def test_a_failed_write_of_the_table_does_not_fail_the_committed_batch(store):
    """The batch is committed before the table's write: a failure there leaves the rows kept (and
    marked), and a later write puts them in the table; a stream never retries a stored batch."""
    store.last_every = 0.0
    store.append(batch([("a", 1.0, 10)]))
    cur = store.cursor()
    cur.execute("ALTER TABLE tag_last RENAME TO tag_last_away")  # the write fails while it is away
    try:
        assert store.append(batch([("a", 2.0, 20)])) == 1  # no error: the batch is stored
        assert not store.newest.empty  # kept for the next write
    finally:
        cur.execute("ALTER TABLE tag_last_away RENAME TO tag_last")
        cur.close()
    assert store.raw("a").get_column("value").to_list() == [1.0, 2.0]
    assert wait_for(lambda: stored_table(store) == {"a": 2.0}, timeout=30, what="the retried write")


def test_closing_the_historian_waits_for_a_timer_that_runs_a_statement(store):
    """A timer's work (a write of the table, an advance, a checkpoint) may be running a statement
    when the historian is closed (a service stopping, a test's teardown): the close waits for it
    instead of failing with DuckDB's "connection is busy", and the work's statement completes."""
    store.append(batch([("a", 1.0, 10)]))
    started, done = threading.Event(), []

    def work() -> None:
        cur = store.historian.cursor()
        try:
            started.set()
            done.append(
                cur.execute("SELECT count(*) FROM range(200000000) WHERE range % 7 = 0").fetchone()[0]
            )
        finally:
            cur.close()

    store.newest.later("checkpoint", 0.0, work)
    assert started.wait(timeout=30), "the timer's work never started"
    store.historian.close()  # raised ResourceInUseException while the statement ran
    assert done == [28571429]
    assert not store.historian.is_open
