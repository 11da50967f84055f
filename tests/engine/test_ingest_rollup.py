"""The rollup's advance in tag slices (issue 12): many tags are rolled up by several statements
(DuckDB's arg_min/arg_max do not spill), and the buckets are the raw computation's all the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from polars.testing import assert_frame_equal

from engine.store import tag_rollup
from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian
from engine.tags import TagBatchBuilder

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_sliced_advance_statements_cover_every_tag_once():
    one = tag_rollup.advance_sql("tags", 10, 12, tags=100)
    three = tag_rollup.advance_sql("tags", 10, 12, tags=2 * tag_rollup.TAGS_PER_SLICE + 1)
    assert len(one) == 2 and "hash(tag)" not in one[0]
    assert [s.count("hash(tag) % 3 = ") for s in three[:3]] == [1, 1, 1]
    assert three[-1] == one[-1]  # the same move of rolled_up_to


def test_rollup_in_slices_equals_the_raw_buckets(tmp_path, monkeypatch):
    monkeypatch.setattr(tag_rollup, "TAGS_PER_SLICE", 2)  # 7 tags: 4 slices
    historian = Historian(tmp_path / "h.duckdb")
    try:
        store = TagHistorian(historian)
        store._known_tags = 7
        for second in range(0, 200, 10):  # three minutes and a bit, every tag every 10 s
            builder = TagBatchBuilder("s")
            for i in range(7):
                quality = "bad" if (second + i) % 50 == 0 else "good"
                builder.add(
                    f"t{i}", float(second * i), timestamp=T0 + timedelta(seconds=second), quality=quality
                )
            store.append(builder.take())
        cur = store.cursor()
        try:
            upto = cur.execute(tag_rollup.rolled_up_to_sql()).fetchall()[0][0]
            rolled = cur.execute("SELECT count(DISTINCT tag) FROM tag_minutes").fetchall()[0][0]
        finally:
            cur.close()
        assert upto is not None and rolled == 7  # every tag rolled up, none twice (checked below)
        stats = ["avg", "min", "max", "first", "last", "sum", "count"]
        end = T0 + timedelta(minutes=3)
        sliced = store.query("*", T0, end, bucket="1m", statistics=stats)
        raw = store.query("*", T0, end, bucket="1m", statistics=stats, use_rollup=False, use_cache=False)
        assert sliced.height == 7 * 3
        assert_frame_equal(sliced.sort("tag", "bucket"), raw.sort("tag", "bucket"), check_exact=False)
        assert sliced.get_column("count").sum() + sliced.get_column("bad_count").sum() == 7 * 18
        assert isinstance(sliced, pl.DataFrame)
    finally:
        historian.close()
