"""The tag historian: round trips, retention per tag group, bucketed queries against a Polars
reference, last values and the tag list."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine.errors import UsageError
from engine.store.historian import Historian
from engine.store.tag_historian import TagHistorian, parse_duration
from engine.tags import TAG_SCHEMA, TagBatchBuilder

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def batch(rows: list[tuple[str, float | str | None, int, str]]) -> pl.DataFrame:
    """(tag, value, seconds after T0, quality) rows as one TAG_SCHEMA batch."""
    builder = TagBatchBuilder("test")
    for tag, value, seconds, quality in rows:
        builder.add(
            tag,
            value,
            timestamp=T0 + timedelta(seconds=seconds),
            quality=quality,  # type: ignore[arg-type]
            reason=None if quality == "good" else "comm_lost",
        )
    return builder.take()


@pytest.fixture
def store(tmp_path):
    historian = Historian(tmp_path / "historian.duckdb")
    yield TagHistorian(historian)
    historian.close()


def test_batches_round_trip(store):
    first = batch([("a", 1.0, 0, "good"), ("b", "open", 0, "good"), ("a", 2.5, 1, "uncertain")])
    second = batch([("a", None, 2, "bad"), ("b", True, 3, "good")])
    assert store.append(first) == 3
    assert store.append(second) == 2
    stored = store.raw(["a", "b"])
    expected = pl.concat([first, second]).sort("tag", "timestamp", maintain_order=True)
    assert stored.schema == TAG_SCHEMA
    assert_frame_equal(stored, expected)
    assert store.raw("a", start=T0 + timedelta(seconds=1), end=T0 + timedelta(seconds=2)).height == 1


def test_a_frame_with_missing_optional_columns_is_conformed(store):
    frame = pl.DataFrame({"timestamp": [T0], "tag": ["x"], "value": [4.0], "quality": ["good"]}).with_columns(
        pl.col("timestamp").cast(pl.Datetime("us", "UTC"))
    )
    store.append(frame)
    assert store.raw("x").select("tag", "value", "source").rows() == [("x", 4.0, None)]


def test_retention_deletes_only_the_old_rows_of_the_matching_group(tmp_path):
    historian = Historian(tmp_path / "h.duckdb")
    store = TagHistorian(
        historian,
        retention=[
            {"pattern": "fast.*", "keep": "1h"},
            {"pattern": "re:slow\\.(a|b)", "keep": "2d"},
        ],
        default_retention="30d",
    )
    day = 86_400
    rows = []
    for tag in ("fast.x", "slow.a", "slow.c", "other"):
        rows += [(tag, 1.0, -40 * day, "good"), (tag, 2.0, -3 * day, "good"), (tag, 3.0, -7200, "good")]
        rows += [(tag, 4.0, -60, "good")]
    store.append(batch(rows))
    deleted = store.apply_retention(now=T0)
    left = store.raw("*").group_by("tag").agg(pl.col("value").sort()).sort("tag")
    assert dict(left.rows()) == {
        "fast.x": [4.0],  # 1 h
        "slow.a": [3.0, 4.0],  # 2 d
        "slow.c": [2.0, 3.0, 4.0],  # not matched by the regex: the default 30 d
        "other": [2.0, 3.0, 4.0],
    }
    assert deleted == 3 + 2 + 1 + 1
    historian.close()


def test_retention_forgets_a_tag_whose_newest_value_expired(tmp_path):
    historian = Historian(tmp_path / "h.duckdb")
    store = TagHistorian(historian, retention=[{"pattern": "gone", "keep": "1d"}])
    store.append(batch([("gone", 1.0, -5 * 86_400, "good"), ("kept", 1.0, -5 * 86_400, "good")]))
    assert store.apply_retention(now=T0) == 1
    assert store.last_values().get_column("tag").to_list() == ["kept"]
    assert store.tags().get_column("tag").to_list() == ["kept"]
    historian.close()


def test_without_rules_nothing_is_deleted(store):
    store.append(batch([("a", 1.0, -(10**8), "good")]))
    assert store.apply_retention(now=T0) == 0
    assert store.raw("a").height == 1


def test_last_values_follow_the_newest_timestamp_not_the_arrival(store):
    store.append(batch([("a", 1.0, 10, "good"), ("a", 2.0, 20, "good"), ("b", "x", 5, "good")]))
    store.append(batch([("a", 9.0, 15, "good"), ("b", None, 6, "bad")]))  # a: late arrival, older
    last = store.last_values()
    assert last.select("tag", "value", "value_text", "quality").rows() == [
        ("a", 2.0, None, "good"),
        ("b", None, None, "bad"),
    ]
    assert last.get_column("timestamp").to_list() == [T0 + timedelta(seconds=20), T0 + timedelta(seconds=6)]
    assert store.last_values(["b"]).height == 1
    assert store.last_values("re:a|c").get_column("tag").to_list() == ["a"]


def test_tag_list_has_first_last_and_count(store):
    store.append(batch([("b", 1.0, 3, "good"), ("a", 1.0, 1, "good"), ("a", 1.0, 9, "bad")]))
    assert store.tags().rows() == [
        ("a", T0 + timedelta(seconds=1), T0 + timedelta(seconds=9), 2),
        ("b", T0 + timedelta(seconds=3), T0 + timedelta(seconds=3), 1),
    ]


def test_bad_values_are_left_out_of_statistics_unless_asked(store):
    store.append(batch([("a", 10.0, 0, "good"), ("a", 0.0, 1, "bad"), ("a", 20.0, 2, "uncertain")]))
    default = store.query("a", bucket="1m")
    assert default.select("avg", "min", "max", "last", "count", "bad_count").rows() == [
        (15.0, 10.0, 20.0, 20.0, 2, 1)
    ]
    with_bad = store.query("a", bucket="1m", statistics=["avg", "count"], include_bad=True)
    assert with_bad.select("avg", "count", "bad_count").rows() == [(10.0, 3, 1)]


def test_selectors_patterns_and_unknown_tags(store):
    store.append(
        batch([("t1.power", 1.0, 0, "good"), ("t2.power", 2.0, 0, "good"), ("t1.speed", 3.0, 0, "good")])
    )
    assert store.query("*.power").get_column("tag").to_list() == ["t1.power", "t2.power"]
    assert store.query(["t1.*", "t2.power"]).height == 3
    assert store.query(["nothing.*"]).height == 0
    assert store.query(["missing"]).height == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bucket": "5x"}, "bucket '5x'"),
        ({"bucket": "0m"}, "bucket '0m'"),
        ({"statistics": ["median"]}, "statistic 'median'"),
        ({"tags": "re:("}, "bad regular expression"),
    ],
)
def test_bad_query_arguments_say_what_is_allowed(store, kwargs, message):
    with pytest.raises(UsageError, match=message):
        store.query(**{"tags": "a", **kwargs})


def test_durations():
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("500ms") == timedelta(milliseconds=500)
    assert parse_duration("15min") == timedelta(minutes=15)
    with pytest.raises(UsageError, match="retention keep '1y'"):
        TagHistorian(Historian(":memory:"), retention=[{"pattern": "*", "keep": "1y"}])


def reference(frame: pl.DataFrame, every: str, include_bad: bool) -> pl.DataFrame:
    """The default statistics computed by Polars alone (`reference_all`, below, has them all)."""
    return reference_all(frame, every, include_bad).select(
        "tag", "bucket", "avg", "min", "max", "last", "count", "bad_count"
    )


points = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c.x"]),
        st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
        st.integers(0, 4 * 3600),
        st.sampled_from(["good", "good", "uncertain", "bad"]),
    ),
    min_size=1,
    max_size=80,
    unique_by=lambda p: (p[0], p[2]),  # one value per tag and instant: `last` is well defined
)


@settings(max_examples=40, deadline=None)
@given(rows=points, every=st.sampled_from(["1m", "7m", "1h", "10s"]), include_bad=st.booleans())
def test_buckets_equal_a_polars_reference(rows, every, include_bad):
    historian = Historian(":memory:")
    store = TagHistorian(historian)
    frame = batch(rows)
    half = frame.height // 2
    store.append(frame.head(half))
    store.append(frame.tail(frame.height - half))
    got = store.query("*", bucket=every, include_bad=include_bad)
    historian.close()
    assert_frame_equal(
        got, reference(frame, every, include_bad), check_exact=False, rel_tol=1e-9, abs_tol=1e-6
    )


# ---- the `historian` destination connector ------------------------------------------------------


def historian_sink(tmp_path, **config):
    from engine.connectors import registry
    from engine.context import RunContext

    connector = registry.get("historian")
    assert connector is not None and connector.SinkConfig is not None
    historian = Historian(tmp_path / "historian.duckdb")
    ctx = RunContext(data_dir=tmp_path, historian=historian)
    return connector.make_sink(connector.SinkConfig.model_validate(config), ctx, "hist"), historian


def test_sink_commits_each_micro_batch_and_aborts_only_the_rest(tmp_path):
    from engine.store.ring_buffer import forget_ring_buffers, ring_buffers

    sink, historian = historian_sink(tmp_path)
    sink.open()
    sink.write(batch([("a", 1.0, 0, "good"), ("b", 2.0, 0, "good")]))
    sink.commit()
    sink.write(batch([("a", 3.0, 1, "good")]))
    sink.abort()
    store = TagHistorian(historian)
    assert store.raw("*").select("tag", "value").rows() == [("a", 1.0), ("b", 2.0)]
    assert store.last_values("a").get_column("value").to_list() == [1.0]
    live = ring_buffers(tmp_path)
    assert live.window("a")[1].tolist() == [1.0, 3.0]  # the live view shows writes before commit
    forget_ring_buffers(tmp_path)
    historian.close()


def test_sink_close_commits_and_applies_retention(tmp_path):
    sink, historian = historian_sink(
        tmp_path, retention=[{"pattern": "old.*", "keep": "1d"}], live_buffer=False
    )
    sink.open()
    sink.write(batch([("old.x", 1.0, 0, "good"), ("new.x", 1.0, 0, "good")]))  # T0 is long ago
    sink.write(batch([("new.x", 2.0, 1, "good")]).with_columns(pl.col("value").cast(pl.Float32)))
    sink.close()
    assert TagHistorian(historian).raw("*").select("tag", "value").rows() == [("new.x", 1.0), ("new.x", 2.0)]
    assert sink.describe_target() == "historian.duckdb:tags"
    historian.close()


def test_sink_names_a_missing_column_and_rolls_back(tmp_path):
    from engine.errors import ConnectorError

    sink, historian = historian_sink(tmp_path, live_buffer=False)
    sink.open()
    sink.write(batch([("a", 1.0, 0, "good")]))
    with pytest.raises(ConnectorError, match=r"historian\.duckdb:tags: column 'tag' is missing"):
        sink.write(pl.DataFrame({"timestamp": [T0], "value": [1.0]}))
    assert TagHistorian(historian).raw("*").height == 0
    historian.close()


def test_sink_config_rejects_bad_retention():
    from pydantic import ValidationError

    from engine.connectors.historian_connector import HistorianSinkConfig

    with pytest.raises(ValidationError, match="keep '30 days'"):
        HistorianSinkConfig.model_validate({"retention": [{"pattern": "*", "keep": "30 days"}]})
    with pytest.raises(ValidationError, match="bad regular expression"):
        HistorianSinkConfig.model_validate({"retention": [{"pattern": "re:[", "keep": "1d"}]})


def test_buckets_before_1970_floor_too(store):
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    builder = TagBatchBuilder("test")
    builder.add("old", 1.0, timestamp=epoch - timedelta(seconds=30))
    builder.add("old", 2.0, timestamp=epoch + timedelta(seconds=30))
    store.append(builder.take())
    buckets = store.query("old", bucket="1m", statistics=["avg"]).get_column("bucket").to_list()
    assert buckets == [epoch - timedelta(minutes=1), epoch]


# ---- the 1-minute rollup and the log of newest rows ---------------------------------------------

ALL_STATISTICS = ["avg", "min", "max", "first", "last", "sum", "count"]


def reference_all(frame: pl.DataFrame, every: str, include_bad: bool) -> pl.DataFrame:
    """Every statistic (first and sum too) computed by Polars alone; a sum of no values is null."""
    usable = pl.col("value").is_not_null()
    if not include_bad:
        usable &= pl.col("quality") != "bad"
    value = pl.col("value").filter(usable)
    return (
        frame.sort("timestamp")
        .group_by("tag", pl.col("timestamp").dt.truncate(every).alias("bucket"))
        .agg(
            value.mean().alias("avg"),
            value.min().alias("min"),
            value.max().alias("max"),
            value.first().alias("first"),
            value.last().alias("last"),
            pl.when(value.count() > 0).then(value.sum()).alias("sum"),
            value.count().cast(pl.Int64).alias("count"),
            (pl.col("quality") == "bad").sum().cast(pl.Int64).alias("bad_count"),
        )
        .sort("tag", "bucket")
    )


def assert_same(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-6)


timed_points = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c.x"]),
        st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
        st.integers(0, 25 * 60_000),  # milliseconds after T0: ~5 rows a minute, so edges cut near rows
        st.sampled_from(["good", "good", "uncertain", "bad"]),
    ),
    min_size=1,
    max_size=120,
    unique_by=lambda p: (p[0], p[2]),
)


def edge(data, rows) -> int | None:
    """A range edge (milliseconds after T0): open (None), on a minute, or just before or after a
    stored value (so that the partial minutes at the edges hold values more often than not)."""
    kind = data.draw(st.sampled_from(["open", "minute", "near a value", "near a value"]))
    if kind == "open":
        return None
    if kind == "minute":
        return data.draw(st.integers(0, 26)) * 60_000
    return data.draw(st.sampled_from(rows))[2] + data.draw(st.integers(-1_500, 1_500))


def ms_batch(rows) -> pl.DataFrame:
    builder = TagBatchBuilder("test")
    for tag, value, ms, quality in rows:
        builder.add(
            tag,
            value,
            timestamp=T0 + timedelta(milliseconds=ms),
            quality=quality,
            reason=None if quality == "good" else "comm_lost",
        )
    return builder.take()


@settings(max_examples=50, deadline=None)
@given(
    rows=timed_points,
    cuts=st.lists(st.integers(0, 120), min_size=1, max_size=4),
    every=st.sampled_from(["1m", "5m", "1h"]),
    data=st.data(),
    include_bad=st.booleans(),
    compact_after=st.integers(1, 60),
    shuffled=st.booleans(),
)
def test_rollup_buckets_equal_a_polars_reference(
    rows, cuts, every, data, include_bad, compact_after, shuffled
):
    """Whole-minute buckets from the rollup (appended in several batches, late rows included,
    compacted at random points) plus raw rows for ranges that cut through minutes."""
    frame = ms_batch(sorted(rows, key=lambda r: r[2]) if not shuffled else rows)
    historian = Historian(":memory:")
    store = TagHistorian(historian, compact_after=compact_after)
    bounds = sorted({0, frame.height, *(min(c, frame.height) for c in cuts)})
    for lo, hi in itertools.pairwise(bounds):
        store.append(frame.slice(lo, hi - lo))
    start_ms, end_ms = edge(data, rows), edge(data, rows)
    start = None if start_ms is None else T0 + timedelta(milliseconds=start_ms)
    end = None if end_ms is None else T0 + timedelta(milliseconds=end_ms)
    got = store.query("*", start, end, every, ALL_STATISTICS, include_bad)
    raw = store.query("*", start, end, every, ALL_STATISTICS, include_bad, use_rollup=False)
    historian.close()
    inside = frame
    if start is not None:
        inside = inside.filter(pl.col("timestamp") >= start)
    if end is not None:
        inside = inside.filter(pl.col("timestamp") < end)
    expected = reference_all(inside, every, include_bad)
    assert_same(got, expected)
    assert_same(raw, expected)


def test_partial_minutes_at_both_edges_come_from_raw_rows(store):
    store.append(ms_batch([("a", float(s), s * 1000, "good") for s in (10, 50, 70, 100, 130, 170)]))
    got = store.query("a", T0 + timedelta(seconds=40), T0 + timedelta(seconds=140), "1m", ["sum", "count"])
    assert got.select("bucket", "sum", "count").rows() == [
        (T0, 50.0, 1),  # 10 s is before the range
        (T0 + timedelta(minutes=1), 170.0, 2),  # a whole minute: from the rollup
        (T0 + timedelta(minutes=2), 130.0, 1),  # 170 s is after the range
    ]


def test_a_range_inside_one_minute_reads_raw_rows_only(store):
    store.append(
        ms_batch([("a", 1.0, 1_000, "good"), ("a", 2.0, 20_000, "good"), ("a", 3.0, 50_000, "good")])
    )
    got = store.query("a", T0 + timedelta(seconds=10), T0 + timedelta(seconds=40), "1m", ["sum", "count"])
    assert got.select("bucket", "sum", "count").rows() == [(T0, 2.0, 1)]


def test_late_rows_become_partial_rows_that_compaction_merges(tmp_path):
    historian = Historian(tmp_path / "h.duckdb")
    store = TagHistorian(historian, compact_after=10**9)
    store.append(batch([("a", 0.5, 250, "good")]))  # minute 4: the rollup now covers minutes 0-3
    for second in range(0, 180, 5):  # 36 late batches, each a partial row per tag
        store.append(batch([("a", float(second), second, "good"), ("b", 1.0, second, "bad")]))
    before = store.query(["a", "b"], bucket="1m", statistics=ALL_STATISTICS, include_bad=True)
    cur = store.cursor()
    assert cur.execute("SELECT count(*) FROM tag_minutes").fetchall()[0][0] == 72
    store.compact_rollup()
    assert cur.execute("SELECT count(*) FROM tag_minutes").fetchall()[0][0] == 6  # 2 tags x 3 minutes
    cur.close()
    after = store.query(["a", "b"], bucket="1m", statistics=ALL_STATISTICS, include_bad=True)
    assert_frame_equal(after, before)
    frame = store.raw(["a", "b"])
    assert_same(after, reference_all(frame, "1m", include_bad=True))
    historian.close()


def test_the_rollup_follows_the_newest_minute_but_never_passes_now(tmp_path):
    historian = Historian(tmp_path / "h.duckdb")
    store = TagHistorian(historian)
    store.append(batch([("a", 1.0, 0, "good"), ("a", 2.0, 200, "good")]))
    cur = store.cursor()
    assert cur.execute("SELECT rolled_up_to FROM tag_minutes_state").fetchall()[0][0] == _minute(T0) + 3
    future = datetime.now(UTC) + timedelta(days=400)  # a device clock running ahead
    store.append(
        batch([("a", 3.0, 0, "good")]).with_columns(
            pl.lit(future).cast(TAG_SCHEMA["timestamp"]).alias("timestamp")
        )
    )
    upto = cur.execute("SELECT rolled_up_to FROM tag_minutes_state").fetchall()[0][0]
    cur.close()
    assert upto <= _minute(datetime.now(UTC))
    assert store.query("a", bucket="1h", statistics=["count"]).get_column("count").to_list() == [2, 1]
    historian.close()


def _minute(moment: datetime) -> int:
    return int(moment.timestamp()) // 60


def test_retention_keeps_the_rollup_equal_to_the_rows_left(tmp_path):
    historian = Historian(tmp_path / "h.duckdb")
    store = TagHistorian(historian, retention=[{"pattern": "a", "keep": "1h"}])
    rows = [("a", float(i), i * 7, "good" if i % 5 else "bad") for i in range(1200)]  # 2 h 20 min
    rows += [("b", float(i), i * 7, "good") for i in range(1200)]
    store.append(batch(rows))
    now = T0 + timedelta(seconds=2 * 3600 + 25)  # the cutoff cuts through a minute
    assert store.apply_retention(now=now) > 0
    left = store.raw("*")
    assert left.filter(pl.col("tag") == "a").get_column("timestamp").min() >= now - timedelta(hours=1)
    for every in ("1m", "5m"):
        for include_bad in (False, True):
            got = store.query("*", bucket=every, statistics=ALL_STATISTICS, include_bad=include_bad)
            assert_same(got, reference_all(left, every, include_bad))
    historian.close()


def test_a_historian_without_a_rollup_gets_one_built_from_its_rows(tmp_path):
    historian = Historian(tmp_path / "h.duckdb")
    frame = batch([("a", float(i), i * 13, "good") for i in range(500)])
    TagHistorian(historian).append(frame)
    cur = historian.cursor()
    cur.execute("DROP TABLE tag_minutes")  # as a file written before the rollup existed
    cur.execute("DROP TABLE tag_minutes_state")
    cur.close()
    got = TagHistorian(historian).query("a", bucket="5m", statistics=ALL_STATISTICS)
    assert_same(got, reference_all(frame, "5m", False))
    historian.close()


def test_rows_without_a_timestamp_land_in_a_null_bucket_on_both_paths(store):
    frame = pl.concat(
        [
            batch([("a", 1.0, 0, "good"), ("a", 2.0, 61, "good")]),
            batch([("a", 5.0, 0, "good")]).with_columns(
                pl.lit(None, dtype=TAG_SCHEMA["timestamp"]).alias("timestamp")
            ),
        ]
    )
    store.append(frame)
    store.append(frame.tail(1))
    got = store.query("a", bucket="1m", statistics=["sum", "count"])
    assert got.select("bucket", "sum", "count").rows() == [
        (T0, 1.0, 1),
        (T0 + timedelta(minutes=1), 2.0, 1),
        (None, 10.0, 2),  # ORDER BY puts NULL last
    ]
    assert_frame_equal(got, store.query("a", bucket="1m", statistics=["sum", "count"], use_rollup=False))
    # a bounded range leaves them out, as `timestamp >= start` does
    assert store.query("a", start=T0, bucket="1m").height == 2


@pytest.mark.parametrize("last_every", [0.0, math.inf])
def test_last_values_through_the_kept_rows_and_the_table(tmp_path, last_every):
    """Written to `tag_last` at every commit (0) or only at the end (inf): the same answer."""
    historian = Historian(tmp_path / "h.duckdb")
    store = TagHistorian(historian)
    store.last_every = last_every
    store.append(batch([("a", 1.0, 10, "good"), ("b", 1.0, 10, "good")]))
    store.append(batch([("a", 2.0, 20, "good"), ("a", 3.0, 20, "uncertain")]))  # a tie: the later row
    store.append(batch([("a", 9.0, 15, "good"), ("b", None, 30, "bad")]))  # a: older, arrives late
    store.append(batch([("a", 4.0, 20, "good")]))  # a tie again, a later batch: it wins
    expected = [
        ("a", 4.0, "good", T0 + timedelta(seconds=20)),
        ("b", None, "bad", T0 + timedelta(seconds=30)),
    ]
    assert store.last_values().select("tag", "value", "quality", "timestamp").rows() == expected
    store.fold_last()
    assert store.last_values().select("tag", "value", "quality", "timestamp").rows() == expected
    cur = store.cursor()
    assert cur.execute("SELECT count(*) FROM tag_last_log").fetchall()[0][0] == 0
    cur.close()
    assert store.query("*").get_column("tag").unique().sort().to_list() == ["a", "b"]
    historian.close()
