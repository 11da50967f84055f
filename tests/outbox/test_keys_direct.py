"""Idempotency keys (property tests) and the direct delivery."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConnectorError
from engine.outbox.config import RemoteSinkConfig
from engine.outbox.keys import edge_id, set_edge_id, with_keys
from engine.outbox.sinks import DirectSink, OutboxSink, remote_sink
from tests.outbox.conftest import make_ctx, tags
from tests.outbox.upstream import FakeRemote

text = st.text(alphabet=st.sampled_from(list("ab/|\\N x")), max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.one_of(st.none(), text), st.integers(0, 10**12)), min_size=1, max_size=30, unique=True
    )
)
def test_tag_keys_are_stable_and_distinct(records):
    frame = pl.DataFrame(
        {
            "tag": [r[0] for r in records],
            "timestamp": pl.Series([r[1] for r in records], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        },
        schema={"tag": pl.String, "timestamp": pl.Datetime("us", "UTC")},
    )
    one = with_keys(frame, edge="e|1", pipeline="p/x", destination="d")["_key"].to_list()
    two = with_keys(frame.reverse(), edge="e|1", pipeline="p/x", destination="d")["_key"].to_list()
    assert one == list(reversed(two))  # a record's key depends on the record only
    assert len(set(one)) == len(one)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(text, st.one_of(st.none(), text)), min_size=1, max_size=30, unique=True))
def test_configured_key_columns_are_distinct(records):
    frame = pl.DataFrame(
        {"a": [r[0] for r in records], "b": [r[1] for r in records]}, schema={"a": pl.String, "b": pl.String}
    )
    keys = with_keys(frame, edge="e", pipeline="p", destination="d", key=["a", "b"])["_key"].to_list()
    assert len(set(keys)) == len(keys)


def test_sequence_keys_are_scoped_and_a_missing_key_column_says_so():
    frame = pl.DataFrame({"x": [1, 2]})
    keys = with_keys(frame, edge="e", pipeline="p", destination="d", first_seq=7, seq_scope="ab12")["_key"]
    assert keys.to_list() == ["e/p/d/seq:ab12:7", "e/p/d/seq:ab12:8"]
    with pytest.raises(ValueError, match="key column 'id' is not in the data"):
        with_keys(frame, edge="e", pipeline="p", destination="d", key=["id"])


def test_timestamp_keys_ignore_unit_and_zone():
    a = pl.DataFrame({"tag": ["x"], "timestamp": [datetime(2026, 1, 1, tzinfo=UTC)]}).with_columns(
        pl.col("timestamp").cast(pl.Datetime("ms", "Europe/Paris"))
    )
    b = pl.DataFrame({"tag": ["x"], "timestamp": [datetime(2026, 1, 1, tzinfo=UTC)]})
    ka = with_keys(a, edge="e", pipeline="p", destination="d")["_key"][0]
    kb = with_keys(b, edge="e", pipeline="p", destination="d")["_key"][0]
    assert ka == kb


def test_edge_id_is_stable_and_settable(tmp_path):
    first = edge_id(tmp_path)
    assert edge_id(tmp_path) == first
    set_edge_id(tmp_path, "substation-7")
    assert edge_id(tmp_path) == "substation-7"
    with pytest.raises(ValueError, match="edge id"):
        set_edge_id(tmp_path, "bad id/")


def test_direct_delivers_inside_the_commit(outbox, upstream):
    ctx = make_ctx(outbox, delivery="direct")
    sink = remote_sink(FakeRemote, RemoteSinkConfig(), ctx, "central")
    assert isinstance(sink, DirectSink)
    sink.open()
    temp = sink.temp
    sink.write(tags(100))
    sink.write(tags(100, start=100))
    assert upstream.count() == 0  # nothing is visible before the run commits
    sink.close()
    assert upstream.count() == 200 and not temp.exists()


def test_direct_fails_cleanly_when_the_upstream_is_down(outbox, upstream):
    upstream.down = True
    sink = remote_sink(FakeRemote, RemoteSinkConfig(delivery="direct"), make_ctx(outbox), "central")
    sink.open()
    temp = sink.temp
    sink.write(tags(10))
    with pytest.raises(ConnectorError, match=r"destination 'central'.*connection refused"):
        sink.close()
    assert not temp.exists()
    sink = remote_sink(FakeRemote, RemoteSinkConfig(delivery="direct"), make_ctx(outbox), "central")
    sink.open()
    temp = sink.temp
    sink.write(tags(10))
    sink.abort()
    assert not temp.exists() and upstream.count() == 0


def test_the_service_makes_store_and_forward_the_default(outbox, upstream):
    from engine.context import RunContext

    ctx = RunContext(pipeline="p", data_dir=outbox.data_dir, outbox=outbox)
    assert isinstance(remote_sink(FakeRemote, RemoteSinkConfig(), ctx, "c"), DirectSink)
    outbox.serving = True
    assert isinstance(remote_sink(FakeRemote, RemoteSinkConfig(), ctx, "c"), OutboxSink)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
            st.one_of(st.none(), text),
            st.sampled_from(["good", "bad", "uncertain"]),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_what_the_outbox_accepts_reads_back_as_it_was(tmp_path_factory, records):
    from engine.outbox.manager import OutboxManager
    from tests.outbox.upstream import FakeRemote as Remote

    manager = OutboxManager(tmp_path_factory.mktemp("rt"))
    manager.register = lambda *a, **k: None
    frame = tags(len(records)).with_columns(
        pl.Series("value", [r[0] for r in records], dtype=pl.Float64),
        pl.Series("value_text", [r[1] for r in records], dtype=pl.String),
        pl.Series("quality", [r[2] for r in records], dtype=pl.String),
    )
    sink = remote_sink(Remote, RemoteSinkConfig(), make_ctx(manager), "central")
    sink.open()
    half = len(records) // 2
    if half:
        sink.write(frame.head(half))  # staged, then accepted with the rest
    sink.write(frame.tail(len(records) - half))
    sink.close()
    store = manager.store("line1", "central")
    parts = [pl.from_arrow(b.table) for b in store.read(max_rows=10**6)]
    back = pl.concat(parts)
    assert back.drop("_key").equals(frame)
    assert back["_key"].n_unique() == len(records)
    manager.close()
