"""The `postgresql` destination as a pipeline uses it: through the connector registry and
engine/outbox (remote_sink): store_and_forward through the durable outbox and its forwarder, direct
inside the run's commit, an outage through tests/faultproxy.py, and a poison record quarantined
while the rest is delivered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from engine.connectors import registry
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.outbox.manager import OutboxManager
from engine.tags import TAG_SCHEMA
from tests.conftest import require_service
from tests.faultproxy import FaultProxy
from tests.net import closed_port
from tests.upstream.pg import count, drop, exists, sql, table_name
from tests.waiting import wait_for

pytestmark = pytest.mark.services
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def tags(n: int, start: int = 0, tag_count: int = 4) -> pl.DataFrame:
    """TAG_SCHEMA records, 1 ms apart from record `start` on, round-robin over tags t0..t3."""
    ks = list(range(start, start + n))
    return pl.DataFrame(
        {
            "timestamp": [T0 + timedelta(milliseconds=k) for k in ks],
            "server_timestamp": [None] * n,
            "tag": [f"t{k % tag_count}" for k in ks],
            "value": [float(k) for k in ks],
            "value_text": [None] * n,
            "quality": ["good"] * n,
            "reason": [None] * n,
            "source": ["sim"] * n,
            "received_at": [T0] * n,
        },
        schema=TAG_SCHEMA,
    )


@pytest.fixture
def table():
    require_service("postgresql")
    name = table_name()
    yield name
    drop(name)


@pytest.fixture
def manager(tmp_path):
    m = OutboxManager(tmp_path / "data")
    yield m
    m.close()


def sink(manager: OutboxManager, table: str, delivery: str, port: int = 5432, **extra):
    cls = registry.get("postgresql")
    assert cls is not None and cls.roles() == ["source", "destination"]
    config = cls.SinkConfig.model_validate(
        {"host": "127.0.0.1", "port": port, "database": "test", "table": table, "connect_timeout": 2,
         "statement_timeout_s": 5, **extra}
    )  # fmt: skip
    ctx = RunContext(pipeline="line1", data_dir=manager.data_dir, delivery_default=delivery, outbox=manager)
    return cls.make_sink(config, ctx, "central")


def commit(s, frame: pl.DataFrame) -> None:
    s.open()
    s.write(frame)
    s.close()


def values(table: str) -> list[float]:
    return [row[0] for row in sql(f'SELECT value FROM "{table}" ORDER BY value')]


def test_store_and_forward_delivers_every_record_once(manager, table):
    s = sink(manager, table, "store_and_forward")
    for i in range(5):
        commit(s, tags(400, start=i * 400))
    store = manager.store("line1", "central")
    wait_for(lambda: store.pending()[1] == 0, 30, what="outbox drained")
    assert values(table) == [float(k) for k in range(2000)]
    # the key is the outbox's: edge id / pipeline / destination / tag|source|time
    edge = sql(f"SELECT DISTINCT split_part(_key, '/', 1), split_part(_key, '/', 2) FROM \"{table}\"")
    assert len(edge) == 1 and edge[0][0] and edge[0][1] == "line1"


def test_direct_delivers_inside_the_run(manager, table):
    s = sink(manager, table, "direct")
    commit(s, tags(100))
    assert count(table) == 100
    commit(s, tags(100))  # the same run again: the same keys, one copy
    assert count(table) == 100


def test_direct_unreachable_fails_the_run_cleanly(manager, table):
    s = sink(manager, table, "direct", port=closed_port())
    s.open()
    s.write(tags(10))
    with pytest.raises(ConnectorError) as info:
        s.close()
    assert "\n" not in str(info.value) and "cannot connect" in str(info.value)
    assert not exists(table)


def test_outage_then_drain_exactly_once(manager, table):
    with FaultProxy("127.0.0.1", 5432) as proxy:
        proxy.refuse()
        s = sink(manager, table, "store_and_forward", port=proxy.port)
        for i in range(4):  # 1600 records pile up while the server cannot be reached
            commit(s, tags(400, start=i * 400))
        store = manager.store("line1", "central")
        wait_for(lambda: store.status()["link_state"] == "down", 20, what="link down")
        assert not exists(table)
        proxy.pass_through()
        wait_for(lambda: store.pending()[1] == 0, 60, what="backlog drained")
        commit(s, tags(8, start=100_000))  # live again
        wait_for(lambda: store.pending()[1] == 0, 30, what="live records delivered")
    assert values(table) == [float(k) for k in range(1600)] + [float(k) for k in range(100_000, 100_008)]


def test_poison_record_is_quarantined_and_the_rest_delivered(manager, table):
    sql(
        f'CREATE TABLE "{table}" ("timestamp" timestamptz, tag text, value double precision CHECK (value <> 13), '
        '_key text COLLATE "C" NOT NULL)'
    )
    s = sink(manager, table, "store_and_forward", max_tries=2)
    commit(s, tags(100).select("timestamp", "tag", "value"))
    store = manager.store("line1", "central")
    wait_for(lambda: store.pending()[1] == 0 and store.quarantine_list(), 60, what="drained, one quarantined")
    assert values(table) == [float(k) for k in range(100) if k != 13]
    quarantined = store.quarantine_list()
    assert sum(q["records"] for q in quarantined) == 1
    assert "check constraint" in str(quarantined)
