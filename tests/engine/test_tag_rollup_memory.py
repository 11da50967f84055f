"""The rollup's open minutes kept in memory (issue 12, `engine.store.tag_rollup_memory`): an advance
written from them gives the rollup rows the advance from raw rows gives, and minutes the writer
did not see whole (rows from an earlier process, a stream's `TagBatch`, a retention run) are read
from raw rows as before."""

from __future__ import annotations

import math
import select
from datetime import UTC, datetime, timedelta

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.store import tag_rollup, tag_rollup_memory
from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian
from engine.tags import TAG_COLUMNS, TagBatch, tag_schema
from tests.engine.test_tag_rollup_slices import ROOT, same_as_raw, stream_commit
from tests.tag_history import python_child
from tests.waiting import wait_for

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
MINUTE0 = int(T0.timestamp()) // 60


def frame(rows: list[tuple[str, float | None, int | None, str | None]]) -> pl.DataFrame:
    """(tag, value, µs after T0 or None, quality) rows as one TAG_SCHEMA frame."""
    time = tag_schema()["timestamp"]
    return pl.DataFrame(
        {
            "timestamp": pl.Series(
                [None if us is None else T0 + timedelta(microseconds=us) for _, _, us, _ in rows], dtype=time
            ),
            "server_timestamp": pl.Series([None] * len(rows), dtype=time),
            "tag": [r[0] for r in rows],
            "value": pl.Series([r[1] for r in rows], dtype=pl.Float64),
            "value_text": pl.Series([None if r[1] is not None else "text" for r in rows], dtype=pl.String),
            "quality": pl.Series([r[3] for r in rows], dtype=pl.String),
            "reason": pl.Series([None] * len(rows), dtype=pl.String),
            "source": ["test"] * len(rows),
            "received_at": pl.Series([T0] * len(rows), dtype=time),
        },
        schema=tag_schema(),
    )


def merged(store: TagHistorian) -> pl.DataFrame:
    """The rollup, one row per tag, minute and is_bad, and where it stands."""
    cur = store.cursor()
    try:
        rows = pl.from_arrow(
            cur.sql(tag_rollup.merged_sql("") + " ORDER BY tag, minute, is_bad").to_arrow_table()
        )
        upto = cur.execute(tag_rollup.rolled_up_to_sql()).fetchall()[0][0]
    finally:
        cur.close()
    return rows.with_columns(upto=pl.lit(upto))


def store_on(path, keep: bool) -> tuple[Historian, TagHistorian]:
    historian = Historian(path)
    store = TagHistorian(historian)
    if not keep:
        store.kept = None  # the reference: every advance reads raw rows
    return historian, store


values = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-1000, 1000).map(float),
)
TAGS = ["a", "b", "c", "d.e"]
times = st.one_of(st.none(), st.integers(0, 4 * 60_000 - 1))  # ms into four minutes
qualities = st.sampled_from(["good", "bad", "uncertain", None])
rows = st.tuples(st.sampled_from(TAGS), values, times, qualities)


@settings(max_examples=25, deadline=None)  # ~0.7 s an example: two historians
@given(batches=st.lists(st.lists(rows, min_size=1, max_size=12), min_size=1, max_size=8))
def test_kept_minutes_give_the_rollup_of_raw_rows(tmp_path_factory, batches):
    # No two rows share a timestamp (µs: the ms drawn and the row's number): on a tie of
    # timestamps DuckDB's arg_min picks any row, the kept minutes the earlier arrival.
    count = iter(range(1000))
    unique = [
        [(t, v, None if ms is None else ms * 1000 + next(count), q) for t, v, ms, q in b] for b in batches
    ]
    work = tmp_path_factory.mktemp("kept")
    results = []
    for keep in (True, False):
        historian, store = store_on(work / f"{keep}.duckdb", keep)
        try:
            for b in unique:
                store.append(frame(b))
            # everything up to the newest minute is rolled up; the newest stays raw in both
            results.append(merged(store))
            if keep and any(r[2] is not None for b in unique for r in b):
                # an empty historian: every advance from the kept minutes (one at the first row)
                assert store.kept is not None and store.kept.advances >= 1
        finally:
            historian.close()
    kept, raw = results
    assert_frame_equal(kept, raw, check_exact=False, rel_tol=1e-9)


def test_the_advance_writes_kept_minutes_and_reads_no_raw_rows(tmp_path):
    historian, store = store_on(tmp_path / "h.duckdb", keep=True)
    try:
        for second in range(0, 180, 10):  # three minutes, five tags every 10 s
            store.append(frame([(f"t{i}", float(second + i), second * 1_000_000, "good") for i in range(5)]))
        assert store.kept is not None
        # up to minute 0 (nothing: the historian was empty, every minute whole), to 1, to 2: from memory
        assert store.kept.advances == 3
        assert merged(store).get_column("upto")[0] == MINUTE0 + 2
        assert same_as_raw(store, 2, start=T0).height == 5 * 2
    finally:
        historian.close()


