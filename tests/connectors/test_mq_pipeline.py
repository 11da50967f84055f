"""Message queue sources (issue 13) in a real real_time pipeline into the tag historian, against
the real RabbitMQ, Redis and NATS on 127.0.0.1: every good message lands once, bad ones go to the
reject store with their reason and never stop the source, and each message is acknowledged (where
the broker acks) once its micro-batch is committed. Destinations: a round trip through each."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import polars as pl
import pytest

from engine.connectors import registry
from engine.context import RunContext
from engine.runner import _context
from engine.spec.validate import validate
from engine.store.tag_historian import TAGS_TABLE
from engine.streaming import StreamRunner
from engine.workspace import Workspace
from tests.connectors.mq_brokers import ACKING, ALL, Broker, tag_bodies
from tests.waiting import wait_for

pytestmark = pytest.mark.services


@pytest.fixture(params=ALL)
def broker(request):
    b = Broker(request.param)
    yield b
    b.cleanup()


@pytest.fixture
def ws(tmp_path):
    with Workspace(tmp_path / "data") as workspace:
        yield workspace


def pipeline(broker: Broker, **source: object) -> dict:
    return {
        "name": "mq",
        "nodes": [
            {
                "id": "src",
                "kind": "source",
                "connector_type": broker.connector_type,
                "config": broker.source_config(**source),
            },
            {
                "id": "hist",
                "kind": "destination",
                "inputs": ["src"],
                "connector_type": "historian",
                "config": {},
            },
        ],
        "schedule": {"type": "real_time", "batch_size": 500, "max_latency_ms": 50},
    }


def start(ws, tmp_path, document) -> StreamRunner:
    compiled = validate(document)
    ctx = _context(compiled, ws, "run1", datetime.now(UTC), tmp_path, threading.Event(), dry_run=False)
    runner = StreamRunner(compiled, ctx)
    runner.start()
    return runner


def historian_values(ws) -> list[float]:
    rows = ws.historian.cursor().sql(f"SELECT value FROM {TAGS_TABLE} ORDER BY value").fetchall()
    return [r[0] for r in rows]


def test_messages_reach_the_historian_bad_ones_are_rejected_and_all_are_acked(broker, ws, tmp_path):
    broker.declare()
    runner = start(ws, tmp_path, pipeline(broker))
    try:
        source = runner.sources["src"]
        wait_for(lambda: source.state == "subscribed", what="the source subscribed")
        good = tag_bodies(300)
        # a list of records in one message, garbage, a scalar, and a time that is not one
        bodies = [
            *good[:100],
            b"not json {",
            b"42",
            b'{"tag": "x", "value": 1, "timestamp": "soon"}',
            *good[100:],
        ]
        broker.publish(bodies)
        wait_for(lambda: runner.stats()["rows_committed"] == 300, what="300 rows committed")
        wait_for(lambda: runner.stats()["rows_rejected"] == 3, what="3 rejects")
        if broker.kind in ACKING:
            wait_for(lambda: source.counters["acked"] == 303, what="every message acked")
            if broker.unacked() is not None:
                wait_for(lambda: broker.unacked() == 0, what="nothing pending on the broker")
    finally:
        runner.stop()
    assert runner.status == "warning"  # finished, with rejects to look at
    assert historian_values(ws) == [float(i) for i in range(300)]
    reasons = sorted(
        r[0]
        for r in ws.historian.cursor().sql("SELECT reason FROM _rejects WHERE node_id = 'src'").fetchall()
    )
    assert len(reasons) == 3
    assert any("not JSON" in r for r in reasons)
    assert any("not a JSON object or a list of objects" in r for r in reasons)
    assert any("field 'timestamp' is not a time" in r for r in reasons)


def test_a_list_of_records_in_one_message_is_many_rows(ws, tmp_path):
    broker = Broker("redis_streams")
    try:
        runner = start(ws, tmp_path, pipeline(broker))
        try:
            broker.publish([b"[" + b",".join(tag_bodies(50)) + b"]", b"[]"])
            wait_for(lambda: runner.stats()["rows_committed"] == 50, what="50 rows from one message")
            wait_for(lambda: runner.sources["src"].counters["acked"] == 2, what="both messages acked")
        finally:
            runner.stop()
        assert historian_values(ws) == [float(i) for i in range(50)]
    finally:
        broker.cleanup()


@pytest.mark.parametrize("kind", ACKING)
def test_destination_round_trip(kind):
    """What a destination publishes, the same connector's source reads back, record for record."""
    broker = Broker(kind)
    try:
        cls = registry.get(broker.connector_type)
        sink_config = cls.SinkConfig.model_validate(
            broker.sink_config(**({"create_stream": True} if kind == "nats_js" else {}))
        )
        target = cls.make_target(sink_config, RunContext(), "out")
        frame = pl.DataFrame(
            {
                "tag": [f"t{i % 4}" for i in range(200)],
                "value": [i * 0.5 for i in range(200)],
                "timestamp": [datetime(2026, 1, 1, tzinfo=UTC)] * 200,
                "_key": [f"k{i}" for i in range(200)],
            }
        )
        target.open()
        try:
            target.deliver(frame.to_arrow())
        finally:
            target.close()
        source_config = cls.SourceConfig.model_validate(broker.source_config())
        source = cls.make_source(source_config, RunContext(), "src")
        got = source.sample(seconds=30, limit=200)
        assert got.height == 200
        got = got.sort("value")
        assert got.get_column("_key").to_list() == sorted(
            frame.get_column("_key").to_list(), key=lambda k: int(k[1:])
        )
        assert got.get_column("value").to_list() == frame.get_column("value").to_list()
        assert got.get_column("timestamp").dtype == pl.Datetime("us", "UTC")
    finally:
        broker.cleanup()


def test_redis_destination_trims_to_maxlen():
    broker = Broker("redis_streams")
    try:
        cls = registry.get("redis_streams")
        target = cls.make_target(
            cls.SinkConfig.model_validate(broker.sink_config(maxlen=100)), RunContext(), "out"
        )
        frame = pl.DataFrame({"v": list(range(5000)), "_key": [str(i) for i in range(5000)]})
        target.deliver(frame.to_arrow())
        target.close()
        import redis

        length = redis.Redis().xlen(broker.id)
        assert 100 <= length < 5000  # approximate trimming keeps about maxlen
    finally:
        broker.cleanup()
