"""The tag historian: round trips, retention per tag group, bucketed queries against a Polars
reference, last values and the tag list."""

from __future__ import annotations

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
    """The same statistics computed by Polars alone."""
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
            value.last().alias("last"),
            value.count().cast(pl.Int64).alias("count"),
            (pl.col("quality") == "bad").sum().cast(pl.Int64).alias("bad_count"),
        )
        .sort("tag", "bucket")
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