def test_rows_an_earlier_process_wrote_make_their_minute_read_from_raw_rows(tmp_path):
    path = tmp_path / "h.duckdb"
    historian, store = store_on(path, keep=True)
    try:
        store.append(frame([("a", 1.0, 5_000_000, "good"), ("b", 2.0, 6_000_000, "good")]))
    finally:
        historian.close()
    historian, store = store_on(path, keep=True)  # a restart in the middle of minute 0
    try:
        store.append(frame([("a", 3.0, 30_000_000, "good")]))
        assert store.kept is not None and not store.kept.minutes  # minute 0 is not whole here
        store.append(frame([("a", 4.0, 61_000_000, "good")]))  # minute 1: minute 0 is due
        assert store.kept.advances == 0  # minute 0 from raw rows
        store.append(frame([("a", 5.0, 121_000_000, "good")]))  # minute 2: minute 1 is due
        assert store.kept.advances == 1  # minute 1 was seen whole
        rollup = merged(store).filter(pl.col("tag") == "a")
        assert rollup.get_column("rows").to_list() == [2, 1]  # minute 0: both processes' rows
        assert rollup.get_column("total").to_list() == [4.0, 4.0]
    finally:
        historian.close()


def test_a_streams_tag_batch_makes_its_minute_read_from_raw_rows(tmp_path):
    historian, store = store_on(tmp_path / "h.duckdb", keep=True)
    try:
        store.append(frame([("a", 1.0, 1_000_000, "good")]))
        assert store.kept is not None
        before = store.kept.advances
        at = int(T0.timestamp()) * 1_000_000 + 2_000_000
        row = {"timestamp": at, "tag": "a", "value": 2.0, "quality": "good", "source": "s", "received_at": at}
        lean = TagBatch({c: [row.get(c)] for c in TAG_COLUMNS})  # a stream's few rows, as they come
        store.append(lean)  # not kept
        assert store.kept.not_whole == {MINUTE0}
        store.append(frame([("a", 3.0, 61_000_000, "good")]))
        assert store.kept.advances == before  # minute 0 from raw rows
        assert merged(store).filter(pl.col("minute") == MINUTE0).get_column("total").to_list() == [3.0]
    finally:
        historian.close()


def test_retention_makes_the_kept_minutes_read_from_raw_rows(tmp_path):
    historian = Historian(tmp_path / "h.duckdb")
    store = TagHistorian(historian, retention=[{"pattern": "old.*", "keep": "30s"}])
    try:
        now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
        time = tag_schema()["timestamp"]

        def rows(tag: str, seconds: list[int]) -> pl.DataFrame:
            f = frame([(tag, float(s), 0, "good") for s in seconds])
            return f.with_columns(
                pl.Series("timestamp", [now + timedelta(seconds=s) for s in seconds], dtype=time)
            )

        store.append(rows("old.x", [0, 10, 20, 40]))
        store.append(rows("keep.y", [5, 15]))
        assert store.kept is not None
        before = store.kept.advances
        deleted = store.apply_retention(now + timedelta(seconds=55))
        assert deleted == 3  # old.x at 0, 10, 20
        store.append(rows("keep.y", [65]))  # the next minute: the first is due
        assert store.kept.advances == before  # not whole after the delete: from raw rows
        minute = merged(store).filter(pl.col("minute") == int(now.timestamp()) // 60)
        assert dict(zip(minute.get_column("tag"), minute.get_column("rows"), strict=True)) == {
            "keep.y": 2,
            "old.x": 1,
        }
    finally:
        historian.close()


def test_ties_first_is_the_earlier_arrival_last_the_later():
    kept = tag_rollup_memory.KeptMinutes()
    kept.start(None)
    f = frame([("a", 1.0, 5, "good"), ("a", 2.0, 5, "good"), ("a", 3.0, 5, "good"), ("b", None, 7, "bad")])
    kept.keep(f, MINUTE0)
    out = kept.partials(MINUTE0 + 1)
    assert out is not None
    a = out.filter(pl.col("tag") == "a").row(0, named=True)
    assert (a["first_value"], a["last_value"], a["rows"], a["n"], a["total"]) == (1.0, 3.0, 3, 3, 6.0)
    b = out.filter(pl.col("tag") == "b").row(0, named=True)
    assert b["is_bad"] and b["rows"] == 1 and b["n"] == 0
    assert b["total"] is None and b["lo"] is None and b["first_ts"] is None  # as SQL's aggregates of nothing


def test_nan_orders_above_every_number_as_duckdb_does():
    kept = tag_rollup_memory.KeptMinutes()
    kept.start(None)
    kept.keep(frame([("a", math.nan, 1, "good"), ("a", 2.0, 2, "good"), ("b", math.nan, 3, "good")]), MINUTE0)
    out = kept.partials(MINUTE0 + 1)
    assert out is not None
    a, b = out.sort("tag").rows(named=True)
    assert a["lo"] == 2.0 and math.isnan(a["hi"])
    assert math.isnan(b["lo"]) and math.isnan(b["hi"])


def test_memory_is_bounded_by_the_minutes_and_the_clock():
    kept = tag_rollup_memory.KeptMinutes()
    kept.start(None)
    for minute in range(tag_rollup_memory.MAX_MINUTES + 2):
        kept.keep(frame([("a", 1.0, minute * 60_000_000, "good")]), MINUTE0 + 100)
    assert len(kept.minutes) == tag_rollup_memory.MAX_MINUTES
    assert not kept.whole(MINUTE0, MINUTE0 + 1) and kept.whole(MINUTE0 + 2, MINUTE0 + 3)
    kept.keep(frame([("z", 1.0, 10 * 60_000_000, "good")]), MINUTE0)  # ten minutes ahead of the clock
    assert (MINUTE0 + 10, False) not in kept.minutes and not kept.whole(MINUTE0 + 10, MINUTE0 + 11)


def test_a_streams_commits_roll_up_from_the_kept_minutes_on_the_timer_thread(tmp_path):
    historian, store = store_on(tmp_path / "h.duckdb", keep=True)
    cur = store.cursor()
    try:
        for second in range(0, 190, 10):  # minutes 0 - 3 as a stream commits them
            stream_commit(
                store,
                cur,
                frame([(f"t{i}", float(second * i), second * 1_000_000, "good") for i in range(7)]),
            )
        wait_for(
            lambda: merged(store).get_column("upto")[0] == MINUTE0 + 3, timeout=60, what="the timer's advance"
        )
        assert store.kept is not None and store.kept.advances >= 2
        assert same_as_raw(store, 3, start=T0).height == 7 * 3
    finally:
        cur.close()
        historian.close()


KILLED = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.engine.test_tag_rollup_memory import frame, merged, store_on
historian, store = store_on(Path({path!r}), keep=True)
for second in range(0, 230, 10):  # minutes 0 - 3, five tags every 10 s
    store.append(frame([(f"t{{i}}", float(second + i), second * 1_000_000, "good") for i in range(5)]))
# minutes 0 - 2 rolled up from the kept minutes; minute 3 and its partials live in memory only
print("kept", store.kept.advances, merged(store).get_column("upto")[0], sorted(store.kept.minutes), flush=True)
sys.stdin.read()  # killed here
"""


def test_a_sigkill_loses_the_kept_minutes_and_the_next_process_rolls_them_up_from_raw_rows(tmp_path):
    path = tmp_path / "h.duckdb"
    proc = python_child(KILLED.format(root=str(ROOT), path=str(path)))
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)  # a hung writer fails, not hangs
        line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
    finally:
        proc.kill()  # SIGKILL with minute 3's partials in memory, never written
        _, err = proc.communicate()
    # advances to minutes 0 (nothing before it), 1, 2 and 3, each from the kept minutes
    assert line.startswith(f"kept 4 {MINUTE0 + 3} [({MINUTE0 + 3}, False)]"), line + err
    historian, store = store_on(path, keep=True)
    try:
        assert merged(store).get_column("upto")[0] == MINUTE0 + 3  # what the killed process committed
        store.append(frame([("t0", 99.0, 250 * 1_000_000, "good")]))  # minute 4: minute 3 is due
        store.append(frame([("t0", 98.0, 300 * 1_000_000, "good")]))  # minute 5: minute 4 is due
        assert merged(store).get_column("upto")[0] == MINUTE0 + 5
        # minute 3 from raw rows (the killed process's); minute 4 this process saw whole
        assert store.kept is not None and store.kept.advances == 1
        rolled = same_as_raw(store, 5, start=T0)
        assert rolled.get_column("count").sum() == 5 * 23 + 1  # every row once: none lost, none twice
    finally:
        historian.close()


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from([*TAGS, None]), values, times, qualities)),
        min_size=1,
        max_size=4,
    )
)
def test_a_frames_columns_for_the_kept_minutes_are_its_rows(batches):
    # What `KeptMinutes._columns` gives the numpy scatters must be each row's, NULLs in any column
    # or none, with one slot a tag across frames (how it reads the frame is its own business: one
    # `select` now; a Series at a time was tried, docs/performance.md).
    kept = tag_rollup_memory.KeptMinutes()
    slot_of: dict[str, int] = {}
    t0_us = int(T0.timestamp()) * 1_000_000
    for batch in batches:
        c = kept._columns(frame(batch))
        assert {len(a) for a in c.values()} <= {len(batch)}
        for i, (tag, value, us, quality) in enumerate(batch):
            assert c["known"][i] == (us is not None)
            assert c["at"][i] == (0 if us is None else t0_us + us)
            assert c["tagged"][i] == (tag is not None)
            if tag is None:
                assert c["slot"][i] == 0
            else:  # one slot a tag, the same in every frame, no two tags sharing one
                assert slot_of.setdefault(tag, int(c["slot"][i])) == c["slot"][i]
            assert c["valued"][i] == (value is not None)
            expected = math.nan if value is None else value
            assert c["value"][i] == expected or (math.isnan(expected) and math.isnan(c["value"][i]))
            assert c["bad"][i] == (quality == "bad")
    assert len(set(slot_of.values())) == len(slot_of)
